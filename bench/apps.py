"""The Tidings functions the engine benchmarks run (``tidings dev -a bench.apps:client``).

Every function that times something returns ``time.time()`` from a step: the value is recorded
as the step's output, so the benchmark reads it back from the database after the run.
"""

from __future__ import annotations

import time
from typing import Any

import tidings

client = tidings.Tidings("bench")
STEPS = 1000


def _noop() -> None:
    return None


@client.function(id="p3-noop", trigger=tidings.TriggerEvent(event="bench/p3.noop"), retries=0)
async def p3_noop(ctx: tidings.Context) -> None:
    """P3: one no-op step."""
    await ctx.step.run("noop", _noop)


@client.function(id="p4-start", trigger=tidings.TriggerEvent(event="bench/p4.start"),
                 retries=0)
async def p4_start(ctx: tidings.Context) -> None:
    """P4: the first step records when the function started."""
    await ctx.step.run("started", time.time)


@client.function(id="p5-steps", trigger=tidings.TriggerEvent(event="bench/p5.steps"),
                 retries=0)
async def p5_steps(ctx: tidings.Context) -> Any:
    """P5: ``data.steps`` (default 1,000) no-op steps; the first and the last record the time."""
    count = int(ctx.event.data.get("steps", STEPS))
    first = await ctx.step.run("s0", time.time)
    for index in range(1, count - 1):
        await ctx.step.run(f"s{index}", _noop)
    last = await ctx.step.run(f"s{count - 1}", time.time) if count > 1 else first
    return {"first": first, "last": last, "steps": count}


@client.function(id="p6-due", trigger=tidings.TriggerEvent(event="bench/p6.due"), retries=0)
async def p6_due(ctx: tidings.Context) -> None:
    """P6: a delayed event came due; the first step records when its run started."""
    await ctx.step.run("started", time.time)


@client.function(id="p6-sleeper", trigger=tidings.TriggerEvent(event="bench/p6.sleep"),
                 retries=0)
async def p6_sleeper(ctx: tidings.Context) -> None:
    """P6 (sleeping runs): sleep until ``data.until`` (ms), then record when the run woke."""
    await ctx.step.sleep_until("nap", int(ctx.event.data["until"]))
    await ctx.step.run("woke", time.time)


@client.function(id="p8-plain", trigger=tidings.TriggerEvent(event="bench/p8.plain"),
                 retries=0)
async def p8_plain(ctx: tidings.Context) -> None:
    """P8: one no-op step, no flow control (the baseline)."""
    await ctx.step.run("noop", _noop)


@client.function(id="p8-keyed", trigger=tidings.TriggerEvent(event="bench/p8.keyed"),
                 retries=0, concurrency=tidings.Concurrency(limit=1, key="event.data.key"))
async def p8_keyed(ctx: tidings.Context) -> None:
    """P8: the same step under a concurrency limit of 1 per ``data.key``."""
    await ctx.step.run("noop", _noop)
