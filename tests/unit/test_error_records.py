"""Errors as runs keep them: an SDK's object whole (``code``, ``stack: null``, ``data``, a
nested ``cause``, anything else), within limits; a native exception with its ``__cause__``
chain (cycles end) and ``__notes__``; and the ``function.failed`` shape Inngest gives them."""

from __future__ import annotations

import json

import msgspec
import pytest

from tidings.calls.error_records import (
    MALFORMED,
    MAX_BYTES,
    MAX_DEPTH,
    error_of,
    exception_record,
    lifecycle,
)
from tidings.engine.http_wire import ProtocolError, parse_ops
from tidings.errors import StepError


def test_an_sdk_error_is_kept_whole() -> None:
    sent = {"name": "Error", "message": "Oh no!", "stack": "Error: Oh no!\n    at a.ts:3",
            "__serialized": True, "code": "E_NO",
            "cause": {"name": "Error", "message": "This is the cause", "stack": "",
                      "__serialized": True, "cause": {"name": "TypeError", "message": "root"}},
            "data": {"retry": False}}
    assert error_of(sent) == sent
    timeout = {"code": "step_errored", "message": "Timed out waiting for invoked function to "
               "complete", "name": "InngestInvokeTimeoutError", "stack": None}
    assert error_of(timeout) == timeout  # stack: null stays null
    assert error_of({"code": "output_unserializable", "message": "m"}) == {
        "code": "output_unserializable", "message": "m", "name": "Error"}
    assert error_of({"error": "Could not find step"}) == {
        "error": "Could not find step", "name": "Error", "message": "Could not find step"}
    assert error_of("boom", "HTTPError") == {"name": "HTTPError", "message": "boom"}
    assert error_of(None) == {"name": "Error", "message": ""}
    assert error_of([1, 2]) == {"name": "Error", "message": "[1,2]"}


@pytest.mark.parametrize(("sent", "why"), [
    ({"name": {"not": "a string"}, "message": "m"}, "its name is not a string"),
    ({"name": "E", "message": ["m"]}, "its message is not a string"),
    ({"name": "E", "message": "huge", "stack": "x" * (MAX_BYTES + 1)}, "over the"),
])
def test_a_malformed_or_oversized_error_is_replaced_by_one_that_says_why(
        sent: dict[str, object], why: str) -> None:
    kept = error_of(sent)
    assert kept["name"] == MALFORMED
    assert why in kept["message"]
    assert len(msgspec.json.encode(kept)) < 4096


def test_a_cause_chain_too_deep_is_replaced_and_one_too_deep_to_read_is_a_protocol_error(
) -> None:
    def chain(depth: int) -> dict[str, object]:
        error: dict[str, object] = {"name": "Loop", "message": "again"}
        for _ in range(depth):
            error = {"name": "Loop", "message": "again", "cause": error}
        return error

    assert error_of(chain(MAX_DEPTH - 2))["name"] == "Loop"
    deep = error_of(chain(MAX_DEPTH + 5))
    assert deep["name"] == MALFORMED and "nested more than" in deep["message"]
    assert deep["message"].endswith("Its message: again")
    # Deeper than the decoder goes: the answer is unreadable, a protocol error (not a crash).
    nested = '{"name":"Loop","message":"again","cause":' * 100_000 + "null" + "}" * 100_000
    body = json.dumps([{"id": "h", "op": "StepError"}])[:-2] + ',"error":' + nested + "}]"
    with pytest.raises(ProtocolError, match="nested too deep"):
        parse_ops(body.encode())


def test_a_native_exception_keeps_its_causes_and_notes() -> None:
    try:
        try:
            raise KeyError("root")
        except KeyError as root:
            err = ValueError("top")
            err.add_note("while charging card 4")
            raise err from root
    except ValueError as caught:
        record = exception_record(caught)
    assert record["name"] == "ValueError" and record["message"] == "top"
    assert record["notes"] == ["while charging card 4"]
    assert record["cause"] == {"name": "KeyError", "message": "'root'"}
    assert "KeyError: 'root'" in record["stack"]  # the traceback shows the chain

    first, second = RuntimeError("a"), RuntimeError("b")
    first.__cause__, second.__cause__ = second, first  # a cycle
    cyclic = exception_record(first)
    assert cyclic["cause"] == {"name": "RuntimeError", "message": "b"}

    error = StepError.from_record(record)
    assert (error.name, error.message, error.cause) == ("ValueError", "top", record["cause"])
    assert error.record()["cause"] == record["cause"]


def test_the_function_failed_error_is_inngests_standard_error() -> None:
    sent = {"code": "unknown", "message": "intentional failure", "name": "MyError",
            "stack": "Traceback ..."}
    assert lifecycle(sent, "invalid status code: 500") == {
        "error": "invalid status code: 500", "message": "intentional failure",
        "name": "MyError", "stack": "Traceback ..."}
    assert lifecycle({"name": "E", "message": "m", "stack": None, "cause": None}) == {
        "error": "E: m", "name": "E", "message": "m", "cause": None}
