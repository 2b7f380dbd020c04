"""An event built to make a CEL expression's cost explode (a 100,000-item list against ``map``
and ``filter``) is routed at once: the costly expressions are not evaluated — no match for a
trigger or a wait, the empty key for a key — and say so in the log, naming the function or run
and the event; everything else about the event happens as usual."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import tidings
from tests.engine.conftest import Engine
from tidings.runs.model import COMPLETED, WAITING

HUGE = list(range(100_000))
MAPPED = "event.data.items.map(i, i * 2).exists(x, x == 4)"


def app() -> tidings.Tidings:
    client = tidings.Tidings(app_id="app")

    @client.function(id="mapper", trigger=tidings.TriggerEvent(event="load", if_=MAPPED))
    async def mapper(ctx: tidings.Context) -> Any:
        return len(ctx.event.data["items"])

    @client.function(id="plain", trigger=tidings.TriggerEvent(
        event="load", if_="event.data.items.exists(i, i == 2)"))
    async def plain(ctx: tidings.Context) -> Any:
        return len(ctx.event.data["items"])

    @client.function(id="keyed", trigger=tidings.TriggerEvent(event="load"),
                     rate_limit=tidings.RateLimit(
                         limit=10, period="1h", key="event.data.items.filter(i, i > 1)"))
    async def keyed(ctx: tidings.Context) -> Any:
        return len(ctx.event.data["items"])

    @client.function(id="waiter", trigger=tidings.TriggerEvent(event="start"))
    async def waiter(ctx: tidings.Context) -> Any:
        got = await ctx.step.wait_for_event(
            "load", event="load", timeout="1h",
            if_="async.data.items.filter(i, i == event.data.want).size() > 0")
        return len(got.data["items"]) if got else None

    return client


async def test_a_huge_list_is_routed_without_evaluating_the_costly_expressions(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tidings.router")
    await engine.start(app())
    await engine.send({"name": "start", "data": {"want": 2}})
    await engine.drain()

    (huge_id,) = await engine.send({"name": "load", "data": {"items": HUGE}})
    await engine.drain()

    runs = {(await engine.get(f"/v1/runs/{r.id}"))["function"]: r for r in await engine.runs()}
    assert {slug: r.output for slug, r in runs.items() if r.status == COMPLETED} == {
        "app-plain": len(HUGE), "app-keyed": len(HUGE)}  # the key is empty, the run starts
    assert runs["app-waiter"].status == WAITING
    refused = [r.getMessage() for r in caplog.records if "is not evaluated" in r.getMessage()]
    assert any(m.startswith(f"function app-mapper: event {huge_id}: ") for m in refused)
    assert any(m.startswith(f"function app-keyed: event {huge_id}: ") for m in refused)
    assert any(m.startswith(f"run {runs['app-waiter'].id} (wait load): event {huge_id}: ")
               for m in refused)
    assert all("TIDINGS_EXPRESSION_MAX_COST" in m for m in refused)
    assert len(refused) == 3  # once each

    # The same expressions over a list of usual size match as before.
    await engine.send({"name": "load", "data": {"items": [1, 2, 3]}})
    await engine.settle()
    outputs = sorted((slug, r.output) for slug, r in [
        ((await engine.get(f"/v1/runs/{r.id}"))["function"], r) for r in await engine.runs()]
        if r.status == COMPLETED)
    assert outputs == [("app-keyed", 3), ("app-keyed", len(HUGE)), ("app-mapper", 3),
                       ("app-plain", 3), ("app-plain", len(HUGE)), ("app-waiter", 3)]
    assert len([r for r in caplog.records if "is not evaluated" in r.getMessage()]) == 3
