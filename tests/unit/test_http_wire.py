"""The call protocol as data: the request body (JCS, ``use_api`` past 4 MiB), and the ops of
both SDKs read the way each encodes them (inngest-py's ISO time in a ``Sleep``'s ``name``,
inngest-js's duration there; the event of a wait in ``name`` or ``opts.event``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jcs
import pytest

from tidings.engine.http_driver import step_url
from tidings.engine.http_wire import (
    MAX_PAUSE_MS,
    CallState,
    ProtocolError,
    invoke_of,
    parse_ops,
    private_transport,
    retry_after,
    sdk_event,
    sleep_until,
    streamed_distrust,
    unwrap_stream,
    wait_of,
)
from tidings.runs.model import StepRow
from tidings.signing import sign

NOW = 1_700_000_000_000


def row(step: str, output: object, status: str = "completed") -> StepRow:
    return StepRow(step=step, name=step, position=0, status=status, output=output, attempts=0,
                   started_at=None, ended_at=None)


def state(*rows: StepRow) -> CallState:
    event = {"id": "01H", "name": "tidings/function.failed", "data": None, "ts": NOW,
             "user": None, "source": "tidings"}
    return CallState.of(run_id="01RUN", attempt=1, retries=4, event=event,
                        events=[event], recorded=list(rows))


def test_the_body_is_canonical_and_carries_what_the_sdks_require() -> None:
    call = state(row("h1", {"data": "A"}), row("h2", None))
    body = call.body("step")
    decoded = json.loads(body)
    assert body == jcs.canonicalize(decoded)
    assert decoded["use_api"] is False
    assert decoded["version"] == 2
    assert decoded["steps"] == {"h1": {"data": "A"}, "h2": None}
    assert decoded["ctx"] == {"attempt": 1, "disable_immediate_execution": False,
                              "max_attempts": 5, "run_id": "01RUN", "step_id": "step",
                              "stack": {"current": 2, "stack": ["h1", "h2"]}, "use_api": False}
    assert "fn_id" not in decoded["ctx"]  # it would switch inngest-js 4 to checkpointing
    # Internal events go out under their Inngest names; data is an object, ts an integer.
    assert decoded["event"] == {"data": {}, "id": "01H", "name": "inngest/function.failed",
                                "ts": NOW, "user": {}}


def test_past_4_mib_the_sdk_is_told_to_fetch_the_state() -> None:
    call = state(row("h1", {"data": "x" * (4 * 1024 * 1024)}))
    decoded = json.loads(call.body("step"))
    assert decoded["use_api"] is True
    assert decoded["ctx"]["use_api"] is True
    assert decoded["steps"] == {}
    assert decoded["events"] == []
    assert decoded["ctx"]["stack"]["stack"] == ["h1"]


def test_step_url_replaces_step_id() -> None:
    url = "http://app/api/inngest?fnId=my-app-f&stepId=step"
    assert step_url(url, "abc") == "http://app/api/inngest?fnId=my-app-f&stepId=abc"
    assert step_url("http://app/x", "step") == "http://app/x?stepId=step"


def test_ops_come_as_a_list_or_one_object() -> None:
    op = {"id": "h", "op": "StepRun", "data": 1}
    assert parse_ops(json.dumps([op]).encode()) == [op]
    assert parse_ops(json.dumps(op).encode()) == [op]
    for bad in (b"{", b"[1]", b'[{"op": "StepRun"}]'):
        with pytest.raises(ProtocolError):
            parse_ops(bad)


def test_sleeps_as_each_sdk_writes_them() -> None:
    py = {"id": "h", "op": "Sleep", "name": "2023-11-14T22:13:30.000Z", "displayName": "nap"}
    assert sleep_until(py, NOW) == int(datetime(2023, 11, 14, 22, 13, 30,
                                                tzinfo=UTC).timestamp() * 1000)
    js = {"id": "h", "op": "Sleep", "name": "30s", "displayName": "nap"}
    assert sleep_until(js, NOW) == NOW + 30_000
    spec = {"id": "h", "op": "Sleep", "name": "nap", "opts": {"duration": "1h30m"}}
    assert sleep_until(spec, NOW) == NOW + 5_400_000
    assert sleep_until({"id": "h", "name": "9999d"}, NOW) == NOW + MAX_PAUSE_MS
    with pytest.raises(ProtocolError):
        sleep_until({"id": "h", "name": "soon"}, NOW)


def test_waits_and_invokes() -> None:
    py = {"id": "h", "op": "WaitForEvent", "name": "app/approved", "displayName": "approval",
          "opts": {"if": "event.data.id == async.data.id", "timeout": "1h"}}
    wait = wait_of(py, NOW)
    assert (wait.step, wait.name, wait.event, wait.condition, wait.until) == (
        "h", "approval", "app/approved", "event.data.id == async.data.id", NOW + 3_600_000)
    spec = {"id": "h", "op": "WaitForEvent", "name": "w", "opts": {"event": "app/x"}}
    assert wait_of(spec, NOW).event == "app/x"
    assert wait_of(spec, NOW).until == NOW  # no timeout: expires at once, as in Go

    invoke = invoke_of({"id": "h", "op": "InvokeFunction", "displayName": "call",
                        "opts": {"function_id": "other-app-fn", "timeout": "5m",
                                 "payload": {"data": {"x": 1}, "v": None}}}, NOW)
    assert (invoke.function, invoke.data, invoke.until) == ("other-app-fn", {"x": 1},
                                                            NOW + 300_000)
    with pytest.raises(ProtocolError):
        invoke_of({"id": "h", "opts": {}}, NOW)


def test_retry_after_and_streams() -> None:
    assert retry_after("120", NOW) == NOW + 120_000
    assert retry_after("2023-11-14T22:13:30.117Z", NOW) == 1_700_000_010_117
    assert retry_after("Tue, 14 Nov 2023 22:13:30 GMT", NOW) == 1_700_000_010_000
    assert retry_after("soon", NOW) is None
    envelope = {"status": 206, "headers": {"X-Inngest-SDK": "inngest-py:v0.5.19"},
                "body": json.dumps([{"id": "h", "op": "StepRun", "data": 1}])}
    status, headers, body = unwrap_stream(b"   " + json.dumps(envelope).encode())
    assert (status, headers["x-inngest-sdk"]) == (206, "inngest-py:v0.5.19")
    assert parse_ops(body) == [{"id": "h", "op": "StepRun", "data": 1}]


def test_sdk_event_keeps_v_and_meta() -> None:
    assert sdk_event({"id": "e", "name": "a/b", "data": {"k": 1}, "ts": 5, "v": "1"}) == {
        "data": {"k": 1}, "id": "e", "name": "a/b", "ts": 5, "user": {}, "v": "1"}
    # inngest-js reads ``ctx.sessions`` from ``event.meta.sessions``; no meta, no key.
    meta = {"sessions": {"user": "u-1"}}
    assert sdk_event({"id": "e", "name": "a/b", "ts": 5, "meta": meta, "context": {"c": 1}}) == {
        "data": {}, "id": "e", "name": "a/b", "ts": 5, "user": {}, "meta": meta}
    assert "meta" not in sdk_event({"id": "e", "name": "a/b", "ts": 5, "meta": None})


def test_an_invocation_carries_the_sessions_inngest_js_stamps_on_it() -> None:
    def op(payload: object) -> dict[str, object]:
        return {"id": "h", "op": "InvokeFunction", "displayName": "call",
                "opts": {"function_id": "app-child", "payload": payload}}

    stamped = invoke_of(op({"data": {}, "meta": {
        "sessions": {"org": None}, "propagated_sessions": {"user": "u-1", "org": "o-1"}}}), NOW)
    assert stamped.meta == {"sessions": {"user": "u-1"}}
    assert invoke_of(op({"data": {}}), NOW).meta is None
    with pytest.raises(ProtocolError, match=r"meta\.sessions: session .user. must be"):
        invoke_of(op({"meta": {"sessions": {"user": False}}}), NOW)


KEY = "signkey-prod-" + "ab" * 32
OTHER = "signkey-prod-" + "cd" * 32
LOCAL = "http://127.0.0.1:8000/api/inngest?fnId=f&stepId=step"


def test_a_streamed_answer_signed_inside_its_envelope_is_checked_there() -> None:
    """inngest-js: the envelope's headers sign the answer in it; the 201 itself is unsigned."""
    body = b'{"y":4}'
    inner = {"x-inngest-signature": sign(body, KEY)}
    assert streamed_distrust(LOCAL, {}, inner, body, [KEY], answered=0) is None
    assert streamed_distrust("http://10.0.0.7/api", {}, inner, body, [OTHER, KEY],
                             answered=0) is None
    assert streamed_distrust(LOCAL, {}, inner, b'{"y":5}', [KEY], answered=0) is not None
    assert streamed_distrust(LOCAL, {}, inner, body, [OTHER], answered=0) is not None
    # A signature inside that fails is not rescued by a good one outside.
    outer = {"x-inngest-signature": sign(b"null", KEY)}
    assert streamed_distrust(LOCAL, outer, {"x-inngest-signature": sign(body, OTHER)}, body,
                             [KEY], answered=0) is not None


def test_an_unsigned_stream_is_believed_only_over_a_transport_that_keeps_it_intact() -> None:
    """inngest-py 0.5 signs ``null`` when its 201 begins and nothing in the envelope: that
    proves the app holds the key, not what it streamed."""
    began = 1_700_000_000
    outer = {"x-inngest-signature": sign(b"null", KEY, began)}
    body = b'[{"id": "h", "op": "StepRun", "data": 1}]'
    for url in (LOCAL, "http://localhost:3000/api/inngest", "http://[::1]:3000/x",
                "https://app.example.com/api/inngest"):
        assert streamed_distrust(url, outer, {}, body, [KEY], answered=began + 2) is None, url
    why = streamed_distrust("http://10.0.0.7:8000/api/inngest", outer, {}, body, [KEY],
                            answered=began + 2)
    assert why is not None and "HTTPS" in why and "10.0.0.7" in why
    # The signature must be the app's, over what it signs, from when its answer began.
    for bad in ({}, {"x-inngest-signature": sign(b"null", OTHER, began)},
                {"x-inngest-signature": sign(body, KEY, began)}):
        assert streamed_distrust(LOCAL, bad, {}, body, [KEY], answered=began) is not None
    assert streamed_distrust(LOCAL, outer, {}, body, [KEY], answered=began + 3600) is not None
    # A long function streams for longer than the signature's allowed age: that is fine.
    assert streamed_distrust(LOCAL, outer, {}, body, [KEY], answered=began) is None


def test_private_transports() -> None:
    assert private_transport("https://10.0.0.7/api")
    assert private_transport("http://127.0.0.2:80/")
    assert private_transport("http://api.localhost/")
    assert not private_transport("http://192.168.1.5:3000/api/inngest")
    assert not private_transport("http://app.internal/api/inngest")
    assert not private_transport("http://localhost.evil.com/")
