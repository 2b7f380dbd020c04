"""The calls of one run, against a scripted SDK app (httpx ``MockTransport``): a function that
reports a step is called again at once with the step memoized, until it returns or pauses — at
most ``MAX_CALLS`` times under one lease — and ``ctx.attempt`` is a retried step's until that
step succeeds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from tidings.calls.error_records import MALFORMED
from tidings.calls.outcomes import Continue, RunDone, RunFailed
from tidings.connect.hub import function_url
from tidings.engine.http_client import Answer
from tidings.engine.http_driver import HttpDriver
from tidings.engine.http_wire import MAX_REQUEST_BYTES
from tidings.functions.model import FunctionRow
from tidings.keys import EnvSigningKeys
from tidings.observe.logs import fields_of
from tidings.runs.model import Run, StepRow

SDK = {"x-inngest-sdk": "py:v0.5.19"}


class Host:
    """The executor's side of a call, as ``engine/host.CallHost`` behaves towards the driver."""

    def __init__(self, attempts: dict[str, int] | None = None, run_attempt: int = 0) -> None:
        self.blockers: list[Any] = []
        self.retry = None
        self.lost = False
        self.records: list[tuple[str, bytes]] = []
        self._attempts = dict(attempts or {})
        self._run_attempt = run_attempt
        self.errors: list[tuple[str, dict[str, Any], bool]] = []
        self.failed_attempts: list[int | None] = []
        self.flushes: list[int] = []

    @property
    def recorded(self) -> list[StepRow]:
        return []

    @property
    def attempts(self) -> dict[str, int]:
        return self._attempts

    @property
    def attempt(self) -> int:
        return max(self._attempts.values(),
                   default=0 if self.records or self.blockers else self._run_attempt)

    def now(self) -> int:
        return 1_700_000_000_000

    def block(self, blocker: Any) -> None:
        self.blockers.append(blocker)

    async def completed(self, step: str, name: str, output: bytes,
                        began: int | None = None, *, kind: str = "run") -> None:
        self._attempts.pop(step, None)
        self.records.append((step, output))

    async def errored(self, step: str, name: str, error: dict[str, Any],
                      began: int | None = None, *, final: bool = False,
                      kind: str = "run", attempt: int | None = None) -> bool:
        self.errors.append((step, error, final))
        self.failed_attempts.append(attempt)
        return final

    def flush_soon(self) -> None:
        pass

    async def flushed(self) -> bool:
        self.flushes.append(len(self.records))  # every record so far is now "written"
        return True


class App:
    """An SDK app whose function runs ``steps`` steps, then returns how many it saw."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.calls: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.calls.append(body)
        done = len(body["steps"])
        if done < self.steps:
            op = {"op": "StepRun", "id": f"s{done}", "displayName": f"step {done}",
                  "data": done}
            return httpx.Response(206, headers=SDK, json=[op])
        return httpx.Response(200, headers=SDK, json={"steps": done})


def driver(app: App) -> HttpDriver:
    return HttpDriver(None, dev=True,  # type: ignore[arg-type]
                      transport=httpx.MockTransport(app))


FN = FunctionRow(id="fn1", env_id="env1", app_id="app1", slug="app-f", name="f", queue="http",
                 url="http://app/api/inngest?fnId=app-f", config={"retries": 3},
                 archived_at=None)


def run(attempt: int = 0) -> Run:
    return Run(id="01RUN", env_id="env1", function_id="fn1", queue="http", event_id="01EV",
               event_ids=None, status="Running", attempt=attempt, due_at=0, lease_owner="w",
               lease_until=1, lease_token=1, created_at=0, started_at=0, ended_at=None,
               progress_at=0, output=None, error=None, parent_run_id=None, parent_step=None,
               rerun_of=None, replay_id=None)


EVENT = {"id": "01EV", "name": "app/go", "data": {}, "ts": 0}


async def test_a_function_that_reports_steps_is_called_again_at_once() -> None:
    app, host = App(steps=3), Host()
    outcome = await driver(app).call(FN, host, run=run(), event=EVENT, events=[EVENT])
    assert outcome == RunDone(b'{"steps":3}')
    assert [step for step, _ in host.records] == ["s0", "s1", "s2"]
    assert [len(call["steps"]) for call in app.calls] == [0, 1, 2, 3]
    assert app.calls[-1]["steps"] == {"s0": {"data": 0}, "s1": {"data": 1}, "s2": {"data": 2}}
    assert app.calls[-1]["ctx"]["stack"] == {"current": 3, "stack": ["s0", "s1", "s2"]}


async def test_a_long_function_goes_back_to_the_queue_after_max_calls() -> None:
    app, host = App(steps=10_000), Host()
    outcome = await driver(app).call(FN, host, run=run(), event=EVENT, events=[EVENT])
    assert outcome == Continue()
    assert len(app.calls) == len(host.records) == HttpDriver.MAX_CALLS


async def test_the_attempt_is_a_retried_steps_until_it_succeeds() -> None:
    """Then the run has moved on: the count of function-level failures starts again."""
    app, host = App(steps=2), Host(attempts={"s0": 2}, run_attempt=1)
    await driver(app).call(FN, host, run=run(attempt=1), event=EVENT, events=[EVENT])
    assert [call["ctx"]["attempt"] for call in app.calls] == [2, 0, 0]


class BigApp(App):
    """Each step returns 1 MiB, so from the fifth call on the state passes 4 MiB (``use_api``):
    the SDK then reads the steps through the API, and each call notes how many it could see
    there (what the host had written when it was made)."""

    def __init__(self, steps: int, host: Host) -> None:
        super().__init__(steps)
        self.host = host
        self.visible: list[tuple[bool, int]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        use_api = body["use_api"]
        done = body["ctx"]["stack"]["current"]
        seen = self.host.flushes[-1] if use_api and self.host.flushes else len(body["steps"])
        self.visible.append((use_api, seen))
        if done < self.steps:
            op = {"op": "StepRun", "id": f"s{done}", "data": "x" * (1 << 20)}
            return httpx.Response(206, headers=SDK, json=[op])
        return httpx.Response(200, headers=SDK, json=done)


async def test_a_call_that_sends_the_sdk_to_the_api_first_writes_every_step_it_recorded() -> None:
    host = Host()
    app = BigApp(steps=8, host=host)
    outcome = await driver(app).call(FN, host, run=run(), event=EVENT, events=[EVENT])
    assert outcome == RunDone(b"8")
    # With four steps recorded the state passes 4 MiB.
    assert MAX_REQUEST_BYTES == 4 << 20
    assert [use_api for use_api, _ in app.visible] == [False] * 4 + [True] * 5
    # Every call saw all the steps recorded before it, wherever it read them.
    assert [seen for _, seen in app.visible] == list(range(9))


def failing_app(error: object) -> App:
    class Failing(App):
        def __call__(self, request: httpx.Request) -> httpx.Response:
            self.calls.append(json.loads(request.content))
            if len(self.calls) == 1:
                op = {"op": "StepError", "id": "s0", "displayName": "charge", "error": error}
                return httpx.Response(206, headers=SDK, json=[op])
            return httpx.Response(200, headers=SDK, json=None)

    return Failing(steps=0)


async def test_a_step_error_is_recorded_whole_or_replaced_by_one_that_says_why() -> None:
    sent = {"name": "Error", "message": "Oh no!", "stack": "at a.ts", "__serialized": True,
            "cause": {"name": "Error", "message": "This is the cause", "cause": None}}
    host = Host()
    await driver(failing_app(sent)).call(FN, host, run=run(), event=EVENT, events=[EVENT])
    assert host.errors == [("s0", sent, False)]

    host = Host()
    huge = {"name": "Error", "message": "big", "data": "x" * 300_000}
    await driver(failing_app(huge)).call(FN, host, run=run(), event=EVENT, events=[EVENT])
    [(_, kept, _)] = host.errors
    assert kept["name"] == MALFORMED and "over the" in kept["message"]


async def test_a_step_error_counts_the_attempt_its_call_made() -> None:
    """Inngest's queue item attempt: a step that fails on its first try right after the
    function failed at the same point has used one attempt more."""
    app = failing_app({"name": "Error", "message": "m"})
    host = Host(run_attempt=1)
    await driver(app).call(FN, host, run=run(attempt=1), event=EVENT, events=[EVENT])
    assert app.calls[0]["ctx"]["attempt"] == 1
    assert host.failed_attempts == [1]


async def test_an_answer_nested_too_deep_to_read_fails_the_call_with_a_clear_error() -> None:
    deep = "[" * 50_000 + "]" * 50_000
    for status, body in ((206, f'[{{"op":"StepError","id":"s0","error":{deep}}}]'),
                         (500, deep), (200, deep)):
        app = App(steps=0)
        transport = httpx.MockTransport(lambda request, s=status, b=body: httpx.Response(
            s, headers=SDK, content=b.encode()))
        outcome = await HttpDriver(None, dev=True,  # type: ignore[arg-type]
                                   transport=transport).call(FN, Host(), run=run(),
                                                             event=EVENT, events=[EVENT])
        assert isinstance(outcome, RunFailed), (status, outcome)
        assert app.calls == []
        if status != 500:
            assert outcome.error["name"] == "ProtocolError"
            assert "nested too deep" in outcome.error["message"]


class GroupApp:
    """An SDK app whose function runs branches of steps in parallel (each branch's steps in
    turn), then one step ``after``, then returns; it answers as inngest-py does: new steps of
    the group planned, a lone step run at once unless ``disable_immediate_execution``."""

    def __init__(self, branches: list[list[str]], *, race: bool = False,
                 slow: frozenset[str] = frozenset()) -> None:
        self.branches, self.race, self.slow = branches, race, slow
        self.calls: list[tuple[str, bool]] = []  # (stepId, disable_immediate_execution)
        self.ran: list[str] = []

    def _op(self, step: str, kind: str, **extra: Any) -> dict[str, Any]:
        opts = {"parallelMode": "race"} if self.race else None
        return {"op": kind, "id": step, "displayName": step, "opts": opts, **extra}

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        target = request.url.params["stepId"]
        self.calls.append((target, body["ctx"]["disable_immediate_execution"]))
        done = body["steps"]
        if target != "step":
            if target in self.slow:
                await asyncio.sleep(0.05)
            self.ran.append(target)
            return httpx.Response(206, headers=SDK, json=[self._op(target, "StepRun",
                                                                   data=target)])
        pending = [next(s for s in branch if s not in done) for branch in self.branches
                   if any(s not in done for s in branch)]
        if pending:
            return httpx.Response(206, headers=SDK,
                                  json=[self._op(s, "StepPlanned") for s in pending])
        if "after" not in done:
            if body["ctx"]["disable_immediate_execution"]:
                return httpx.Response(206, headers=SDK, json=[self._op("after", "StepPlanned")])
            self.ran.append("after")
            return httpx.Response(206, headers=SDK, json=[{"op": "StepRun", "id": "after",
                                                           "data": "after"}])
        return httpx.Response(200, headers=SDK, json=sorted(done))


async def test_after_a_parallel_group_the_next_lone_step_runs_where_it_is_found() -> None:
    app, host = GroupApp([["p1"], ["p2"]]), Host()
    outcome = await driver(app).call(FN, host, run=run(), event=EVENT,  # type: ignore[arg-type]
                                     events=[EVENT])
    assert outcome == RunDone(b'["after","p1","p2"]')
    # The group is planned, its steps run on requests of their own (those alone say
    # disable_immediate_execution, as Inngest sets it), "after" runs in the request that finds
    # it, and the last request returns: five requests.
    assert app.calls[0] == ("step", False)
    assert sorted(app.calls[1:3]) == [("p1", True), ("p2", True)]
    assert app.calls[3:] == [("step", False), ("step", False)]
    assert [step for step, _ in host.records][2:] == ["after"]


async def test_in_a_race_group_each_branch_goes_on_at_its_own_pace() -> None:
    app = GroupApp([["a1", "a2"], ["b1", "b2"]], race=True, slow=frozenset({"b1", "b2"}))
    host = Host()
    outcome = await driver(app).call(FN, host, run=run(), event=EVENT,  # type: ignore[arg-type]
                                     events=[EVENT])
    assert outcome == RunDone(b'["a1","a2","after","b1","b2"]')
    assert app.ran == ["a1", "a2", "b1", "b2", "after"]
    targeted = [step for step, _ in app.calls if step != "step"]
    assert sorted(targeted) == ["a1", "a2", "b1", "b2"]  # b1 was planned thrice, run once


async def test_an_answer_that_is_not_the_protocol_fails_the_attempt_loudly(
        caplog: pytest.LogCaptureFixture) -> None:
    answers = [httpx.Response(206, headers=SDK, content=b"<html>not ops</html>"),
               httpx.Response(206, headers=SDK, json=[{"op": "StepRun"}]),
               httpx.Response(200, content=b"hello")]
    for answer in answers:
        host = Host()
        failed = await HttpDriver(None, dev=True,  # type: ignore[arg-type]
                                  transport=httpx.MockTransport(lambda r, a=answer: a)).call(
            FN, host, run=run(), event=EVENT, events=[EVENT])
        assert isinstance(failed, RunFailed) and failed.retriable
        assert failed.error["name"] in ("ProtocolError", "NotAnSDK")
        assert (f"run 01RUN: the call to app-f failed (status {answer.status_code}), "
                f"attempt 1: {failed.error['name']}") in caplog.text
        [record] = [r for r in caplog.records if r.name == "tidings.engine.http"]
        assert fields_of(record)["answer"] == answer.content.decode()  # what was wrong
        caplog.clear()


class Keys:
    """``SigningKeys`` with one environment's key."""

    async def of_env(self, env_id: str) -> EnvSigningKeys:
        return EnvSigningKeys(env_id, "signkey-prod-" + "ab" * 32, None, branch="b1")


class Hub:
    """A Connect hub that answers every call at once, keeping the headers it was given."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        self.headers.append(dict(headers))
        return Answer(200, SDK, b'"ok"', authenticated=True)

    async def aclose(self) -> None:
        pass


async def test_connect_calls_are_not_signed_and_http_calls_are() -> None:
    """A Connect worker's socket is authenticated and the hub reads no signature: signing each
    call's body would be CPU spent for nothing. Calls over HTTP are still signed."""
    hub, sent = Hub(), list[httpx.Headers]()

    def app(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers)
        return httpx.Response(200, headers=SDK, json="ok")

    http = HttpDriver(Keys(), dev=False,  # type: ignore[arg-type]
                      transport=httpx.MockTransport(app), connect=hub)
    connected = FunctionRow(id="fn2", env_id="env1", app_id="app1", slug="app-g", name="g",
                            queue="http", url=function_url("env1", "app1", "app-g"),
                            config={}, archived_at=None)
    assert await http.call(connected, Host(), run=run(), event=EVENT,
                           events=[EVENT]) == RunDone(b'"ok"')
    assert [h.get("x-inngest-signature") for h in hub.headers] == [None]
    await http.call(FN, Host(), run=run(), event=EVENT, events=[EVENT])
    assert [h["x-inngest-signature"][:2] for h in sent] == ["t="]
