"""P7's SDK app: P3's function (one no-op step) written with the official ``inngest`` Python
SDK and served by FastAPI, as a team would write it. ``bench.p7_http`` runs it under uvicorn
(uvloop, httptools, access log off) in its own process, synced with ``tidings dev -u URL``:

    INNGEST_DEV=1 INNGEST_BASE_URL=http://127.0.0.1:8288 \\
        uvicorn bench.inngest_app:app --port 8000 --no-access-log

The function's id is ``bench-sdk-p3-noop`` (the SDK prefixes the app id) and it listens to the
same event as the native one, so both targets of P7 get the same requests.
"""

from __future__ import annotations

import logging

import fastapi
import inngest
import inngest.fast_api

logger = logging.getLogger("bench.inngest_app")
logger.setLevel(logging.WARNING)
client = inngest.Inngest(app_id="bench-sdk", logger=logger)


def _noop() -> None:
    return None


@client.create_function(fn_id="p3-noop", trigger=inngest.TriggerEvent(event="bench/p3.noop"),
                        retries=0)
async def p3_noop(ctx: inngest.Context) -> None:
    """One no-op step, as ``bench.apps.p3_noop``."""
    await ctx.step.run("noop", _noop)


app = fastapi.FastAPI()
inngest.fast_api.serve(app, client, [p3_noop])
