"""Inngest's event ``meta`` (sessions) in runs: a function receives the meta of its events, the
lifecycle events of its run (failed, finished, cancelled) carry its trigger's, an event sent from
a step keeps its own, and an invoked run gets the meta of its invocation."""

from __future__ import annotations

from typing import Any

import tidings
from tests.engine.conftest import Engine
from tidings.runs.model import CANCELLED, COMPLETED, SLEEPING, WAITING

CHAT = {"sessions": {"conversation": "c-1"}}


async def test_a_function_receives_the_meta_of_its_events(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")

    @client.function(id="reply", trigger=tidings.TriggerEvent(event="chat/message"))
    async def reply(ctx: tidings.Context) -> Any:
        sent = await ctx.step.send_event("ask", tidings.Event(
            name="chat/question", meta={"sessions": {"conversation": "c-2", "n": 7}}))
        return {"meta": ctx.event.meta, "events": [e.meta for e in ctx.events], "sent": sent}

    await engine.start(client)
    with_meta, without = await engine.send({"name": "chat/message", "meta": CHAT},
                                           {"name": "chat/message"})
    await engine.drain()
    outputs = {r.event_id: r.output for r in await engine.runs()}
    assert outputs[with_meta]["meta"] == CHAT
    assert outputs[with_meta]["events"] == [CHAT]
    assert outputs[without]["meta"] is None
    [question] = outputs[with_meta]["sent"]
    stored = await engine.get(f"/v1/events/{question}")
    assert stored["meta"] == {"sessions": {"conversation": "c-2", "n": "7"}}


async def test_lifecycle_events_carry_the_meta_of_the_trigger(engine: Engine) -> None:
    """inngest-js reads the sessions of an ``onFailure`` handler (and of any function triggered
    by a lifecycle event) from that event's ``meta``: it is the trigger's."""
    client = tidings.Tidings(app_id="app")
    seen: dict[str, Any] = {}

    async def handle_failure(ctx: tidings.Context) -> None:
        seen["failed"] = (ctx.event.meta, ctx.event.data["event"].get("meta"))

    @client.function(id="fragile", trigger=tidings.TriggerEvent(event="chat/fail"), retries=0,
                     on_failure=handle_failure)
    async def fragile(ctx: tidings.Context) -> None:
        raise RuntimeError("it broke")

    @client.function(id="sleeper", trigger=tidings.TriggerEvent(event="chat/sleep"),
                     cancel=[tidings.Cancel(event="chat/stop")])
    async def sleeper(ctx: tidings.Context) -> None:
        await ctx.step.sleep("nap", "1h")

    @client.function(id="audit", triggers=[
        tidings.TriggerEvent(event="tidings/function.finished",
                             if_="event.data.function_id == 'app-fragile'"),
        tidings.TriggerEvent(event="tidings/function.cancelled")])
    async def audit(ctx: tidings.Context) -> None:
        seen[ctx.event.name] = (ctx.event.meta, ctx.event.data["event"].get("meta"))

    await engine.start(client)
    await engine.send({"name": "chat/fail", "meta": CHAT},
                      {"name": "chat/sleep", "meta": {"sessions": {"user": "u-1"}}})
    await engine.settle(rounds=3)
    await engine.send({"name": "chat/stop"})
    await engine.settle(rounds=3)
    assert seen == {
        "failed": (CHAT, CHAT),
        "tidings/function.finished": (CHAT, CHAT),
        "tidings/function.cancelled": ({"sessions": {"user": "u-1"}},) * 2,
    }


async def test_a_run_cancelled_through_the_api_tells_its_meta(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")
    seen: list[Any] = []

    @client.function(id="sleeper", trigger=tidings.TriggerEvent(event="chat/sleep"))
    async def sleeper(ctx: tidings.Context) -> None:
        await ctx.step.sleep("nap", "1h")

    @client.function(id="audit", trigger=tidings.TriggerEvent(event="tidings/function.cancelled"))
    async def audit(ctx: tidings.Context) -> None:
        seen.append(ctx.event.meta)

    await engine.start(client)
    await engine.send({"name": "chat/sleep", "meta": CHAT})
    await engine.drain()
    [run] = await engine.runs()
    assert run.status == SLEEPING
    assert (await engine.api("POST", f"/v1/runs/{run.id}/cancel")).status_code == 200
    await engine.drain()
    assert (await engine.run(run.id)).status == CANCELLED
    assert seen == [CHAT]


async def test_an_invoked_run_gets_the_meta_of_its_invocation(engine: Engine) -> None:
    """Inngest SDKs ask for it in the ``InvokeFunction`` op (inngest-js stamps the run's
    sessions there); the native SDK with ``step.invoke(meta=...)``."""
    client = tidings.Tidings(app_id="app")

    @client.function(id="child", trigger=tidings.TriggerEvent(event="chat/child"))
    async def child(ctx: tidings.Context) -> Any:
        return ctx.event.meta

    @client.function(id="parent", trigger=tidings.TriggerEvent(event="chat/parent"))
    async def parent(ctx: tidings.Context) -> Any:
        return await ctx.step.invoke("call", function=child, meta={
            "sessions": {"user": None}, "propagated_sessions": {"user": "u-1", "org": "o-1"}})

    await engine.start(client)
    await engine.send({"name": "chat/parent"})
    await engine.settle(rounds=3)
    assert [r.output for r in await engine.runs()] == [{"sessions": {"org": "o-1"}}] * 2


async def test_conditions_see_the_meta_of_events(engine: Engine) -> None:
    """A trigger's ``if``, a wait's ``if`` and the waited-for event see ``event.meta``, as they do
    on Inngest, whether the event is routed as it is stored or by the sweeper (delayed)."""
    client = tidings.Tidings(app_id="app")

    @client.function(id="support", trigger=tidings.TriggerEvent(
        event="chat/message", if_="event.meta.sessions.conversation == 'c-1'"))
    async def support(ctx: tidings.Context) -> Any:
        got = await ctx.step.wait_for_event(
            "answer", event="chat/answer", timeout="1h",
            if_="async.meta.sessions.conversation == event.meta.sessions.conversation")
        return got.meta if got else None

    await engine.start(client)
    await engine.send({"name": "chat/message", "meta": CHAT},
                      {"name": "chat/message", "meta": {"sessions": {"conversation": "c-9"}}},
                      {"name": "chat/message"})
    await engine.drain()
    (run,) = await engine.runs()
    assert run.status == WAITING

    await engine.send({"name": "chat/answer", "meta": {"sessions": {"conversation": "c-2"}}})
    await engine.drain()
    assert (await engine.run(run.id)).status == WAITING
    await engine.send({"name": "chat/answer", "meta": CHAT, "deliver_after": 1})
    engine.clock.advance(1_000)
    await engine.drain()
    done = await engine.run(run.id)
    assert (done.status, done.output) == (COMPLETED, CHAT)
