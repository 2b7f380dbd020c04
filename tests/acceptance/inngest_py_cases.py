"""Functions written with the official ``inngest`` Python SDK for the cases where Tidings must
behave exactly as Inngest does (tests/acceptance/test_inngest_py_parity.py): large state read
through the API, retries per step, errors kept whole, invocations that fail or time out. Served
by FastAPI; ``GET /executions`` tells how often each step body ran in this process.

    INNGEST_DEV=1 INNGEST_BASE_URL=http://127.0.0.1:8288 \\
        uvicorn tests.acceptance.inngest_py_cases:app --port 8000
"""

from __future__ import annotations

import collections
import logging
from datetime import timedelta
from typing import Any

import fastapi
import inngest
import inngest.fast_api

client = inngest.Inngest(app_id="py-cases", logger=logging.getLogger("py-cases"))
executions: collections.Counter[str] = collections.Counter()


def ran(name: str) -> int:
    """Count one execution of ``name``; how many there were before it."""
    executions[name] += 1
    return executions[name] - 1


@client.create_function(fn_id="big-steps", retries=0,
                        trigger=inngest.TriggerEvent(event="cases/big"))
def big_steps(ctx: inngest.ContextSync) -> int:
    # Ten 1 MiB outputs: from the fifth step on, a call's state passes 4 MiB and the SDK reads
    # the steps through GET /v0/runs/{id}/actions (use_api).
    def big(name: str) -> str:
        ran(name)
        return "a" * (1 << 20)

    for i in range(10):
        ctx.step.run(f"big-{i}", big, f"big-{i}")
    return 10


@client.create_function(fn_id="two-flaky-steps", retries=1,
                        trigger=inngest.TriggerEvent(event="cases/flaky"))
def two_flaky_steps(ctx: inngest.ContextSync) -> list[Any]:
    """With one retry: a step that fails once, and the function failing once after it and
    once after the next step. Inngest counts attempts per step and per stretch between steps
    (its queue items), so this completes."""

    def once(name: str) -> str:
        if ran(name) == 0:
            raise RuntimeError(f"{name}: first try fails")
        return name

    a = ctx.step.run("a", once, "a")
    once("after a")
    b = ctx.step.run("b", lambda: "b")
    once("after b")
    return [a, b, ctx.attempt]


class MyError(Exception):
    pass


def report(ctx: inngest.ContextSync) -> Any:
    return ctx.event.data["error"]


@client.create_function(fn_id="change-error", retries=0, on_failure=report,
                        trigger=inngest.TriggerEvent(event="cases/change-error"))
def change_error(ctx: inngest.ContextSync) -> None:
    def foo() -> None:
        raise ValueError("foo")

    try:
        ctx.step.run("foo", foo)
    except inngest.StepError as exc:
        raise MyError("I am new") from exc


@client.create_function(fn_id="echo", trigger=inngest.TriggerEvent(event="cases/never"))
def echo(ctx: inngest.ContextSync) -> dict[str, Any]:
    return {"data": ctx.event.data}


@client.create_function(fn_id="sleeper", trigger=inngest.TriggerEvent(event="cases/never"))
def sleeper(ctx: inngest.ContextSync) -> None:
    ctx.step.sleep("long", timedelta(hours=1))


@client.create_function(fn_id="invoker", retries=0,
                        trigger=inngest.TriggerEvent(event="cases/invoke"))
def invoker(ctx: inngest.ContextSync) -> None:
    echoed = ctx.step.invoke("echo", function=echo, data={"x": 1})
    try:
        ctx.step.invoke_by_id("missing", app_id="py-cases", function_id="nope")
    except inngest.StepError as exc:
        missing = {"name": exc.name, "message": exc.message, "echoed": echoed}
        ctx.step.run("note", lambda: missing)
    # Times out: the run fails with the SDK's error for it.
    ctx.step.invoke("slow", function=sleeper, timeout=timedelta(seconds=1))


app = fastapi.FastAPI()
inngest.fast_api.serve(app, client, [big_steps, two_flaky_steps, change_error, echo, sleeper,
                                     invoker])


@app.get("/executions")
def counts() -> dict[str, int]:
    return dict(executions)
