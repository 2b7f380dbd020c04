"""Logs: the ids as fields in both formats, bindings per task, one handler however often
logging is set up, and an access log that masks event keys."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest

from tidings.core import Core
from tidings.observe.logs import JsonFormatter, TextFormatter, bind, bound, configure, fields_of
from tidings.server import create_app
from tidings.settings import Observe


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """``configure`` writing to a buffer; the ``tidings`` loggers as they were afterwards."""
    buffer = io.StringIO()
    loggers = [logging.getLogger(name) for name in ("tidings", "uvicorn.error")]
    before = [(lg.level, list(lg.handlers), lg.propagate) for lg in loggers]
    yield buffer
    for lg, (level, handlers, propagate) in zip(loggers, before, strict=True):
        lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.propagate = propagate


def _record(message: str = "run %s failed", *args: object, **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("tidings.test")
    return logger.makeRecord(logger.name, logging.WARNING, __file__, 1, message,
                             args or ("R1",), None, extra=extra or None)


def test_json_lines_carry_the_bound_ids_and_the_extra_fields() -> None:
    with bound(run_id="R1", function="app-f", app="app", attempt=2):
        record = _record(status=502, run_id="R1")
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "run R1 failed"
    assert line["level"] == "WARNING" and line["logger"] == "tidings.test"
    assert line["time"].endswith("Z")
    assert {k: line[k] for k in ("run_id", "function", "app", "attempt", "status")} == {
        "run_id": "R1", "function": "app-f", "app": "app", "attempt": 2, "status": 502}


def test_text_lines_show_the_fields_after_the_message() -> None:
    with bound(run_id="R1", step="charge card"):
        record = _record(reason='a "quoted"\nvalue')
    text = TextFormatter().format(record)
    assert text.split(" ", 1)[1].startswith("WARNING tidings.test: run R1 failed  ")
    assert 'run_id=R1 step="charge card" reason="a \\"quoted\\"\\nvalue"' in text
    assert "\n" not in text  # one line, whatever the values hold


def test_an_exception_goes_with_its_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logger = logging.getLogger("tidings.test")
        record = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "failed", (),
                                   __import__("sys").exc_info())
    line = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in line["exception"]
    assert "ValueError: boom" in TextFormatter().format(record)


async def test_each_task_has_its_own_bindings() -> None:
    records: dict[str, logging.LogRecord] = {}

    async def drive(run_id: str) -> None:
        bind(run_id=run_id)
        await asyncio.sleep(0)
        records[run_id] = _record()

    await asyncio.gather(drive("A"), drive("B"))
    assert fields_of(records["A"])["run_id"] == "A"
    assert fields_of(records["B"])["run_id"] == "B"
    assert "run_id" not in fields_of(_record())  # nothing leaked into this task


def test_configure_installs_one_handler_however_often_it_is_called(
        stream: io.StringIO) -> None:
    configure(format="text", level="warning", stream=io.StringIO())
    configure(format="json", level="info", stream=stream)
    logger = logging.getLogger("tidings")
    assert len([h for h in logger.handlers if h.get_name() == "tidings"]) == 1
    logging.getLogger("tidings.engine").debug("not shown")
    logging.getLogger("tidings.engine").info("shown", extra={"run_id": "R9"})
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["run_id"] == "R9"
    with pytest.raises(ValueError, match="not a log level"):
        configure(level="loud", stream=stream)


async def test_the_access_log_is_off_by_default_and_masks_event_keys(
        core: Core, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tidings.access")
    quiet = create_app(core.settings, core)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=quiet),
                                 base_url="http://tidings") as http:
        await http.get("/health")
    assert not [r for r in caplog.records if r.name == "tidings.access"]

    loud = create_app(replace(core.settings, observe=Observe(access_log=True)), core)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=loud),
                                 base_url="http://tidings") as http:
        await http.post("/e/tdk_secret_event_key", json={"name": "x"})
        await http.get("/v1/events?limit=5", headers={"authorization": "Bearer tda_secret"})
    lines = [r for r in caplog.records if r.name == "tidings.access"]
    assert [r.getMessage().rsplit(" ", 2)[0] for r in lines] == [
        "POST /e/*** 200", "GET /v1/events 200"]
    assert fields_of(lines[0])["status"] == 200 and fields_of(lines[0])["method"] == "POST"
    assert "secret" not in caplog.text
