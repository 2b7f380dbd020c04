"""Priority (higher first when the queue is backed up, clamped to ±12 h) and singleton (skip
or cancel)."""

from __future__ import annotations

from typing import Any

import tidings
from tests.engine.conftest import Engine
from tidings.runs.model import CANCELLED, COMPLETED, SLEEPING


async def test_higher_priority_starts_first(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"),
                     priority=tidings.Priority(run="event.data.p"))
    async def f(ctx: tidings.Context) -> Any:
        return ctx.event.data["p"]

    await engine.start(client)
    await engine.send(*[{"name": "go", "data": {"p": p}} for p in (0, 30, 10, 600, 5)])
    await engine.runtime.router.flush()  # type: ignore[union-attr]
    executor = engine.executor()
    order = []
    for _ in range(5):
        (call,) = await executor._claim(1)  # a backed-up queue: one slot at a time
        order.append(call.run.id)
        await executor._drive(call)
    outputs = {r.id: r.output for r in await engine.runs()}
    assert [outputs[i] for i in order] == [600, 30, 10, 5, 0]


async def test_priority_is_clamped_and_negative_priority_waits(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"),
                     priority=tidings.Priority(run="event.data.p"))
    async def f(ctx: tidings.Context) -> Any:
        return ctx.event.data["p"]

    await engine.start(client)
    await engine.send({"name": "go", "data": {"p": 10**9}}, {"name": "go", "data": {"p": -60}},
                      {"name": "go", "data": {"p": "high"}})
    await engine.runtime.router.flush()  # type: ignore[union-attr]
    high, low, text = await engine.runs()
    assert high.due_at == high.created_at - 43_200_000  # clamped to 12 h
    assert low.due_at == low.created_at + 60_000
    assert text.due_at == text.created_at  # not a number: no priority
    await engine.drain()
    assert [r.status for r in await engine.runs()] != [COMPLETED] * 3
    engine.clock.advance(60_001)
    await engine.drain()
    assert [r.status for r in await engine.runs()] == [COMPLETED] * 3


def _singleton(mode: str) -> tidings.Tidings:
    client = tidings.Tidings(app_id="app")

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"),
                     singleton=tidings.Singleton(mode=mode, key="event.data.user"))  # type: ignore[arg-type]
    async def f(ctx: tidings.Context) -> Any:
        await ctx.step.sleep("nap", "1h")
        return ctx.event.data["n"]

    return client


async def test_singleton_skip(engine: Engine) -> None:
    await engine.start(_singleton("skip"))
    await engine.send({"name": "go", "data": {"user": "a", "n": 0}})
    await engine.drain()
    ids = await engine.send({"name": "go", "data": {"user": "a", "n": 1}},
                            {"name": "go", "data": {"user": "b", "n": 2}})
    await engine.drain()
    runs = await engine.runs()
    assert len(runs) == 2 and [r.status for r in runs] == [SLEEPING] * 2
    skipped = (await engine.get(f"/v1/events/{ids[0]}"))["skipped"]
    assert [s["reason"] for s in skipped] == ["singleton"]
    engine.clock.advance(3600_001)
    await engine.drain()
    await engine.send({"name": "go", "data": {"user": "a", "n": 3}})  # a's run ended: runs
    await engine.drain()
    assert sorted(r.status for r in await engine.runs()) == [COMPLETED] * 2 + [SLEEPING]


async def test_singleton_cancel(engine: Engine) -> None:
    await engine.start(_singleton("cancel"))
    await engine.send({"name": "go", "data": {"user": "a", "n": 0}})
    await engine.drain()
    await engine.send({"name": "go", "data": {"user": "a", "n": 1}})
    await engine.drain()
    first, second = await engine.runs()
    assert first.status == CANCELLED and "singleton" in first.error["message"]
    assert second.status == SLEEPING
    engine.clock.advance(3600_001)
    await engine.drain()
    assert (await engine.run(second.id)).output == 1


async def test_a_singleton_cron_skips_ticks_while_its_run_is_active(engine: Engine) -> None:
    """The common "do not start again while the last one still runs": a cron function with a
    singleton. Two processes tick together: one run per tick, skipped while one is active."""
    client = tidings.Tidings(app_id="app")

    @client.function(id="hourly", trigger=tidings.TriggerCron(cron="0 * * * *"),
                     singleton=tidings.Singleton(mode="skip"))
    async def hourly(ctx: tidings.Context) -> Any:
        await ctx.step.sleep("long", "90m")
        return "done"

    runtime = await engine.start(client)
    other = type(runtime)(engine.core, [client], clock=engine.clock)
    await other.register()
    await runtime.cron.tick()
    await other.cron.tick()
    for _ in range(6):  # three hourly ticks; the run of the first sleeps 90 minutes
        engine.clock.advance(1800_000)
        await other.cron.tick()  # the other process ticks first (drain ticks this one)
        await engine.drain()
    runs = await engine.runs()
    assert [r.status for r in runs] == [COMPLETED, SLEEPING]  # ticks 1 and 3; tick 2 skipped
