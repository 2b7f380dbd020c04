"""The function ``bench.crash`` kills processes under: three steps, each leaving a side effect.

Each step appends ``run step token`` to the file ``TIDINGS_BENCH_EFFECTS`` names, with a fresh
token, and returns the token: the token recorded as the step's output says which execution
was the one recorded, and a line after it would be the step running again.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import tidings

client = tidings.Tidings(app_id="crash")


def effect(run_id: str, step: str) -> str:
    token = uuid.uuid4().hex
    fd = os.open(os.environ["TIDINGS_BENCH_EFFECTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                 0o644)
    try:
        os.write(fd, f"{run_id} {step} {token}\n".encode())
    finally:
        os.close(fd)
    return token


@client.function(id="three", trigger=tidings.TriggerEvent(event="crash/go"))
async def three(ctx: tidings.Context) -> Any:
    return [await ctx.step.run(step, effect, ctx.run_id, step) for step in ("one", "two", "three")]
