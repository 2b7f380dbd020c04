"""Throttle (runs wait their turn, none is dropped) and rate limit (runs over it are skipped,
and the skip shows on the event): at the limit, one over, many keys, period rollover."""

from __future__ import annotations

from typing import Any

import pytest

import tidings
from tests.engine.conftest import Engine
from tidings.errors import ConfigError
from tidings.flow.limits import gcra, window
from tidings.runs.model import COMPLETED, QUEUED


def _app(**flow: Any) -> tidings.Tidings:
    client = tidings.Tidings(app_id="app")

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"), **flow)
    async def f(ctx: tidings.Context) -> Any:
        return ctx.event.data.get("n")

    return client


async def _statuses(engine: Engine) -> list[str]:
    return [r.status for r in await engine.runs()]


async def test_throttle_lets_the_burst_through_then_spaces_the_rest(engine: Engine) -> None:
    await engine.start(_app(throttle=tidings.Throttle(limit=3, period="60s", burst=3)))
    start = engine.clock()
    await engine.send(*[{"name": "go", "data": {"n": n}} for n in range(4)])
    await engine.drain()
    assert sorted(await _statuses(engine)) == [COMPLETED] * 3 + [QUEUED]  # at the limit
    (held,) = [r for r in await engine.runs() if r.status == QUEUED]
    why = await engine.waiting(held.id)
    assert why is not None and why["reason"] == "throttled"
    shown = (await engine.get(f"/v1/runs/{held.id}"))["waiting"]
    assert shown["reason"] == "throttled" and shown["key"] == ""
    assert shown["until"].endswith("Z") and shown["since"].endswith("Z")
    assert held.due_at is not None and start + 19_000 <= held.due_at <= engine.clock() + 20_000
    engine.clock.advance(15_000)
    await engine.drain()
    assert sorted(await _statuses(engine)) == [COMPLETED] * 3 + [QUEUED]
    engine.clock.advance(5_100)
    await engine.drain()
    assert await _statuses(engine) == [COMPLETED] * 4  # nothing dropped


async def test_throttle_without_burst_spreads_starts_over_the_period(engine: Engine) -> None:
    await engine.start(_app(throttle=tidings.Throttle(limit=2, period="60s")))
    await engine.send(*[{"name": "go", "data": {"n": n}} for n in range(3)])
    completed = []
    for _ in range(7):
        await engine.drain()
        completed.append(sum(s == COMPLETED for s in await _statuses(engine)))
        engine.clock.advance(15_000)
    # one at once, the next 30 s later, the last 60 s later
    assert completed[0] == 1 and completed[2] == 2 and completed[4] == 3
    assert completed[1] == 1 and completed[3] == 2


async def test_throttle_keys_are_independent(engine: Engine) -> None:
    await engine.start(_app(throttle=tidings.Throttle(limit=1, period="1m",
                                                     key="event.data.user")))
    users = [f"u{i}" for i in range(20)]
    await engine.send(*[{"name": "go", "data": {"user": u}} for u in users * 2])
    await engine.drain()
    assert sorted(await _statuses(engine)) == [COMPLETED] * 20 + [QUEUED] * 20
    engine.clock.advance(60_001)
    await engine.drain()
    assert await _statuses(engine) == [COMPLETED] * 40


async def test_throttle_period_rollover_refills(engine: Engine) -> None:
    await engine.start(_app(throttle=tidings.Throttle(limit=2, period="10s", burst=2)))
    await engine.send({"name": "go"}, {"name": "go"})
    await engine.drain()
    engine.clock.advance(10_000)
    await engine.send({"name": "go"}, {"name": "go"})
    await engine.drain()
    assert await _statuses(engine) == [COMPLETED] * 4


async def test_rate_limit_skips_runs_over_it_and_says_so_on_the_event(engine: Engine) -> None:
    await engine.start(_app(rate_limit=tidings.RateLimit(limit=2, period="1m")))
    ids = await engine.send(*[{"name": "go", "data": {"n": n}} for n in range(3)])
    await engine.drain()
    assert await _statuses(engine) == [COMPLETED] * 2  # at the limit; one over is skipped
    skipped = (await engine.get(f"/v1/events/{ids[2]}"))["skipped"]
    assert [(s["function"], s["reason"]) for s in skipped] == [("app-f", "rate_limited")]
    assert (await engine.get(f"/v1/events/{ids[0]}"))["skipped"] == []
    engine.clock.advance(50_000)
    await engine.send({"name": "go"})
    await engine.drain()
    assert len(await engine.runs()) == 2  # still in the window
    engine.clock.advance(10_000)  # the window rolls over
    await engine.send({"name": "go"}, {"name": "go"}, {"name": "go"})
    await engine.drain()
    assert await _statuses(engine) == [COMPLETED] * 4


async def test_rate_limit_per_key(engine: Engine) -> None:
    await engine.start(_app(rate_limit=tidings.RateLimit(limit=1, period="1h",
                                                        key="event.data.user")))
    await engine.send(*[{"name": "go", "data": {"user": f"u{i % 50}"}} for i in range(150)])
    await engine.drain()
    runs = await engine.runs()
    assert len(runs) == 50


def test_gcra_and_window_arithmetic() -> None:
    # burst 3 of 3 per 60 s: three at once, the fourth 20 s later
    tat = 0
    for _ in range(3):
        decision = gcra(tat, 1000, limit=3, period_ms=60_000, burst=3)
        assert decision.allowed
        tat = decision.state[0]
    refused = gcra(tat, 1000, limit=3, period_ms=60_000, burst=3)
    assert not refused.allowed and refused.retry_at == 21_000
    assert gcra(tat, 21_000, limit=3, period_ms=60_000, burst=3).allowed
    # a window of 2: the third is refused until the window ends
    state = (0, 0)
    for at in (5, 6):
        decision = window(*state, at, limit=2, period_ms=100)
        assert decision.allowed
        state = decision.state
    assert not window(*state, 104, limit=2, period_ms=100).allowed
    assert window(*state, 105, limit=2, period_ms=100).state == (105, 1)


@pytest.mark.parametrize(("flow", "words"), [
    ({"rate_limit": tidings.RateLimit(limit=1, period="25h")}, "at most 1d"),
    ({"rate_limit": tidings.RateLimit(limit=0, period="1h")}, "at least 1"),
    ({"throttle": tidings.Throttle(limit=1, period="1s", burst=0)}, "burst: at least 1"),
    ({"throttle": tidings.Throttle(limit=1, period="8d")}, "at most 1w"),
])
def test_bad_rates_are_refused(flow: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        _app(**flow)


async def test_invoking_a_rate_limited_function_fails_the_step(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")

    @client.function(id="once", trigger=tidings.TriggerEvent(event="never"),
                     rate_limit=tidings.RateLimit(limit=1, period="1h", key="event.data.user"))
    async def once(ctx: tidings.Context) -> Any:
        return ctx.event.data["user"]

    @client.function(id="caller", trigger=tidings.TriggerEvent(event="go"))
    async def caller(ctx: tidings.Context) -> Any:
        try:
            return await ctx.step.invoke("call", function=once,
                                         data={"user": ctx.event.data["user"]})
        except tidings.StepError as exc:
            return f"{exc.name}: {exc}"

    await engine.start(client)
    for user in ("ana", "ana", "bob"):
        await engine.send({"name": "go", "data": {"user": user}})
        await engine.drain()
    callers = [r for r in await engine.runs() if r.parent_run_id is None]
    assert [r.output for r in callers] == ["ana", "RateLimited: invoked function is rate limited",
                                           "bob"]
