"""A failed attempt is never silent: while a run waits to be tried again it shows the error of
the attempt that failed (``runs.error``), until a later call goes on or the run ends."""

from __future__ import annotations

import collections
import logging
from datetime import timedelta
from typing import Any

import pytest

import tidings
from tests.engine.conftest import Engine
from tidings.observe.logs import fields_of
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


async def test_a_step_waiting_for_its_retry_shows_its_error_and_when_it_is_due(
        engine: Engine) -> None:
    """The run of a step that failed shows that attempt's error and its next attempt's time
    through the runs API (``GET /v1/runs/{id}``), not ``error: null``."""
    client = tidings.Tidings(app_id="app")
    tries: collections.Counter[str] = collections.Counter()

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"), retries=2)
    async def f(ctx: tidings.Context) -> Any:
        def flaky() -> str:
            tries["s"] += 1
            if tries["s"] == 1:
                raise ValueError("the bank said no")
            return "paid"

        return await ctx.step.run("pay", flaky)

    await engine.start(client)
    await engine.send({"name": "go"})
    await engine.drain()
    (run,) = await engine.runs()
    shown = await engine.get(f"/v1/runs/{run.id}")
    assert shown["status"] == "Running"
    assert shown["error"]["name"] == "ValueError"
    assert shown["error"]["message"] == "the bank said no"
    assert shown["due_at"] is not None
    assert run.due_at is not None and run.due_at > engine.clock()

    engine.clock.advance(1_001)
    await engine.drain()
    shown = await engine.get(f"/v1/runs/{run.id}")
    assert (shown["status"], shown["output"], shown["error"]) == ("Completed", "paid", None)


async def test_the_lines_logged_while_a_run_fails_carry_its_ids(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tidings")
    client = tidings.Tidings(app_id="app")

    @client.function(id="doomed", trigger=tidings.TriggerEvent(event="go"), retries=1)
    async def doomed(ctx: tidings.Context) -> Any:
        def fail() -> None:
            raise RuntimeError("always")

        await ctx.step.run("try", fail)

    await engine.start(client)
    (event_id,) = await engine.send({"name": "go"})
    await engine.settle()
    (run,) = await engine.runs()
    assert run.status == "Failed"
    mine = [r for r in caplog.records if fields_of(r).get("run_id") == run.id]
    assert mine, caplog.text
    for record in mine:
        fields = fields_of(record)
        assert fields["function"] == "app-doomed" and fields["app"] == "app"
        assert fields["event_id"] == event_id
        assert isinstance(fields["attempt"], int)
    retried = [r for r in mine if "tried again at" in r.getMessage()]
    assert retried and retried[0].levelno == logging.INFO
    assert fields_of(retried[0])["step"] == "try"
    exhausted = [r for r in mine if "its retries spent (2 attempts)" in r.getMessage()]
    assert exhausted and exhausted[0].levelno == logging.WARNING
    ended = [r for r in mine if f"run {run.id} failed for good" in r.getMessage()]
    assert len(ended) == 1 and ended[0].levelno == logging.INFO  # the step's error: not retried
