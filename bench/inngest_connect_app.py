"""P7's Connect worker: P3's function (one no-op step) written with the official ``inngest``
Python SDK, served over Connect (``connect()``: the worker dials out to the gateway, no HTTP
server of its own). ``bench.p7_http`` runs it in a process of its own:

    INNGEST_DEV=1 INNGEST_BASE_URL=http://127.0.0.1:8288 python -m bench.inngest_connect_app

The function's id is ``bench-connect-p3-noop`` and it listens to the same event as the native
and HTTP ones, so every target of P7 gets the same requests.
"""

from __future__ import annotations

import asyncio
import logging

import inngest
from inngest.connect import connect

logger = logging.getLogger("bench.inngest_connect_app")
logger.setLevel(logging.WARNING)
client = inngest.Inngest(app_id="bench-connect", logger=logger)


def _noop() -> None:
    return None


@client.create_function(fn_id="p3-noop", trigger=inngest.TriggerEvent(event="bench/p3.noop"),
                        retries=0)
async def p3_noop(ctx: inngest.Context) -> None:
    """One no-op step, as ``bench.apps.p3_noop``."""
    await ctx.step.run("noop", _noop)


if __name__ == "__main__":
    asyncio.run(connect([(client, [p3_noop])], instance_id="bench-connect").start())
