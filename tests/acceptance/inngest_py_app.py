"""An app written with the official ``inngest`` Python SDK (0.5.x) and served by FastAPI, as a
team would write it: nothing in it knows about Tidings. The acceptance tests run it under
uvicorn in a subprocess; the environment (``INNGEST_DEV``, ``INNGEST_BASE_URL``,
``INNGEST_SIGNING_KEY``, ``INNGEST_EVENT_KEY``) decides whether it talks to ``tidings dev`` or
``tidings serve``, and ``DEPLOY_BRANCH`` (given to the client as ``env=``) which branch
environment it belongs to.

    INNGEST_DEV=1 INNGEST_BASE_URL=http://127.0.0.1:8288 \\
        uvicorn tests.acceptance.inngest_py_app:app --port 8000
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

import fastapi
import inngest
import inngest.fast_api

client = inngest.Inngest(app_id="py-app", logger=logging.getLogger("py-app"),
                         env=os.environ.get("DEPLOY_BRANCH") or None)


@client.create_function(fn_id="double", trigger=inngest.TriggerEvent(event="py/double"))
def double(ctx: inngest.ContextSync) -> dict[str, Any]:
    return {"y": ctx.event.data["x"] * 2}


@client.create_function(fn_id="flow", trigger=inngest.TriggerEvent(event="py/flow"))
async def flow(ctx: inngest.Context) -> dict[str, Any]:
    step = ctx.step
    first = await step.run("first", lambda: "A")
    await step.sleep("nap", timedelta(seconds=1))
    approval = await step.wait_for_event(
        "approval", event="py/approved", if_exp="event.data.id == async.data.id",
        timeout=timedelta(minutes=2))
    doubled = await step.invoke("call-double", function=double, data={"x": 21})
    sent = await step.send_event("send-it", inngest.Event(name="py/followup",
                                                           data={"from": ctx.run_id}))

    async def one() -> int:
        return 1

    async def two() -> int:
        return 2

    pair = await ctx.group.parallel((lambda: step.run("p1", one), lambda: step.run("p2", two)))
    after = await step.run("after", lambda: "done")
    return {"first": first, "approved_by": approval.data["by"] if approval else None,
            "doubled": doubled, "sent": len(sent), "parallel": list(pair), "after": after,
            "attempt": ctx.attempt}


@client.create_function(fn_id="call-native", trigger=inngest.TriggerEvent(event="py/call-native"))
def call_native(ctx: inngest.ContextSync) -> dict[str, Any]:
    # A function of another app (on Tidings, a native one) invoked by its id.
    tripled = ctx.step.invoke_by_id("call-triple", app_id="native-app", function_id="triple",
                                    data={"x": 4})
    return {"tripled": tripled}


@client.create_function(fn_id="followup", trigger=inngest.TriggerEvent(event="py/followup"))
def followup(ctx: inngest.ContextSync) -> dict[str, Any]:
    return {"from": ctx.event.data["from"]}


@client.create_function(fn_id="flaky", retries=3, trigger=inngest.TriggerEvent(event="py/flaky"))
def flaky(ctx: inngest.ContextSync) -> dict[str, Any]:
    if ctx.attempt < 2:
        raise RuntimeError(f"failing on attempt {ctx.attempt}")
    return {"succeeded_on_attempt": ctx.attempt}


@client.create_function(fn_id="wobbly", retries=3, trigger=inngest.TriggerEvent(event="py/wobbly"))
def wobbly(ctx: inngest.ContextSync) -> dict[str, Any]:
    before = ctx.step.run("before", lambda: "steady")

    def shaky() -> str:
        if ctx.attempt < 2:
            raise ValueError(f"step failing on attempt {ctx.attempt}")
        return f"ok on attempt {ctx.attempt}"

    return {"before": before, "shaky": ctx.step.run("shaky", shaky)}


@client.create_function(fn_id="bulky", trigger=inngest.TriggerEvent(event="py/bulky"))
def bulky(ctx: inngest.ContextSync) -> dict[str, Any]:
    # Over 4 MiB of memoized state: the call says use_api and the SDK fetches it from the API.
    a = ctx.step.run("a", lambda: "a" * 3_000_000)
    b = ctx.step.run("b", lambda: "b" * 2_000_000)
    return {"a": len(a), "b": len(b), "events": len(ctx.events)}


def handle_failure(ctx: inngest.ContextSync) -> dict[str, Any]:
    data = ctx.event.data
    return {"event": ctx.event.name, "function_id": data["function_id"],
            "original": data["event"]["name"], "error": data["error"]["message"]}


@client.create_function(fn_id="doomed", trigger=inngest.TriggerEvent(event="py/doomed"),
                        on_failure=handle_failure)
def doomed(ctx: inngest.ContextSync) -> None:
    raise inngest.NonRetriableError("stop now")


@client.create_function(fn_id="ticker", trigger=inngest.TriggerCron(cron="* * * * *"))
def ticker(ctx: inngest.ContextSync) -> dict[str, Any]:
    return {"cron": ctx.event.data.get("cron"), "event": ctx.event.name}


@client.create_function(
    fn_id="shaped", trigger=inngest.TriggerEvent(event="py/shaped"),
    rate_limit=inngest.RateLimit(limit=1, period=timedelta(hours=1), key="event.data.user"),
    concurrency=[inngest.Concurrency(limit=1, key="event.data.user")],
    cancel=[inngest.Cancel(event="py/stop", if_exp="event.data.user == async.data.user")])
async def shaped(ctx: inngest.Context) -> dict[str, Any]:
    # Flow control as the SDK registers it: one run per user an hour, one at a time, and a
    # py/stop for the same user cancels it while it sleeps.
    await ctx.step.sleep("nap", timedelta(seconds=2))
    return {"user": ctx.event.data["user"]}


@client.create_function(fn_id="batched", trigger=inngest.TriggerEvent(event="py/batched"),
                        batch_events=inngest.Batch(max_size=3, timeout=timedelta(seconds=30)))
def batched(ctx: inngest.ContextSync) -> dict[str, Any]:
    return {"n": [e.data["n"] for e in ctx.events]}


app = fastapi.FastAPI()
inngest.fast_api.serve(app, client, [double, flow, call_native, followup, flaky, wobbly, bulky,
                                     doomed, ticker, shaped, batched])
