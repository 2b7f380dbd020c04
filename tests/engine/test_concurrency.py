"""Concurrency limits: per function and key, per environment, per account; what holds a slot
(a call in flight) and what does not (a sleeping run); slots freed by a lost lease."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import msgspec
import pytest

import tidings
from tests.engine.conftest import Engine
from tidings.engine.runtime import Runtime
from tidings.errors import ConfigError
from tidings.events.parse import parse_events
from tidings.flow import at_claim
from tidings.ids import now_ms
from tidings.runs.model import COMPLETED, QUEUED, SLEEPING


class Gauge:
    """How many calls run at once, per key, and the most ever seen."""

    def __init__(self) -> None:
        self.now: collections.Counter[str] = collections.Counter()
        self.most: collections.Counter[str] = collections.Counter()

    async def hold(self, key: str) -> None:
        self.now[key] += 1
        self.most[key] = max(self.most[key], self.now[key])
        for _ in range(5):  # let every other call in flight run meanwhile
            await asyncio.sleep(0)
        self.now[key] -= 1


async def test_a_keyed_limit_holds_per_key_and_every_run_finishes(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")
    gauge = Gauge()

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"),
                     concurrency=tidings.Concurrency(limit=2, key="event.data.user"))
    async def f(ctx: tidings.Context) -> Any:
        await ctx.step.run("work", gauge.hold, ctx.event.data["user"])
        return ctx.event.data["n"]

    await engine.start(client)
    await engine.send(*[{"name": "go", "data": {"user": u, "n": n}}
                        for n, u in enumerate("aaaaabbbc")])
    await engine.drain()
    runs = await engine.runs()
    assert [r.status for r in runs] == [COMPLETED] * 9
    assert gauge.most == {"a": 2, "b": 2, "c": 1}  # exactly at the limit, never over


async def test_runs_over_the_limit_wait_and_say_why(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"),
                     concurrency=tidings.Concurrency(limit=1, key="event.data.user"))
    async def f(ctx: tidings.Context) -> Any:
        return await ctx.step.run("work", lambda: "done")

    await engine.start(client)
    await engine.send({"name": "go", "data": {"user": "a"}}, {"name": "go", "data": {"user": "a"}},
                      {"name": "go", "data": {"user": "b"}})
    await engine.runtime.router.flush()  # type: ignore[union-attr]
    executor = engine.executor()
    claimed = await executor._claim(10)
    assert len(claimed) == 2  # one per key
    a1, a2, b = await engine.runs()
    assert b.id in {c.run.id for c in claimed}
    first, second = (a1, a2) if a1.id in {c.run.id for c in claimed} else (a2, a1)
    assert second.status == QUEUED and second.started_at is None
    assert second.lease_owner is None
    why = await engine.waiting(second.id)
    assert why is not None and why["reason"] == "concurrency_limited" and why["key"] == "a"
    assert await engine.waiting(first.id) is None
    await asyncio.gather(*(executor._drive(c) for c in claimed))
    # The end of the first call woke the waiting run at once: no need to wait for a recheck.
    second = await engine.run(second.id)
    assert second.due_at is not None and second.due_at <= engine.clock()
    await engine.drain()
    assert [r.status for r in await engine.runs()] == [COMPLETED] * 3
    assert await engine.waiting(second.id) is None


async def test_sleeping_runs_do_not_hold_a_slot(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"), concurrency=1)
    async def f(ctx: tidings.Context) -> Any:
        await ctx.step.run("before", lambda: 1)
        await ctx.step.sleep("nap", "1h")
        return await ctx.step.run("after", lambda: 2)

    await engine.start(client)
    await engine.send(*[{"name": "go"} for _ in range(3)])
    await engine.drain()
    assert [r.status for r in await engine.runs()] == [SLEEPING] * 3
    engine.clock.advance(3600_001)
    await engine.drain()
    assert [r.status for r in await engine.runs()] == [COMPLETED] * 3


async def test_env_scope_is_shared_between_functions(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")
    gauge = Gauge()
    limit = tidings.Concurrency(limit=1, key="'shared-api'", scope="env")

    @client.function(id="one", trigger=tidings.TriggerEvent(event="go"), concurrency=limit)
    async def one(ctx: tidings.Context) -> Any:
        await ctx.step.run("work", gauge.hold, "api")

    @client.function(id="two", trigger=tidings.TriggerEvent(event="go"), concurrency=[limit])
    async def two(ctx: tidings.Context) -> Any:
        await ctx.step.run("work", gauge.hold, "api")

    await engine.start(client)
    await engine.send(*[{"name": "go"} for _ in range(3)])
    await engine.drain()
    assert [r.status for r in await engine.runs()] == [COMPLETED] * 6
    assert gauge.most == {"api": 1}


async def test_two_limits_both_hold(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")
    gauge = Gauge()

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"), concurrency=[
        tidings.Concurrency(limit=3),
        tidings.Concurrency(limit=1, key="event.data.user", scope="account")])
    async def f(ctx: tidings.Context) -> Any:
        await ctx.step.run("work", gauge.hold, "all")
        await ctx.step.run("mine", gauge.hold, ctx.event.data["user"])

    await engine.start(client)
    await engine.send(*[{"name": "go", "data": {"user": u}} for u in "abcdabcd"])
    await engine.drain()
    assert [r.status for r in await engine.runs()] == [COMPLETED] * 8
    assert gauge.most["all"] == 3
    assert all(gauge.most[u] == 1 for u in "abcd")


async def test_a_lost_lease_frees_its_slot(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"), concurrency=1)
    async def f(ctx: tidings.Context) -> Any:
        return await ctx.step.run("work", lambda: "done")

    await engine.start(client)
    await engine.send({"name": "go"}, {"name": "go"})
    await engine.runtime.router.flush()  # type: ignore[union-attr]
    executor = engine.executor()
    (held,) = await executor._claim(10)  # its worker "dies" holding the lease
    assert await executor._claim(10) == []
    engine.clock.advance(executor.settings.lease_ms + 60_001)  # past the lease and a recheck
    again = await executor._claim(10)
    assert len(again) == 1  # the expired lease no longer counts; one run takes the slot
    await asyncio.gather(*(executor._drive(c) for c in again))
    await engine.drain()
    assert [r.status for r in await engine.runs()] == [COMPLETED] * 2
    assert held.run.id in {r.id for r in await engine.runs()}


@pytest.mark.parametrize(("concurrency", "words"), [
    ([tidings.Concurrency(limit=1)] * 3, "at most 2 limits"),
    (tidings.Concurrency(limit=-1), "at least 0"),
    (tidings.Concurrency(limit=1, key="event.data.("), "concurrency.key"),
    (tidings.Concurrency(limit=1, scope="world"), "fn, env or account"),  # type: ignore[arg-type]
])
def test_bad_limits_are_refused(concurrency: Any, words: str) -> None:
    client = tidings.Tidings(app_id="app")
    with pytest.raises(ConfigError, match=words):
        client.function(id="f", trigger=tidings.TriggerEvent(event="go"),
                        concurrency=concurrency)(lambda ctx: None)


async def test_a_running_engine_hands_runs_over_within_the_limit(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not drain mode: on SQLite new runs are admitted in the transaction that stores their
    events and handed straight to the executor; the limit holds there too."""
    client = tidings.Tidings(app_id="app")
    gauge = Gauge()
    adopted: list[bool] = []
    original = at_claim.adopt

    def spy(*args: Any, **kwargs: Any) -> list[str] | None:
        keys = original(*args, **kwargs)
        adopted.append(keys is not None)
        return keys

    monkeypatch.setattr(at_claim, "adopt", spy)

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"),
                     concurrency=tidings.Concurrency(limit=2, key="event.data.user"))
    async def f(ctx: tidings.Context) -> Any:
        await ctx.step.run("work", gauge.hold, ctx.event.data["user"])

    runtime = Runtime(engine.core, [client])
    await runtime.start()
    try:
        assert runtime.env is not None
        events = [{"name": "go", "data": {"user": f"u{i % 4}"}} for i in range(40)]
        parsed = parse_events(msgspec.json.encode(events), engine.core.settings.limits, now_ms())
        await engine.core.ingest.append(runtime.env.id, parsed)
        deadline = time.monotonic() + 60
        done = 0
        while time.monotonic() < deadline and done < 40:
            runs = await engine.core.storage.read(
                lambda tx: tx.all("runs_of_env", (runtime.env.id,)))  # type: ignore[union-attr]
            done = sum(1 for r in runs if r[6] == COMPLETED)
            await asyncio.sleep(0.02)
        assert done == 40
    finally:
        await runtime.stop(grace=5)
    assert max(gauge.most.values()) == 2
    if engine.core.storage.dialect == "sqlite":
        assert True in adopted and False in adopted  # handed over, and held back at the limit


async def test_cancelling_a_run_frees_its_slot_and_wakes_a_waiter(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"), concurrency=1)
    async def f(ctx: tidings.Context) -> Any:
        return await ctx.step.run("work", lambda: "done")

    await engine.start(client)
    await engine.send({"name": "go"}, {"name": "go"})
    await engine.runtime.router.flush()  # type: ignore[union-attr]
    executor = engine.executor()
    (held,) = await executor._claim(10)
    (waiter,) = [r for r in await engine.runs() if r.id != held.run.id]
    assert (await engine.run(waiter.id)).due_at > engine.clock()  # type: ignore[operator]
    response = await engine.api("POST", f"/v1/runs/{held.run.id}/cancel")
    assert response.status_code == 200
    assert (await engine.run(waiter.id)).due_at <= engine.clock()  # type: ignore[operator]
    await engine.drain()
    assert (await engine.run(waiter.id)).status == COMPLETED


async def test_a_key_holding_nul_is_kept_apart_and_stored_on_both_backends(
    engine: Engine,
) -> None:
    """``data`` may hold ``\\u0000`` (it is JSON), so a key computed from it may too; PostgreSQL
    text cannot, so such a key is stored hashed: each key still holds its own slots."""
    client = tidings.Tidings(app_id="app")
    gauge = Gauge()

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"),
                     concurrency=tidings.Concurrency(limit=1, key="event.data.user"),
                     throttle=tidings.Throttle(limit=100, period="1s", burst=100,
                                              key="event.data.user"))
    async def f(ctx: tidings.Context) -> Any:
        await ctx.step.run("work", gauge.hold, ctx.event.data["user"])
        return ctx.event.data["user"]

    await engine.start(client)
    await engine.send(*[{"name": "go", "data": {"user": user}}
                        for user in ("a\u0000b", "a\u0000b", "a\u0000c", "a")])
    await engine.drain()
    runs = await engine.runs()

    assert [r.status for r in runs] == [COMPLETED] * 4
    assert sorted(r.output for r in runs) == ["a", "a\u0000b", "a\u0000b", "a\u0000c"]
    assert gauge.most == {"a\u0000b": 1, "a\u0000c": 1, "a": 1}
