"""Logs: the standard ``logging`` module, with the ids that matter as fields.

Every record of a ``tidings.*`` logger may carry ``event_id``, ``run_id``, ``function``,
``app``, ``step`` and ``attempt``: given with ``extra=`` where a line is written, or bound for
a stretch of code with ``bound(...)`` — the executor binds a run's ids for the whole of its
call, so that every line written while the run is driven (by the drivers, the storage, the
SDK's ``ctx.logger``) names it without each call site passing them on. The binding lives in a
context variable, so each asyncio task (one per run in flight) has its own; the log record
factory copies it onto each record as the record is made (installed when this module is
imported), so every handler sees the fields, pytest's too.

``configure`` installs one handler on the ``tidings`` logger: ``text`` (one line, the fields
as ``key=value`` after the message) or ``json`` (one object per line, the fields as keys).
Secrets are never handed to a logger in the first place (``tests/acceptance/test_logs.py``
greps a whole run's logs for them); nothing here filters them.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]
FIELDS = ("event_id", "run_id", "function", "app", "step", "attempt")
_bound: ContextVar[Mapping[str, Any]] = ContextVar(
    "tidings_log_fields", default=MappingProxyType({}))
# What every LogRecord has: anything else on a record came with ``extra=`` and is a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName", "color_message"}  # uvicorn's own, with ANSI colours


def bind(**fields: Any) -> None:
    """Add ``fields`` to every record written from here on in this task (``bound`` undoes
    it at the end of a block; a task's bindings end with the task)."""
    _bound.set({**_bound.get(), **{k: v for k, v in fields.items() if v is not None}})


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """``fields`` on every record written inside the block (in this task)."""
    token = _bound.set({**_bound.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _bound.reset(token)


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The fields of a record: the ids bound when it was made, and what ``extra=`` gave
    (which wins)."""
    found = dict(getattr(record, "_tidings_bound", ()))
    found.update((k, v) for k, v in vars(record).items()
                 if k not in _STANDARD and not k.startswith("_"))
    return found


def _with_bound_fields(make: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        bound_now = _bound.get()
        if bound_now:
            # Apart from the record's attributes: ``extra=`` may name the same keys (logging
            # refuses to overwrite an attribute), and wins in ``fields_of``.
            record._tidings_bound = bound_now
        return record

    factory.tidings_bound = True  # type: ignore[attr-defined]
    return factory


if not getattr(logging.getLogRecordFactory(), "tidings_bound", False):
    logging.setLogRecordFactory(_with_bound_fields(logging.getLogRecordFactory()))


def _time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"
                                                                    ).replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, the fields,
    and ``exception`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": _time(record), "level": record.levelname,
                                "logger": record.name, "message": record.getMessage()}
        for key, value in fields_of(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message  key=value …``, the traceback on the lines after."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{_time(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        found = fields_of(record)
        if found:
            text += "  " + " ".join(f"{k}={_shown(v)}" for k, v in found.items())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (not text or any(c in text for c in ' "=\n')) else text


_HANDLER_NAME = "tidings"
configured: tuple[LogFormat, str] = ("text", "INFO")  # what ``configure`` set last


def configure(*, format: LogFormat = "text", level: str | int = "INFO",
              stream: TextIO | None = None) -> logging.Handler:
    """Send the records of the ``tidings`` loggers from ``level`` up, and uvicorn's warnings
    and errors (all of its records at DEBUG), to ``stream`` (stderr) in ``format``; called
    once by each command that runs a process. Calling it again replaces what it installed."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    number = level if isinstance(level, int) else logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"not a log level: {level!r}")
    global configured
    configured = (format, logging.getLevelName(number))
    for name, at in (("tidings", number), ("uvicorn.error", max(number, logging.WARNING)
                                           if number > logging.DEBUG else number)):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(at)
    logging.getLogger("uvicorn.error").propagate = False
    return handler
