"""Failures: step retries, function retries, NonRetriableError, RetryAfterError, on_failure and
lifecycle events."""

from __future__ import annotations

import collections
from datetime import timedelta
from typing import Any

import tidings
from tests.engine.conftest import Engine
from tidings.runs.model import COMPLETED, FAILED


async def _settle(engine: Engine, rounds: int = 30, step_ms: int = 1_001) -> None:
    for _ in range(rounds):
        await engine.drain()
        engine.clock.advance(step_ms)
    await engine.drain()


async def test_a_failing_step_retries_alone(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")
    calls: collections.Counter[str] = collections.Counter()

    def flaky() -> str:
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise RuntimeError(f"attempt {calls['flaky']}")
        return "ok"

    def once() -> str:
        calls["once"] += 1
        return "first"

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"))
    async def f(ctx: tidings.Context) -> Any:
        first = await ctx.step.run("first", once)
        return [first, await ctx.step.run("flaky", flaky)]

    await engine.start(client)
    await engine.send({"name": "go"})
    await _settle(engine)
    (run,) = await engine.runs()
    assert run.status == COMPLETED and run.output == ["first", "ok"]
    assert calls == {"once": 1, "flaky": 3}
    assert run.attempt == 0
    flaky_step = next(s for s in await engine.steps(run.id) if s.name == "flaky")
    assert flaky_step.status == "completed"


async def test_a_step_out_of_retries_raises_step_error(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")
    calls: collections.Counter[str] = collections.Counter()

    def always() -> None:
        calls["always"] += 1
        raise KeyError("gone")

    @client.function(id="caught", trigger=tidings.TriggerEvent(event="go"), retries=2)
    async def caught(ctx: tidings.Context) -> Any:
        try:
            await ctx.step.run("always", always)
        except tidings.StepError as exc:
            return f"handled {exc.name}"
        return "unreachable"

    @client.function(id="uncaught", trigger=tidings.TriggerEvent(event="go2"), retries=1)
    async def uncaught(ctx: tidings.Context) -> Any:
        await ctx.step.run("boom", always)

    await engine.start(client)
    await engine.send({"name": "go"}, {"name": "go2"})
    await _settle(engine)
    runs = {r.output: r for r in await engine.runs() if r.status == COMPLETED}
    assert list(runs) == ["handled KeyError"]
    failed = [r for r in await engine.runs() if r.status == FAILED]
    assert len(failed) == 1 and failed[0].error["name"] == "KeyError"
    assert calls["always"] == 3 + 2


async def test_function_errors_retry_the_whole_call(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")
    attempts: list[int] = []

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"), retries=3)
    async def f(ctx: tidings.Context) -> Any:
        attempts.append(ctx.attempt)
        if ctx.attempt < 2:
            raise ValueError("not yet")
        return ctx.attempt

    @client.function(id="g", trigger=tidings.TriggerEvent(event="go"), retries=1)
    async def g(ctx: tidings.Context) -> Any:
        raise ValueError("never")

    await engine.start(client)
    await engine.send({"name": "go"})
    await _settle(engine)
    statuses = sorted((r.status, r.attempt) for r in await engine.runs())
    assert statuses == [(COMPLETED, 2), (FAILED, 1)]
    assert attempts == [0, 1, 2]


async def test_backoff_follows_the_table(core: Any) -> None:
    from tidings.engine.backoff import Backoff

    table = Backoff()
    assert 15_000 <= table.delay(1) <= 45_000
    assert 30_000 <= table.delay(2) <= 60_000
    assert 7_200_000 <= table.delay(30) <= 7_230_000
    assert Backoff.fixed(500).delay(9) == 500


async def test_non_retriable_and_retry_after(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")
    tries: collections.Counter[str] = collections.Counter()

    @client.function(id="stop", trigger=tidings.TriggerEvent(event="go"))
    async def stop(ctx: tidings.Context) -> Any:
        tries["stop"] += 1
        raise tidings.NonRetriableError("bad input")

    @client.function(id="later", trigger=tidings.TriggerEvent(event="later"))
    async def later(ctx: tidings.Context) -> Any:
        tries["later"] += 1
        if ctx.attempt == 0:
            raise tidings.RetryAfterError("rate limited", timedelta(minutes=10))
        return "done"

    await engine.start(client)
    await engine.send({"name": "go"}, {"name": "later"})
    await engine.drain()
    runs = {r.status for r in await engine.runs()}
    assert FAILED in runs
    waiting = next(r for r in await engine.runs() if r.status != FAILED)
    assert waiting.due_at is not None and waiting.due_at >= engine.clock() + 9 * 60_000
    engine.clock.advance(10 * 60_000 + 1)
    await engine.drain()
    assert (await engine.run(waiting.id)).output == "done"
    assert tries == {"stop": 1, "later": 2}


async def test_on_failure_and_lifecycle_events(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")
    seen: list[Any] = []

    async def handle_failure(ctx: tidings.Context) -> Any:
        seen.append(("failure", ctx.event.name, ctx.event.data["error"]["message"],
                     ctx.event.data["event"]["data"]))
        return "handled"

    @client.function(id="fragile", trigger=tidings.TriggerEvent(event="go"), retries=0,
                     on_failure=handle_failure)
    async def fragile(ctx: tidings.Context) -> Any:
        if ctx.event.data.get("fail"):
            raise RuntimeError("it broke")
        return "fine"

    @client.function(id="audit", triggers=[
        tidings.TriggerEvent(event="inngest/function.finished",
                             if_="event.data.function_id == 'app-fragile'")])
    async def audit(ctx: tidings.Context) -> Any:
        data = ctx.event.data
        seen.append(("finished", data.get("result"), "error" in data))
        return None

    await engine.start(client)
    await engine.send({"name": "go", "data": {"fail": True}}, {"name": "go", "data": {}})
    await _settle(engine, rounds=5)
    assert sorted(map(str, seen)) == sorted(map(str, [
        ("failure", "tidings/function.failed", "it broke", {"fail": True}),
        ("finished", None, True),
        ("finished", "fine", False),
    ]))
    handler_runs = [r for r in await engine.runs() if r.output == "handled"]
    assert len(handler_runs) == 1


async def test_retries_count_per_step_and_per_position(engine: Engine) -> None:
    """As Inngest counts (an attempt per queue item, a new item once a step is recorded): a
    step's failures, and the function's own failures between two steps, count from 0 again
    after each step. So with ``retries=1`` a run whose first step and two stretches of code
    each fail once completes; a step that fails on its first try right after the function
    failed at the same point is out of attempts."""
    client = tidings.Tidings(app_id="app")
    failed: collections.Counter[str] = collections.Counter()
    attempts: list[int] = []

    def flaky(name: str) -> str:
        if failed[name] < 1:
            failed[name] += 1
            raise RuntimeError(f"{name} failed")
        return name

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"), retries=1)
    async def f(ctx: tidings.Context) -> Any:
        attempts.append(ctx.attempt)
        a = await ctx.step.run("a", flaky, "a")
        flaky("after a")
        b = await ctx.step.run("b", lambda: "b")
        flaky("after b")
        return [a, b]

    @client.function(id="g", trigger=tidings.TriggerEvent(event="go"), retries=1)
    async def g(ctx: tidings.Context) -> Any:
        flaky("before c")
        return await ctx.step.run("c", flaky, "c")

    await engine.start(client)
    await engine.send({"name": "go"})
    await _settle(engine)
    runs = {r.function_id: r for r in await engine.runs()}
    assert len(runs) == 2
    done = next(r for r in runs.values() if r.status == COMPLETED)
    assert done.output == ["a", "b"]
    assert done.attempt == 1  # the failures since its last step: "after b" once
    assert {s.name: (s.status, s.attempts) for s in await engine.steps(done.id)} == {
        "a": ("completed", 1), "b": ("completed", 0)}
    # ctx.attempt of each call: a fails; its retry (1) passes, then "after a" fails; the
    # function's retry (1) passes b, then "after b" fails; its retry (1) completes.
    assert attempts == [0, 1, 1, 1]
    out_of_attempts = next(r for r in runs.values() if r.status == FAILED)
    [c] = await engine.steps(out_of_attempts.id)
    assert (c.name, c.status, c.attempts) == ("c", "failed", 2)


async def test_native_errors_keep_their_cause_and_notes(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")
    seen: list[Any] = []

    def charge() -> None:
        try:
            raise ConnectionError("card network down")
        except ConnectionError as exc:
            error = RuntimeError("charge failed")
            error.add_note("card ending 4242")
            raise error from exc

    async def report(ctx: tidings.Context) -> None:
        seen.append(ctx.event.data["error"])

    @client.function(id="pay", trigger=tidings.TriggerEvent(event="go"), retries=0,
                     on_failure=report)
    async def pay(ctx: tidings.Context) -> Any:
        try:
            await ctx.step.run("charge", charge)
        except tidings.StepError as exc:
            seen.append(exc.cause)
            raise

    await engine.start(client)
    await engine.send({"name": "go"})
    await _settle(engine, rounds=3)
    run = next(r for r in await engine.runs() if r.status == FAILED)
    cause = {"name": "ConnectionError", "message": "card network down"}
    [step] = await engine.steps(run.id)
    assert step.output["error"]["cause"] == cause
    assert step.output["error"]["notes"] == ["card ending 4242"]
    assert run.error["name"] == "RuntimeError" and run.error["cause"] == cause
    stepped, event_error = seen
    assert stepped == cause
    assert event_error["error"] == "RuntimeError: charge failed"
    assert (event_error["name"], event_error["message"]) == ("RuntimeError", "charge failed")
    assert event_error["cause"] == cause and "Traceback" in event_error["stack"]
