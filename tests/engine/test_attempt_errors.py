"""A failed attempt is never silent: while a run waits to be tried again it shows the error of
the attempt that failed (``runs.error``), until a later call goes on or the run ends."""

from __future__ import annotations

import collections
from datetime import timedelta
from typing import Any

import tidings
from tests.engine.conftest import Engine
from tidings.runs.model import COMPLETED, RUNNING, SLEEPING


async def test_a_run_waiting_for_its_retry_shows_the_error_of_the_failed_attempt(
        engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")
    calls: collections.Counter[str] = collections.Counter()

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"), retries=3)
    async def f(ctx: tidings.Context) -> Any:
        calls["f"] += 1
        if calls["f"] == 1:
            raise RuntimeError("the database is down")
        await ctx.step.sleep("nap", timedelta(minutes=1))  # the next call goes on
        return "fine"

    await engine.start(client)
    await engine.send({"name": "go"})
    await engine.drain()
    (run,) = await engine.runs()
    assert (run.status, run.attempt) == (RUNNING, 1)
    assert run.error is not None
    assert run.error["name"] == "RuntimeError"
    assert run.error["message"] == "the database is down"

    engine.clock.advance(1_001)
    await engine.drain()
    run = await engine.run(run.id)
    assert (run.status, run.error) == (SLEEPING, None)
    engine.clock.advance(60_001)
    await engine.drain()
    run = await engine.run(run.id)
    assert (run.status, run.output, run.error) == (COMPLETED, "fine", None)
