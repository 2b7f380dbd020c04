"""A worker written with the official ``inngest`` Python SDK that serves its functions over
Connect: it dials out to the server's gateway (``connect()``) and listens on no port. The
environment decides where the server is (``INNGEST_DEV``, ``INNGEST_BASE_URL`` or
``INNGEST_API_BASE_URL``, ``INNGEST_SIGNING_KEY``), ``WORKER_ID`` its instance id,
``WORKER_CONCURRENCY`` its ``max_worker_concurrency``. Every step that runs is written to
``STEP_LOG`` (a file) as ``<worker>:<run id>:<step>:<unix time>``, so a test sees where and
when each ran. The long step of ``slow`` sleeps ``data.seconds``, then waits until the file
``data.gate`` exists, if one is named.

    INNGEST_DEV=1 INNGEST_BASE_URL=http://127.0.0.1:8288 \\
        python -m tests.acceptance.inngest_py_connect_app
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import timedelta
from typing import Any

import inngest
from inngest.connect import connect

WORKER = os.environ.get("WORKER_ID", "worker")
client = inngest.Inngest(app_id="py-connect", logger=logging.getLogger("py-connect"))


def note(ctx: inngest.Context, step: str) -> None:
    path = os.environ.get("STEP_LOG")
    if path:
        with open(path, "a") as log:
            log.write(f"{WORKER}:{ctx.run_id}:{step}:{time.time()}\n")


async def opened(gate: str) -> None:
    """Until the file ``gate`` exists: the test opens it."""
    while True:
        if await asyncio.to_thread(os.path.exists, gate):
            return
        await asyncio.sleep(0.05)


@client.create_function(fn_id="flow", trigger=inngest.TriggerEvent(event="connect/flow"))
async def flow(ctx: inngest.Context) -> dict[str, Any]:
    async def first() -> str:
        note(ctx, "first")
        return "A"

    value = await ctx.step.run("first", first)
    await ctx.step.sleep("nap", timedelta(seconds=1))
    approval = await ctx.step.wait_for_event(
        "approval", event="connect/approved", if_exp="event.data.id == async.data.id",
        timeout=timedelta(minutes=2))
    return {"first": value, "approved_by": approval.data["by"] if approval else None,
            "worker": WORKER}


@client.create_function(fn_id="slow", trigger=inngest.TriggerEvent(event="connect/slow"))
async def slow(ctx: inngest.Context) -> dict[str, Any]:
    async def recorded() -> str:
        note(ctx, "recorded")
        return WORKER

    first = await ctx.step.run("recorded", recorded)

    async def long() -> str:
        note(ctx, "long-start")
        if ctx.event.data.get("slow_on") in (None, WORKER):
            await asyncio.sleep(float(ctx.event.data.get("seconds", 0)))
        gate = ctx.event.data.get("gate")
        if gate:
            await opened(gate)
        note(ctx, "long-end")
        return WORKER

    second = await ctx.step.run("long", long)
    return {"recorded_by": first, "long_by": second}


async def main() -> None:
    limit = os.environ.get("WORKER_CONCURRENCY")
    await connect([(client, [flow, slow])], instance_id=WORKER,
                  max_worker_concurrency=int(limit) if limit else None).start()


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"))
    asyncio.run(main())
