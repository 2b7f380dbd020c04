"""Waiting for events, and delayed delivery."""

from __future__ import annotations

from typing import Any

import tidings
from tests.engine.conftest import Engine
from tidings.runs.model import COMPLETED, WAITING


def waiter_app() -> tidings.Tidings:
    client = tidings.Tidings(app_id="app")

    @client.function(id="approve", trigger=tidings.TriggerEvent(event="order/placed"))
    async def approve(ctx: tidings.Context) -> Any:
        approval = await ctx.step.wait_for_event(
            "approval", event="order/approved", if_="async.data.order == event.data.order",
            timeout="1h")
        return approval.data if approval else "timed out"

    return client


async def test_the_first_matching_event_resumes_the_run_once(engine: Engine) -> None:
    await engine.start(waiter_app())
    await engine.send({"name": "order/placed", "data": {"order": 1}},
                      {"name": "order/placed", "data": {"order": 2}})
    await engine.drain()
    assert {r.status for r in await engine.runs()} == {WAITING}
    await engine.send({"name": "order/approved", "data": {"order": 1, "n": "first"}},
                      {"name": "order/approved", "data": {"order": 1, "n": "second"}},
                      {"name": "order/approved", "data": {"order": 3}})
    await engine.drain()
    runs = sorted(await engine.runs(), key=lambda r: r.created_at)
    outputs = {r.status: r.output for r in runs}
    assert outputs[COMPLETED] == {"order": 1, "n": "first"}
    assert sorted(r.status for r in runs) == [COMPLETED, WAITING]


async def test_a_wait_times_out_with_none(engine: Engine) -> None:
    await engine.start(waiter_app())
    await engine.send({"name": "order/placed", "data": {"order": 1}})
    await engine.drain()
    (run,) = await engine.runs()
    assert run.status == WAITING and run.due_at is not None
    engine.clock.advance(3600_000 + 1)
    await engine.drain()
    run = await engine.run(run.id)
    assert (run.status, run.output) == (COMPLETED, "timed out")


async def test_an_event_sent_while_the_wait_is_set_up_is_not_missed(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")

    @client.function(id="f", trigger=tidings.TriggerEvent(event="start"))
    async def f(ctx: tidings.Context) -> Any:
        # The reply is sent (and committed) after the run's last recorded step and before its
        # wait exists: the wait must still see it.
        await ctx.step.run("ask", lambda: "asked")
        await engine.send({"name": "reply", "data": {"to": ctx.event.data["id"]}})
        got = await ctx.step.wait_for_event("reply", event="reply",
                                            if_="async.data.to == event.data.id", timeout="1h")
        return got.data if got else None

    await engine.start(client)
    await engine.send({"name": "start", "data": {"id": 7}})
    await engine.drain()
    (run,) = await engine.runs()
    assert (run.status, run.output) == (COMPLETED, {"to": 7})


async def test_delayed_delivery_and_cancelling_it(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")

    @client.function(id="f", trigger=tidings.TriggerEvent(event="remind"))
    async def f(ctx: tidings.Context) -> Any:
        return ctx.event.data

    await engine.start(client)
    later = engine.clock() + 3600_000
    keep, drop = await engine.send(
        {"name": "remind", "data": {"n": 1}, "deliver_at": later},
        {"name": "remind", "data": {"n": 2}, "deliver_after": 3600})
    await engine.drain()
    assert await engine.runs() == []
    from tidings.storage.tx import Tx

    def cancel(tx: Tx) -> int:
        return tx.run("cancel_event", (engine.clock(), engine.env_id, drop))

    assert await engine.core.storage.write(cancel) == 1
    engine.clock.advance(3600_000 + 1000)
    await engine.drain()
    (run,) = await engine.runs()
    assert run.output == {"n": 1} and run.event_id == keep
    kept = await engine.core.events.get(engine.env_id, keep)
    dropped = await engine.core.events.get(engine.env_id, drop)
    assert kept is not None and kept.delivered_at is not None
    assert dropped is not None and dropped.delivered_at is None
    assert dropped.cancelled_at is not None


async def test_events_without_subscribers_are_delivered(engine: Engine) -> None:
    await engine.start(waiter_app())
    (event_id,) = await engine.send({"name": "nobody/listens"})
    await engine.drain()
    event = await engine.core.events.get(engine.env_id, event_id)
    assert event is not None and event.delivered_at is not None
