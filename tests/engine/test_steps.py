"""Steps: memoized results, numbering, sleeps, sends, invokes, parallel groups, sync handlers."""

from __future__ import annotations

import collections
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic

import tidings
from tests.engine.conftest import Engine
from tidings.runs import store
from tidings.runs.model import COMPLETED, FAILED, SLEEPING, StepRecord


async def test_recorded_steps_never_run_again(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")
    effects: collections.Counter[str] = collections.Counter()

    def effect(name: str) -> str:
        effects[name] += 1
        return name.upper()

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"))
    async def f(ctx: tidings.Context) -> Any:
        a = await ctx.step.run("a", effect, "a")
        await ctx.step.sleep("nap", timedelta(minutes=5))
        b = await ctx.step.run("b", effect, "b")
        await ctx.step.sleep("nap", "1h")
        again = await ctx.step.run("a", effect, "a-again")
        return [a, b, again, ctx.run_id == ctx.run_id]

    await engine.start(client)
    await engine.send({"name": "go"})
    await engine.drain()
    (run,) = await engine.runs()
    assert run.status == SLEEPING
    assert run.due_at is not None and run.due_at >= engine.clock() + 4 * 60_000
    engine.clock.advance(5 * 60_000 + 1)
    await engine.drain()
    engine.clock.advance(3600_000 + 1)
    await engine.drain()
    run = await engine.run(run.id)
    assert run.status == COMPLETED
    assert run.output == ["A", "B", "A-AGAIN", True]
    assert effects == {"a": 1, "b": 1, "a-again": 1}
    steps = await engine.steps(run.id)
    assert [s.name for s in steps] == ["a", "nap", "b", "nap", "a"]


async def test_sleep_until(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")
    wake = datetime(2030, 1, 1, tzinfo=UTC)

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"))
    async def f(ctx: tidings.Context) -> str:
        await ctx.step.sleep_until("until", wake)
        return "awake"

    await engine.start(client)
    await engine.send({"name": "go"})
    await engine.drain()
    (run,) = await engine.runs()
    assert run.status == SLEEPING and run.due_at == int(wake.timestamp() * 1000)


async def test_send_event_is_memoized(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")

    @client.function(id="sender", trigger=tidings.TriggerEvent(event="go"))
    async def sender(ctx: tidings.Context) -> list[str]:
        ids = await ctx.step.send_event("send", [tidings.Event(name="next", data={"n": 1})])
        await ctx.step.sleep("nap", "1s")
        return ids

    @client.function(id="receiver", trigger=tidings.TriggerEvent(event="next"))
    async def receiver(ctx: tidings.Context) -> Any:
        return ctx.event.data

    await engine.start(client)
    await engine.send({"name": "go"})
    await engine.drain()
    engine.clock.advance(1001)
    await engine.drain()
    runs = await engine.runs()
    assert len(runs) == 2
    receiver_run = next(r for r in runs if r.output == {"n": 1})
    sender_run = next(r for r in runs if r is not receiver_run)
    assert sender_run.output == [receiver_run.event_id]


async def test_invoke_returns_the_result_or_raises(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")

    @client.function(id="double", trigger=tidings.TriggerEvent(event="never"))
    async def double(ctx: tidings.Context) -> int:
        return int(ctx.event.data["x"]) * 2

    @client.function(id="broken", trigger=tidings.TriggerEvent(event="never"), retries=0)
    async def broken(ctx: tidings.Context) -> int:
        raise ValueError("nope")

    @client.function(id="caller", trigger=tidings.TriggerEvent(event="go"))
    async def caller(ctx: tidings.Context) -> Any:
        result = await ctx.step.invoke("call", function=double, data={"x": 21})
        try:
            await ctx.step.invoke("fail", function="app-broken")
        except tidings.StepError as exc:
            failure = f"{exc.name}: {exc}"
        try:
            await ctx.step.invoke("missing", function="app-nope")
        except tidings.StepError as exc:
            missing = f"{exc.name}: {exc}"
        return [result, failure, missing]

    await engine.start(client)
    await engine.send({"name": "go"})
    await engine.drain()
    runs = await engine.runs()
    caller_run = next(r for r in runs if r.parent_run_id is None)
    assert caller_run.status == COMPLETED, caller_run
    # Inngest's words for a function that does not exist.
    assert caller_run.output == [42, "ValueError: nope",
                                 "Error: could not find function with ID: app-nope"]
    children = [r for r in runs if r.parent_run_id == caller_run.id]
    assert sorted(r.status for r in children) == [COMPLETED, FAILED]
    missing = next(s for s in await engine.steps(caller_run.id) if s.name == "missing")
    assert missing.status == "failed"


async def test_an_invoke_times_out_as_inngest_says_and_the_invoked_event_carries_inngest_data(
        engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")
    seen: list[dict[str, Any]] = []

    @client.function(id="slow", trigger=tidings.TriggerEvent(event="never"))
    async def slow(ctx: tidings.Context) -> None:
        seen.append(ctx.event.data)
        await ctx.step.sleep("long", "1h")

    @client.function(id="caller", trigger=tidings.TriggerEvent(event="go"), retries=0)
    async def caller(ctx: tidings.Context) -> Any:
        try:
            await ctx.step.invoke("ask", function=slow, data={"x": 1}, timeout=1000)
        except tidings.StepError as exc:
            return [exc.name, exc.message]
        return "unreachable"

    await engine.start(client)
    await engine.send({"name": "go"})
    await engine.drain()
    engine.clock.advance(1_001)
    await engine.drain()
    caller_run = next(r for r in await engine.runs() if r.parent_run_id is None)
    assert caller_run.output == ["InngestInvokeTimeoutError",
                                 "Timed out waiting for invoked function to complete"]
    [ask] = await engine.steps(caller_run.id)
    assert ask.status == "failed"
    assert ask.output["error"]["name"] == "InngestInvokeTimeoutError"
    [data] = seen
    assert data["x"] == 1
    meta = data["_inngest"]
    assert meta["fn_id"] == "app-slow" and meta["name"] == "ask"
    assert meta["correlation_id"] == f"{caller_run.id}.{ask.step}"
    assert meta["source_app_id"] == "app" and meta["source_fn_id"] == caller_run.function_id
    assert sorted(meta) == ["correlation_id", "expire", "fn_id", "gid", "name", "source_app_id",
                            "source_fn_id", "source_fn_v"]


async def test_parallel_and_repeated_step_ids(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"))
    async def f(ctx: tidings.Context) -> Any:
        pair = await ctx.step.parallel(lambda: ctx.step.run("p", lambda: 1),
                                       lambda: ctx.step.run("p", lambda: 2))
        three = await ctx.step.run("p", lambda: 3)
        return [*pair, three]

    await engine.start(client)
    await engine.send({"name": "go"})
    await engine.drain()
    (run,) = await engine.runs()
    assert run.output == [1, 2, 3]
    assert len({s.step for s in await engine.steps(run.id)}) == 3


class Invoice(pydantic.BaseModel):
    number: str
    total: float


async def test_sync_handlers_and_pydantic_outputs(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"))
    def f(ctx: tidings.Context) -> Any:
        invoice = ctx.step.run("make", lambda: Invoice(number="A-1", total=9.5),
                               output_type=Invoice)
        ctx.step.sleep("nap", 10)
        both = ctx.step.parallel(lambda: ctx.step.run("x", lambda: "x"),
                                 lambda: ctx.step.run("y", lambda: "y"))
        return {"invoice": invoice, "both": both, "type": type(invoice).__name__}

    await engine.start(client)
    await engine.send({"name": "go"})
    await engine.drain()
    engine.clock.advance(20)
    await engine.drain()
    (run,) = await engine.runs()
    assert run.status == COMPLETED
    assert run.output == {"invoice": {"number": "A-1", "total": 9.5}, "both": ["x", "y"],
                          "type": "Invoice"}


async def test_step_interrupts_cannot_be_swallowed(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"))
    async def f(ctx: tidings.Context) -> str:
        try:
            await ctx.step.sleep("nap", "1m")
        except Exception:
            return "swallowed"
        return "slept"

    await engine.start(client)
    await engine.send({"name": "go"})
    await engine.drain()
    engine.clock.advance(60_001)
    await engine.drain()
    (run,) = await engine.runs()
    assert run.output == "slept"


async def test_future_ts_starts_the_run_then(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"))
    async def f(ctx: tidings.Context) -> str:
        return "ran"

    await engine.start(client)
    await engine.send({"name": "go", "ts": engine.clock() + 3600_000})
    await engine.drain()
    (run,) = await engine.runs()
    assert run.status == "Queued"
    engine.clock.advance(3600_001)
    await engine.drain()
    assert (await engine.run(run.id)).output == "ran"


async def test_completions_written_together_keep_their_steps(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")

    @client.function(id="one", trigger=tidings.TriggerEvent(event="go"))
    async def one(ctx: tidings.Context) -> Any:
        return await ctx.step.run("double", lambda: ctx.event.data["n"] * 2)

    await engine.start(client)
    await engine.send(*({"name": "go", "data": {"n": n}} for n in range(20)))
    await engine.drain()
    runs = await engine.runs()
    assert len(runs) == 20 and {r.status for r in runs} == {COMPLETED}
    assert sorted(r.output for r in runs) == [n * 2 for n in range(20)]
    for r in runs:
        (step,) = await engine.steps(r.id)
        assert step.name == "double" and step.output == {"data": r.output}


async def test_completions_written_together_skip_a_run_whose_lease_was_lost(
        engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")

    @client.function(id="idle", trigger=tidings.TriggerEvent(event="later"))
    async def idle(ctx: tidings.Context) -> None:
        return None

    await engine.start(client)
    storage = engine.core.storage
    await engine.send({"name": "later"}, {"name": "later"})
    assert engine.runtime is not None
    await engine.runtime.router.flush()  # the runs exist, nobody runs them yet
    queue = (await engine.runs())[0].queue
    now = engine.clock()
    first, second = await storage.write(
        lambda tx: store.claim(tx, queue, "worker-a", now, 60_000, 10))
    await storage.write(lambda tx: store.release(tx, second.id, second.lease_token))
    (taken,) = await storage.write(lambda tx: store.claim(tx, queue, "worker-b", now, 60_000, 10))
    assert taken.id == second.id and taken.lease_token > second.lease_token

    record = [StepRecord("s", "s", 0, '{"data":1}', now, now)]
    await storage.write(lambda tx: store.complete_many(tx, [
        store.Completion(first, b"1", record, now), store.Completion(second, b"2", record, now)]))

    done, kept = await engine.run(first.id), await engine.run(second.id)
    assert done.status == COMPLETED and done.output == 1
    assert [s.output for s in await engine.steps(first.id)] == [{"data": 1}]
    assert kept.status != COMPLETED and kept.output is None
    assert await engine.steps(second.id) == []
