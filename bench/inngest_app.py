"""P7's SDK app: P3's function (one no-op step) written with the official ``inngest`` Python
SDK and served by FastAPI, as a team would write it, and ``p7-parallel`` (a parallel group of
two no-op steps, then two more steps, one after the other). ``GET /requests`` says how many
calls the app has answered. ``bench.p7_http`` runs it under uvicorn
(uvloop, httptools, access log off) in its own process, synced with ``tidings dev -u URL``:

    INNGEST_DEV=1 INNGEST_BASE_URL=http://127.0.0.1:8288 \\
        uvicorn bench.inngest_app:app --port 8000 --no-access-log

The function's id is ``bench-sdk-p3-noop`` (the SDK prefixes the app id) and it listens to the
same event as the native one, so both targets of P7 get the same requests;
``bench-sdk-p7-parallel`` listens to ``bench/p7.parallel``.
"""

from __future__ import annotations

import logging
from typing import Any

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


@client.create_function(fn_id="p7-parallel",
                        trigger=inngest.TriggerEvent(event="bench/p7.parallel"), retries=0)
async def p7_parallel(ctx: inngest.Context) -> None:
    """A parallel group of two no-op steps, then two no-op steps in turn."""
    await ctx.group.parallel((lambda: ctx.step.run("left", _noop),
                              lambda: ctx.step.run("right", _noop)))
    await ctx.step.run("then", _noop)
    await ctx.step.run("last", _noop)


api = fastapi.FastAPI()
inngest.fast_api.serve(api, client, [p3_noop, p7_parallel])


class _Counted:
    """The app, counting the calls (``POST``) it answers: a bare ASGI wrapper, costing next to
    nothing per call."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            self.calls += 1
        await self.inner(scope, receive, send)


app = _Counted(api)


@api.get("/requests")
def requests() -> dict[str, int]:
    return {"calls": app.calls}
