"""Functions written with the official ``inngest`` Python SDK for the driver scenarios
(``test_inngest_py_driver.py``): parallel groups and the steps after them, a race group,
``step.ai.infer``. Each function notes what its code saw in ``SEEN`` (how many requests reached
it, the order its steps ran in), which ``GET /seen`` answers.

``PROVIDER_URL`` is the inference provider the ``infer`` functions talk to, ``PROVIDER_KEY`` its
key.
``streaming_app`` serves the ``streamed`` function with ``streaming=FORCE`` (answers ``201`` and
streams them), for the scenario behind an HTTP/1.0 proxy.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import defaultdict
from typing import Any

import fastapi
import inngest
import inngest.fast_api
from inngest.experimental import ai

PROVIDER = os.environ.get("PROVIDER_URL", "http://127.0.0.1:9")
AUTH_KEY = os.environ.get("PROVIDER_KEY", "")
SEEN: dict[str, list[Any]] = defaultdict(list)

client = inngest.Inngest(app_id="parity", logger=logging.getLogger("parity"))


def noted(fn_id: str, what: Any) -> None:
    SEEN[fn_id].append(what)


@client.create_function(fn_id="group-then-two", retries=0,
                        trigger=inngest.TriggerEvent(event="parity/group-then-two"))
async def group_then_two(ctx: inngest.Context) -> dict[str, Any]:
    noted("group-then-two", "request")

    async def one() -> int:
        return 1

    async def two() -> int:
        return 2

    pair = await ctx.group.parallel((lambda: ctx.step.run("p1", one),
                                     lambda: ctx.step.run("p2", two)))
    first = await ctx.step.run("first", lambda: "A")
    second = await ctx.step.run("second", lambda: "B")
    return {"pair": list(pair), "first": first, "second": second}


@client.create_function(fn_id="race", retries=0, trigger=inngest.TriggerEvent(event="parity/race"))
async def race(ctx: inngest.Context) -> None:
    noted("race-requests", "request")

    def mark(name: str, pause: float = 0.0) -> Any:
        async def step() -> str:
            await asyncio.sleep(pause)
            noted("race", name)
            return name
        return step

    async def fast() -> None:
        await ctx.step.run("a.1", mark("a.1"))
        await ctx.step.run("a.2", mark("a.2"))

    async def slow() -> None:
        await ctx.step.run("b.1", mark("b.1", 1.0))
        await ctx.step.run("b.2", mark("b.2", 1.0))

    await ctx.group.parallel((fast, slow), parallel_mode=inngest.ParallelMode.RACE)


def _adapter(path: str) -> ai.anthropic.Adapter:
    return ai.anthropic.Adapter(auth_key=AUTH_KEY, base_url=f"{PROVIDER}{path}",
                                headers={"x-my-header": "my-value",
                                         "anthropic-version": "2023-06-01"},
                                model="claude-parity")


class _NotHttp:
    """An adapter whose URL is nothing Tidings may request."""

    def auth_key(self) -> str:
        return AUTH_KEY

    def format(self) -> str:
        return "openai-chat"

    def headers(self) -> dict[str, str]:
        return {}

    def on_call(self, body: dict[str, object]) -> None:
        pass

    def url_infer(self) -> str:
        return "file:///etc/passwd"


@client.create_function(fn_id="infer", retries=2,
                        trigger=inngest.TriggerEvent(event="parity/infer"))
async def infer(ctx: inngest.Context) -> dict[str, Any]:
    # ``path`` picks the provider's behaviour (see the test's stand-in).
    path = ctx.event.data.get("path", "/v1")
    answer = await ctx.step.ai.infer("ask", adapter=_adapter(path),
                                     body=dict(ctx.event.data["prompt"]))
    after = await ctx.step.run("after", lambda: "done")
    return {"answer": answer, "after": after}


@client.create_function(fn_id="infer-nowhere", retries=3,
                        trigger=inngest.TriggerEvent(event="parity/infer-nowhere"))
async def infer_nowhere(ctx: inngest.Context) -> str:
    try:
        await ctx.step.ai.infer("ask", adapter=_NotHttp(),  # type: ignore[arg-type]
                                body=dict(ctx.event.data["prompt"]))
    except inngest.StepError as exc:
        return f"{exc.name}: {exc.message}"
    return "unreachable"


functions = [group_then_two, race, infer, infer_nowhere]
app = fastapi.FastAPI()
inngest.fast_api.serve(app, client, functions)


@app.get("/seen")
def seen() -> dict[str, list[Any]]:
    return SEEN


streaming_client = inngest.Inngest(app_id="parity-streaming",
                                   logger=logging.getLogger("parity-streaming"))


@streaming_client.create_function(fn_id="streamed", retries=0,
                                  trigger=inngest.TriggerEvent(event="parity/streamed"))
async def streamed(ctx: inngest.Context) -> str:
    step = await ctx.step.run("step", lambda: "stepped")
    await asyncio.sleep(0.2)
    return f"Hi, {step}"


streaming_app = fastapi.FastAPI()
inngest.fast_api.serve(streaming_app, streaming_client, [streamed],
                       streaming=inngest.Streaming.FORCE)
