"""An error as a run keeps it: what an SDK reported, or what a native function raised.

Inngest keeps the SDK's error object as it came — ``name``, ``message``, ``stack`` (``null``
included), ``code``, ``data``, a nested ``cause`` and whatever else — and gives it back to the
function on replay, where inngest-js rebuilds ``err.cause`` from it. Tidings does the same,
within limits: an object over ``MAX_BYTES`` once encoded, nested deeper than ``MAX_DEPTH``, or
whose ``name``/``message`` are not strings is not kept; a ``MalformedError`` saying why (and
the start of the message, when there is one) stands in for it, so the step or run still fails
with an error a reader can act on, never a 5xx or a run stuck in Running.

A native function's exception becomes ``{"name", "message", "stack"}`` plus ``cause`` (its
``__cause__``, the same shape, at most ``MAX_CAUSES`` deep and never twice the same exception,
so a cycle ends) and ``notes`` (its ``__notes__``).

``lifecycle`` is the error of a ``function.failed`` / ``function.finished`` event, the shape
Inngest's executor gives it (``state.StandardError``): ``error`` (``"invalid status code: 500"``
when the app answered so), ``name``, ``message``, ``stack`` when it is a non-empty string, and
``cause`` when there is one.
"""

from __future__ import annotations

import traceback
from typing import Any

import msgspec

ErrorJSON = dict[str, Any]

MAX_BYTES = 256 * 1024
MAX_DEPTH = 32  # nesting of one error object, its causes included
MAX_CAUSES = 16  # of a native exception
MALFORMED = "MalformedError"
_QUOTED = 1_000  # characters of a refused error's message kept in the stand-in


def error_of(value: Any, default_name: str = "Error") -> ErrorJSON:
    """An SDK's error object as a run keeps it (a bare value becomes its message)."""
    if not isinstance(value, dict):
        text = "" if value is None else value if isinstance(value, str) else _encoded(value)
        return {"name": default_name, "message": text[:2000]}
    name, message = value.get("name"), value.get("message")
    if message is None and isinstance(value.get("error"), str):
        message = value["error"]  # ``{"error": "..."}`` bodies of older SDKs and proxies
    if name is not None and not isinstance(name, str):
        return _malformed("its name is not a string", message)
    if message is not None and not isinstance(message, str):
        return _malformed("its message is not a string", None)
    if _deeper_than(value, MAX_DEPTH):
        return _malformed(f"it is nested more than {MAX_DEPTH} levels deep (a cause chain "
                          "that long, or one that repeats)", message)
    size = len(msgspec.json.encode(value))
    if size > MAX_BYTES:
        return _malformed(f"it is {size} bytes, over the {MAX_BYTES} an error may have",
                          message)
    return {**value, "name": name or default_name, "message": message or ""}


def exception_record(exc: BaseException) -> ErrorJSON:
    """What a native function's exception leaves on the run: the error of every step attempt
    and of a failed run."""
    record = _one(exc, with_stack=True)
    link, seen = record, {id(exc)}
    cause = exc.__cause__
    while cause is not None and id(cause) not in seen and len(seen) <= MAX_CAUSES:
        seen.add(id(cause))
        link["cause"] = _one(cause, with_stack=False)
        link, cause = link["cause"], cause.__cause__
    encoded = len(msgspec.json.encode(record, enc_hook=str))
    if encoded > MAX_BYTES:
        return _malformed(f"it is {encoded} bytes, over the {MAX_BYTES} an error may have",
                          record["message"], name=record["name"])
    return record


def lifecycle(error: ErrorJSON, reason: str | None = None) -> ErrorJSON:
    """The ``error`` of a run's ``function.failed`` / ``function.finished`` event."""
    name = error.get("name") if isinstance(error.get("name"), str) else "Error"
    message = error.get("message") if isinstance(error.get("message"), str) else ""
    out: ErrorJSON = {"error": reason or f"{name}: {message}", "name": name or "Error",
                      "message": message}
    stack = error.get("stack")
    if isinstance(stack, str) and stack:
        out["stack"] = stack
    if "cause" in error:
        out["cause"] = error["cause"]
    return out


def _one(exc: BaseException, *, with_stack: bool) -> ErrorJSON:
    # The first record's stack already shows every cause (``format_exception`` follows them).
    out: ErrorJSON = {"name": type(exc).__name__, "message": str(exc)}
    if with_stack:
        out["stack"] = "".join(traceback.format_exception(exc))
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list) and notes:
        out["notes"] = [str(note) for note in notes]
    return out


def _malformed(why: str, message: Any, *, name: str = MALFORMED) -> ErrorJSON:
    text = f"the error reported was not kept: {why}"
    if isinstance(message, str) and message:
        quoted = message[:_QUOTED] + ("…" if len(message) > _QUOTED else "")
        text += f". Its message: {quoted}"
    return {"name": name if len(name) <= 200 else MALFORMED, "message": text}


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether JSON ``value`` nests containers more than ``limit`` deep (without recursing)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        pending.extend((child, depth + 1) for child in children
                       if isinstance(child, dict | list))
    return False


def _encoded(value: Any) -> str:
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError, RecursionError):
        return repr(value)[:2000]
