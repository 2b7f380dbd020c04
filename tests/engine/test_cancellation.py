"""Cancellation: ``cancel_on`` events (with ``if`` over ``event``/``async`` and a timeout),
bulk cancellation through the API, and ``timeouts`` (start, finish)."""

from __future__ import annotations

from typing import Any

import pytest

import tidings
from tests.engine.conftest import Engine
from tidings.errors import ConfigError
from tidings.runs.model import CANCELLED, COMPLETED, QUEUED, SLEEPING


def _sleeper(**flow: Any) -> tidings.Tidings:
    client = tidings.Tidings(app_id="app")

    @client.function(id="f", trigger=tidings.TriggerEvent(event="order/created"), **flow)
    async def f(ctx: tidings.Context) -> Any:
        await ctx.step.run("first", lambda: 1)
        await ctx.step.sleep("nap", "1h")
        return ctx.event.data["id"]

    return client


ON_CANCEL = [tidings.Cancel(event="order/cancelled", if_="event.data.id == async.data.id",
                            timeout="10m")]


async def test_a_matching_event_cancels_only_its_run(engine: Engine) -> None:
    await engine.start(_sleeper(cancel=ON_CANCEL))
    await engine.send({"name": "order/created", "data": {"id": 1}},
                      {"name": "order/created", "data": {"id": 2}})
    await engine.drain()
    one, two = await engine.runs()
    assert one.status == two.status == SLEEPING
    ids = await engine.send({"name": "order/cancelled", "data": {"id": 1}})
    await engine.drain()
    one, two = await engine.run(one.id), await engine.run(two.id)
    assert one.status == CANCELLED and two.status == SLEEPING
    assert "order/cancelled" in one.error["message"] and ids[0] in one.error["message"]
    engine.clock.advance(3600_001)
    await engine.drain()
    assert (await engine.run(two.id)).status == COMPLETED


async def test_a_queued_run_is_cancelled_before_it_starts(engine: Engine) -> None:
    await engine.start(_sleeper(cancel=ON_CANCEL))
    later = engine.clock() + 60_000
    await engine.send({"name": "order/created", "data": {"id": 1}, "ts": later})
    await engine.drain()
    (run,) = await engine.runs()
    assert run.status == QUEUED
    await engine.send({"name": "order/cancelled", "data": {"id": 1}})
    await engine.drain()
    engine.clock.advance(60_001)
    await engine.drain()
    assert (await engine.run(run.id)).status == CANCELLED
    assert await engine.steps(run.id) == []


async def test_the_cancellation_expires_with_its_timeout(engine: Engine) -> None:
    await engine.start(_sleeper(cancel=ON_CANCEL))
    await engine.send({"name": "order/created", "data": {"id": 1}})
    await engine.drain()
    engine.clock.advance(10 * 60_000 + 1_000)
    await engine.send({"name": "order/cancelled", "data": {"id": 1}})
    await engine.drain()
    (run,) = await engine.runs()
    assert run.status == SLEEPING


async def test_an_earlier_event_does_not_cancel_a_later_run(engine: Engine) -> None:
    await engine.start(_sleeper(cancel=[tidings.Cancel(event="order/cancelled")]))
    await engine.send({"name": "order/cancelled", "data": {"id": 1}},
                      {"name": "order/created", "data": {"id": 1}})
    await engine.drain()
    (run,) = await engine.runs()
    assert run.status == SLEEPING


async def test_bulk_cancellation_by_function_and_time_range(engine: Engine) -> None:
    await engine.start(_sleeper())
    await engine.send(*[{"name": "order/created", "data": {"id": i}} for i in range(3)])
    await engine.drain()
    middle = engine.clock()
    engine.clock.advance(1_000)
    await engine.send(*[{"name": "order/created", "data": {"id": i}} for i in range(3, 5)])
    await engine.drain()
    response = await engine.api("POST", "/v1/cancellations", {
        "function": "app-f", "since": 0, "until": middle + 500})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["cancelled"] == 3
    statuses = sorted((r.output or r.status) for r in await engine.runs())
    assert statuses == [CANCELLED] * 3 + [SLEEPING] * 2
    again = await engine.api("POST", "/v1/cancellations", {
        "function": "app-f", "since": 0, "until": middle + 500})
    assert again.json()["data"]["cancelled"] == 0
    missing = await engine.api("POST", "/v1/cancellations", {
        "function": "app-nope", "since": 0, "until": middle})
    assert missing.status_code == 404
    bad = await engine.api("POST", "/v1/cancellations", {"function": "app-f", "since": 5})
    assert bad.status_code == 400 and "until" in bad.json()["error"]


async def test_start_timeout_cancels_a_run_that_waits_too_long(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"),
                     throttle=tidings.Throttle(limit=1, period="1m"),
                     timeouts=tidings.Timeouts(start="10s"))
    async def f(ctx: tidings.Context) -> Any:
        return "ran"

    await engine.start(client)
    await engine.send({"name": "go"}, {"name": "go"})
    await engine.drain()
    assert sorted(r.status for r in await engine.runs()) == [COMPLETED, QUEUED]
    (held,) = [r for r in await engine.runs() if r.status == QUEUED]
    assert held.due_at is not None and held.due_at <= engine.clock() + 10_001
    engine.clock.advance(11_000)
    await engine.drain()
    held = await engine.run(held.id)
    assert held.status == CANCELLED
    assert held.error["message"].startswith("timeouts.start: the run did not start within 10s")


async def test_finish_timeout_cancels_a_run_that_takes_too_long(engine: Engine) -> None:
    await engine.start(_sleeper(timeouts=tidings.Timeouts(finish="10m")))
    await engine.send({"name": "order/created", "data": {"id": 1}})
    await engine.drain()
    (run,) = await engine.runs()
    assert run.status == SLEEPING and run.started_at is not None
    assert run.due_at == run.started_at + 10 * 60_000 + 1  # due by its deadline, not in 1 h
    engine.clock.advance(10 * 60_000 + 1_000)
    await engine.drain()
    run = await engine.run(run.id)
    assert run.status == CANCELLED and run.error["message"].startswith("timeouts.finish")


def test_at_most_five_cancellations() -> None:
    with pytest.raises(ConfigError, match="at most 5"):
        _sleeper(cancel=[tidings.Cancel(event=f"e{i}") for i in range(6)])
    _sleeper(cancel=[tidings.Cancel(event=f"e{i}") for i in range(5)])


async def test_a_cancelled_run_emits_function_cancelled(engine: Engine) -> None:
    client = _sleeper(cancel=ON_CANCEL)
    seen: list[Any] = []

    @client.function(id="watcher", trigger=tidings.TriggerEvent(event="tidings/function.cancelled"))
    async def watcher(ctx: tidings.Context) -> Any:
        seen.append(ctx.event.data)
        return ctx.event.data["error"]["message"]

    await engine.start(client)
    await engine.send({"name": "order/created", "data": {"id": 1}})
    await engine.drain()
    await engine.send({"name": "order/cancelled", "data": {"id": 1}})
    await engine.drain()
    assert len(seen) == 1 and seen[0]["function_id"] == "app-f"
    assert seen[0]["event"]["data"] == {"id": 1}
    assert seen[0]["error"]["message"].startswith("cancelled by event order/cancelled")
