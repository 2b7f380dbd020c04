"""The calls of one run, against a scripted SDK app (httpx ``MockTransport``): a function that
reports a step is called again at once with the step memoized, until it returns or pauses — at
most ``MAX_CALLS`` times under one lease — and ``ctx.attempt`` is a retried step's until that
step succeeds."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tidings.engine.http_driver import HttpDriver
from tidings.engine.outcomes import Continue, RunDone
from tidings.runs.model import FunctionRow, Run, StepRow

SDK = {"x-inngest-sdk": "py:v0.5.19"}


class Host:
    """The executor's side of a call, as ``executor._Host`` behaves towards the driver."""

    def __init__(self, attempts: dict[str, int] | None = None) -> None:
        self.blockers: list[Any] = []
        self.retry = None
        self.lost = False
        self.records: list[tuple[str, bytes]] = []
        self._attempts = dict(attempts or {})

    @property
    def recorded(self) -> list[StepRow]:
        return []

    @property
    def attempts(self) -> dict[str, int]:
        return self._attempts

    def now(self) -> int:
        return 1_700_000_000_000

    def block(self, blocker: Any) -> None:
        self.blockers.append(blocker)

    async def completed(self, step: str, name: str, output: bytes,
                        began: int | None = None) -> None:
        self._attempts.pop(step, None)
        self.records.append((step, output))

    async def errored(self, *args: Any, **kwargs: Any) -> bool:
        raise AssertionError("no step fails here")


class NoPlans:
    """Storage as the driver reads it when no parallel step was ever planned."""

    async def read(self, fn: Any) -> None:
        return None


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
    return HttpDriver(NoPlans(), None, dev=True,  # type: ignore[arg-type]
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
    app, host = App(steps=2), Host(attempts={"s0": 2})
    await driver(app).call(FN, host, run=run(attempt=1), event=EVENT, events=[EVENT])
    assert [call["ctx"]["attempt"] for call in app.calls] == [2, 1, 1]
