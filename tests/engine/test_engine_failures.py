"""A call that fails inside the engine (not in the function: a bug, an answer the engine cannot
take in, such as a TypeError while checking a signature) is an attempt of the run: its error is
on the run, the next call waits for the backoff, and after the function's retries the run
fails. It is never handed back to be called again at once, forever."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import tidings
from tests.engine.conftest import Engine
from tidings.calls.outcomes import RunDone
from tidings.engine.executor import Executor
from tidings.runs.model import COMPLETED, FAILED, RUNNING

BOOM = "'str' object cannot be interpreted as an integer"


def _inject(executor: Executor, where: str, monkeypatch: pytest.MonkeyPatch,
            failing: Callable[[], bool]) -> list[str]:
    """Make the driver's call (``driver``) or the recording of the call's outcome (``settle``)
    raise a TypeError while ``failing()``; the calls that reached that point."""
    calls: list[str] = []
    if where == "driver":
        real = executor._driver.call

        async def call(fn: Any, host: Any, **kwargs: Any) -> Any:
            calls.append(kwargs["run"].id)
            if failing():
                raise TypeError(BOOM)
            return await real(fn, host, **kwargs)

        monkeypatch.setattr(executor._driver, "call", call)
    else:
        settle = executor._settle

        async def settling(run: Any, fn: Any, event: Any, events: Any, outcome: Any,
                           *args: Any, **kwargs: Any) -> None:
            if isinstance(outcome, RunDone):
                calls.append(run.id)
                if failing():
                    raise TypeError(BOOM)
            await settle(run, fn, event, events, outcome, *args, **kwargs)

        monkeypatch.setattr(executor, "_settle", settling)
    return calls


def _client() -> tidings.Tidings:
    client = tidings.Tidings(app_id="app")

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"), retries=2)
    async def f(ctx: tidings.Context) -> Any:
        return await ctx.step.run("one", lambda: "done")

    return client


@pytest.mark.parametrize("where", ["driver", "settle"])
async def test_an_engine_failure_is_an_attempt_with_backoff_until_the_run_fails(
        engine: Engine, where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    await engine.start(_client())
    calls = _inject(engine.executor(), where, monkeypatch, lambda: True)
    await engine.send({"name": "go"})
    await engine.drain()
    (run,) = await engine.runs()
    assert (run.status, run.attempt, len(calls)) == (RUNNING, 1, 1)
    assert run.error == {"name": "EngineError",
                         "message": f"the call failed inside Tidings: TypeError: {BOOM}"}
    shown = await engine.get(f"/v1/runs/{run.id}")
    assert shown["error"]["name"] == "EngineError" and shown["attempt"] == 1

    await engine.drain()  # not due before the backoff (1 s here) has passed
    assert len(calls) == 1

    engine.clock.advance(1_000)
    await engine.drain()
    run = await engine.run(run.id)
    assert (run.status, run.attempt, len(calls)) == (RUNNING, 2, 2)

    engine.clock.advance(1_000)
    await engine.drain()
    run = await engine.run(run.id)
    assert (run.status, len(calls)) == (FAILED, 3)  # the first call and 2 retries
    assert run.error is not None and run.error["name"] == "EngineError"

    for _ in range(3):
        engine.clock.advance(60_000)
        await engine.drain()
    assert len(calls) == 3


@pytest.mark.parametrize("where", ["driver", "settle"])
async def test_a_run_whose_engine_failure_passes_completes_and_sheds_the_error(
        engine: Engine, where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    await engine.start(_client())
    calls = _inject(engine.executor(), where, monkeypatch, lambda: len(calls) <= 1)
    await engine.send({"name": "go"})
    await engine.drain()
    (run,) = await engine.runs()
    assert run.error is not None and run.attempt == 1
    engine.clock.advance(1_000)
    await engine.drain()
    run = await engine.run(run.id)
    assert (run.status, run.output, run.error, len(calls)) == (COMPLETED, "done", None, 2)
