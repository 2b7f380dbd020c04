"""The runs API over HTTP (in-process), on both backends: listing and reading runs, cancelling,
rerunning, replaying, and cancelling a delayed event's delivery. Functions run in drain mode
with a movable clock."""

from __future__ import annotations

import asyncio
import collections
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from starlette.applications import Starlette

import tidings
from tests.conftest import make_settings
from tests.engine.conftest import Clock, Engine
from tests.unit.helpers import app_client
from tidings.core import Core
from tidings.engine.executor import EngineSettings
from tidings.engine.runtime import Runtime
from tidings.events.model import iso
from tidings.events.parse import parse_events
from tidings.functions import registration
from tidings.ids import now_ms
from tidings.keys import create_key, ensure_env
from tidings.runs import admin, store
from tidings.runs.model import CANCELLED, COMPLETED, FAILED, RUNNING, SLEEPING, WAITING
from tidings.server import runs_api
from tidings.server.app import api_routes
from tidings.storage.base import EventRow

HOUR = 3_600_000


@pytest.fixture
async def engine(core: Core) -> Engine:
    return Engine(core, Clock(), [])


async def ok(reply: httpx.Response, status: int = 200) -> Any:
    assert reply.status_code == status, reply.text
    return reply.json()["data"]


def shop(state: dict[str, Any]) -> tidings.Tidings:
    """``charge`` fails while ``state["broken"]``; ``receipt`` always completes."""
    client = tidings.Tidings(app_id="shop")

    @client.function(id="charge", trigger=tidings.TriggerEvent(event="order/placed"), retries=0)
    async def charge(ctx: tidings.Context) -> Any:
        state["calls"] = state.get("calls", 0) + 1
        if state.get("broken"):
            raise RuntimeError("card declined")
        return {"order": ctx.event.data.get("order"), "user": ctx.event.user}

    @client.function(id="receipt", trigger=tidings.TriggerEvent(event="order/placed"))
    async def receipt(ctx: tidings.Context) -> Any:
        return "sent"

    return client


async def spread(engine: Engine, orders: range, gap_ms: int = 60_000) -> list[str]:
    """Send these orders ``gap_ms`` apart, running each; the event ids."""
    ids = []
    for order in orders:
        ids.extend(await engine.send({"name": "order/placed", "data": {"order": order}}))
        await engine.drain()
        engine.clock.advance(gap_ms)
    return ids


# -- listing -----------------------------------------------------------------------------------


async def test_runs_are_listed_newest_first_with_filters_and_pages(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    state = {"broken": True}
    await engine.start(shop(state))
    start = engine.clock()
    await spread(engine, range(2))
    state["broken"] = False
    await spread(engine, range(2, 4))

    everything = await ok(await client.get("/v1/runs"))
    charges = await ok(await client.get("/v1/runs", params={"function": "shop-charge"}))
    failed = await ok(await client.get("/v1/runs", params={"status": "Failed"}))
    either = await ok(await client.get("/v1/runs", params=[("status", "Failed,completed")]))
    repeated = await ok(await client.get("/v1/runs", params=[("status", "Failed"),
                                                             ("status", "Completed")]))
    window = await ok(await client.get("/v1/runs", params={
        "function": "shop-charge", "since": iso(start + 60_000), "until": start + 3 * 60_000}))

    assert len(everything) == 8
    assert [r["id"] for r in everything] == sorted((r["id"] for r in everything), reverse=True)
    assert [r["function"] for r in charges] == ["shop-charge"] * 4
    assert [(r["status"], r["output"]) for r in charges] == [
        (COMPLETED, {"order": 3, "user": {}}), (COMPLETED, {"order": 2, "user": {}}),
        (FAILED, None), (FAILED, None)]
    assert charges[3]["error"]["message"] == "card declined"
    assert {r["id"] for r in failed} == {r["id"] for r in charges[2:]}
    assert {r["id"] for r in either} == {r["id"] for r in everything}
    assert repeated == either
    assert [r["id"] for r in window] == [charges[1]["id"], charges[2]["id"]]
    run = charges[0]
    assert set(run) == {"id", "function", "status", "attempt", "event_id", "created_at",
                        "started_at", "ended_at", "due_at", "output", "error", "parent_run_id",
                        "parent_step", "rerun_of", "replay_id"}
    assert run["created_at"] <= run["started_at"] <= run["ended_at"]
    assert run["due_at"] is None

    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/runs", params=params)).json()
        seen.extend(r["id"] for r in page["data"])
        cursor = page["cursor"]
        if cursor is None:
            break
    assert seen == [r["id"] for r in everything]


@pytest.mark.parametrize(("params", "words"), [
    ({"status": "Done"}, "status"),
    ({"status": "Failed,,Nope"}, "'Nope'"),
    ({"limit": "0"}, "limit"),
    ({"limit": "1001"}, "limit"),
    ({"since": "yesterday"}, "since"),
    ({"until": "2030-01-01T00:00:00"}, "until"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"function": "a\x00b"}, "function"),
    ({"app": "a\x00b"}, "app"),
    ({"event_id": "01ARZ3NDEK<script>"}, "event_id"),
    ({"time": "soon"}, "time: expected one of queued, started, ended"),
    ({"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"}, "until: must be after"),
    ({"colour": "blue", "shade": "dark"}, "colour, shade"),
])
async def test_bad_run_queries_are_400_naming_the_parameter(
    client: httpx.AsyncClient, params: dict[str, str], words: str
) -> None:
    reply = await client.get("/v1/runs", params=params)

    assert reply.status_code == 400, reply.text
    assert reply.json()["status"] == 400
    assert words in reply.json()["error"]


def mailer() -> tidings.Tidings:
    client = tidings.Tidings(app_id="mail")

    @client.function(id="notify", trigger=tidings.TriggerEvent(event="order/placed"))
    async def notify(ctx: tidings.Context) -> Any:
        return "mailed"

    return client


async def test_runs_are_filtered_by_app_event_and_the_time_they_started_or_ended(
    engine: Engine, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await engine.start(shop({}), mailer())
    start = engine.clock()
    event_ids = await spread(engine, range(3))  # each order: charge, receipt, notify

    async def ids(**params: Any) -> list[str]:
        seen, cursor = [], None
        for _ in range(50):
            page = (await client.get("/v1/runs", params={
                **params, **({"cursor": cursor} if cursor else {})})).json()
            assert "data" in page, page
            seen.extend(r["id"] for r in page["data"])
            cursor = page["cursor"]
            if cursor is None:
                return seen
        raise AssertionError("the pages never ended")

    everything = await ok(await client.get("/v1/runs"))
    by_id = {r["id"]: r for r in everything}
    shop_runs = await ids(app="shop")
    mail_runs = await ids(app="mail")
    of_event = await ids(event_id=event_ids[1])
    shop_of_event = await ids(event_id=event_ids[1], app="shop")
    started = await ids(time="started", since=start + 60_000, until=start + 120_000)
    ended = await ids(time="ended", since=iso(start + 60_000))
    queued = await ids(time="queued", since=start + 60_000, until=start + 120_000)
    paged = await ids(app="shop", limit=4)
    failed_of_mail = await ids(app="mail", status="Failed")

    assert len(everything) == 9
    assert {by_id[i]["function"] for i in shop_runs} == {"shop-charge", "shop-receipt"}
    assert len(shop_runs) == 6 and shop_runs == sorted(shop_runs, reverse=True)
    assert [by_id[i]["function"] for i in mail_runs] == ["mail-notify"] * 3
    assert sorted(of_event) == sorted(i for i in by_id if by_id[i]["event_id"] == event_ids[1])
    assert len(of_event) == 3
    assert {by_id[i]["function"] for i in shop_of_event} == {"shop-charge", "shop-receipt"}
    assert set(shop_of_event) < set(of_event)
    assert {by_id[i]["event_id"] for i in started} == {event_ids[1]} and len(started) == 3
    assert {by_id[i]["event_id"] for i in ended} == set(event_ids[1:]) and len(ended) == 6
    assert started == queued
    assert paged == shop_runs
    assert failed_of_mail == []

    # A page looks at a bounded number of runs: with a tiny window, paging still finds every
    # match once (pages may be empty but carry the cursor on).
    monkeypatch.setattr(admin, "SCAN", 2)
    assert await ids(app="mail") == mail_runs
    assert await ids(app="shop") == shop_runs  # two functions, one run of each per look
    assert await ids(app="shop", time="ended", since=start) == shop_runs
    assert await ids(event_id=event_ids[1], limit=1) == of_event
    assert await ids(time="started", since=start + 60_000, until=start + 120_000) == started
    assert await ids(time="ended", since=start, function="mail-notify") == mail_runs


async def test_a_status_filter_looks_at_a_bounded_window_and_its_cursor_finds_the_rest(
    engine: Engine, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    state: dict[str, Any] = {}
    await engine.start(shop(state))
    for order in range(8):  # charge fails for orders 1, 5 and 6; receipt always completes
        state["broken"] = order in (1, 5, 6)
        await spread(engine, range(order, order + 1))
    everything = await ok(await client.get("/v1/runs", params={"limit": 100}))
    assert len(everything) == 16

    async def pages(**params: Any) -> list[tuple[list[str], str | None]]:
        found, cursor = [], None
        for _ in range(50):
            page = (await client.get("/v1/runs", params={
                **params, **({"cursor": cursor} if cursor else {})})).json()
            assert "data" in page, page
            cursor = page["cursor"]
            found.append(([r["id"] for r in page["data"]], cursor))
            if cursor is None:
                return found
        raise AssertionError("the pages never ended")

    # Each page looks at no more than SCAN runs: a page shorter than asked (even empty) still
    # carries a cursor, and the cursors together find every match once, newest first.
    monkeypatch.setattr(admin, "SCAN", 3)
    for params, sparse in (({"status": "Failed"}, True),
                           ({"status": "failed", "function": "shop-charge"}, True),
                           ({"status": "Completed,Failed"}, False),
                           ({"status": "Queued"}, True),
                           ({"status": ["Completed", "Cancelled"], "function": "shop-receipt"},
                            False)):
        wanted = params["status"]
        wanted = [*wanted] if isinstance(wanted, list) else wanted.split(",")
        expected = [r["id"] for r in everything
                    if r["status"].lower() in {w.lower() for w in wanted}
                    and r["function"] == params.get("function", r["function"])]
        for limit in (1, 2, 50):
            found = await pages(**params, limit=limit)
            assert [i for ids, _ in found for i in ids] == expected, (params, limit)
            assert all(len(ids) <= limit for ids, _ in found)
            assert found[-1][1] is None
        short = [ids for ids, cursor in (await pages(**params, limit=2)) if cursor
                 and len(ids) < 2]
        # Where matches are sparse, the window, not the limit, ends some pages.
        assert bool(short) is sparse, params
    assert [r["status"] for r in everything if r["function"] == "shop-charge"].count(FAILED) == 3

    # With every status asked for, the list is the exact index range again: full pages.
    every = ",".join(["Queued", "Running", "Sleeping", "Waiting", "Completed", "Failed",
                      "Cancelled"])
    assert all(len(ids) == 5 for ids, cursor in await pages(status=every, limit=5) if cursor)


async def test_a_function_is_invoked_with_a_payload_whatever_its_triggers(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    await engine.start(shop({}))
    reply = await client.post("/v1/functions/shop-charge/invoke",
                              json={"data": {"order": 7}, "user": {"email": "a@example.com"}})
    run = await ok(reply, 201)
    assert (run["function"], run["status"]) == ("shop-charge", "Queued")
    await engine.drain()

    done = await ok(await client.get(f"/v1/runs/{run['id']}"))
    assert done["status"] == COMPLETED
    assert done["output"] == {"order": 7, "user": {"email": "a@example.com"}}
    assert done["event"]["name"] == "tidings/function.invoked"
    assert done["event"]["user"] == {"email": "a@example.com"}
    assert len(await engine.runs()) == 1  # the invoked event starts nothing else
    empty = await ok(await client.post("/v1/functions/shop-receipt/invoke"), 201)
    await engine.drain()
    assert (await ok(await client.get(f"/v1/runs/{empty['id']}")))["output"] == "sent"


@pytest.mark.parametrize(("body", "status", "words"), [
    (b'{"data": [1]}', 400, "data: must be a JSON object"),
    (b'{"user": "me"}', 400, "user: must be a JSON object"),
    (b'{"data": {}, "colour": 1}', 400, "unknown field(s): 'colour'; expected data, user"),
    (b'{"data": {"a": "x\\u0000y"}}', 400, "data.a: must not contain NUL"),
    (b'{"data": ', 400, "the body is not JSON"),
    (b'[1]', 400, "the body: a JSON object"),
])
async def test_bad_invocations_are_refused_naming_the_field(
    engine: Engine, client: httpx.AsyncClient, body: bytes, status: int, words: str
) -> None:
    await engine.start(shop({}))
    reply = await client.post("/v1/functions/shop-charge/invoke", content=body,
                              headers={"content-type": "application/json"})
    assert reply.status_code == status, reply.text
    assert words in reply.json()["error"]
    assert await engine.runs() == []
    missing = await client.post("/v1/functions/shop-nope/invoke", json={})
    assert missing.status_code == 404
    assert missing.json()["error"] == "function slug 'shop-nope' not found"


async def test_unknown_functions_runs_and_events_are_404(engine: Engine,
                                                         client: httpx.AsyncClient) -> None:
    await engine.start(shop({}))
    missing = "01ARZ3NDEKTSV4RRFFQ69G5FAV"

    replies = [await client.get("/v1/runs", params={"function": "shop-nope"}),
               await client.get("/v1/runs", params={"app": "<script>nope"}),
               await client.get(f"/v1/runs/{missing}"),
               await client.get("/v1/runs/not-an-id"),
               await client.post(f"/v1/runs/{missing}/cancel"),
               await client.post(f"/v1/runs/{missing}/rerun"),
               await client.get(f"/v1/events/{missing}/runs"),
               await client.post(f"/v1/events/{missing}/cancel"),
               await client.get(f"/v1/replays/{missing}")]

    assert [r.status_code for r in replies] == [404] * len(replies)
    assert replies[0].json() == {"error": "function 'shop-nope' not found", "status": 404}
    assert replies[1].json() == {"error": "app '<script>nope' not found", "status": 404}


# -- one run -----------------------------------------------------------------------------------


def approvals(flaky: collections.Counter[str]) -> tidings.Tidings:
    client = tidings.Tidings(app_id="ops")

    def check() -> str:
        flaky["check"] += 1
        if flaky["check"] == 1:
            raise RuntimeError("not yet")
        return "checked"

    @client.function(id="approve", trigger=tidings.TriggerEvent(event="order/placed"))
    async def approve(ctx: tidings.Context) -> Any:
        await ctx.step.run("fetch", lambda: {"total": 3})
        await ctx.step.run("check", check)
        await ctx.step.sleep("cool-off", "1h")
        approval = await ctx.step.wait_for_event(
            "approval", event="order/approved", if_="async.data.order == event.data.order",
            timeout="2h")
        return approval.data if approval else None

    return client


async def test_a_run_shows_its_steps_what_it_waits_for_and_its_event(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    await engine.start(approvals(collections.Counter()))
    (event_id,) = await engine.send({"name": "order/placed", "data": {"order": 7},
                                     "user": {"email": "ada@example.com"}})
    await engine.drain()
    (run,) = await engine.runs()

    retrying = await ok(await client.get(f"/v1/runs/{run.id}"))
    retry_at = (await engine.run(run.id)).due_at
    engine.clock.advance(1001)
    await engine.drain()
    sleeping = await ok(await client.get(f"/v1/runs/{run.id}"))
    engine.clock.advance(HOUR + 1)
    await engine.drain()
    waiting = await ok(await client.get(f"/v1/runs/{run.id}"))
    await engine.send({"name": "order/approved", "data": {"order": 7, "by": "grace"}})
    await engine.drain()
    done = await ok(await client.get(f"/v1/runs/{run.id}"))

    assert retrying["status"] == RUNNING
    assert [(s["name"], s["status"], s["attempts"]) for s in retrying["steps"]] == [
        ("fetch", "completed", 0), ("check", "errored", 1)]
    assert retrying["steps"][0]["output"] == {"data": {"total": 3}}
    assert retrying["steps"][1]["output"]["error"]["message"] == "not yet"
    assert retrying["due_at"] == iso(retry_at)
    assert retrying["pauses"] == []
    assert retrying["event"]["id"] == event_id
    assert retrying["event"]["user"] == {"email": "ada@example.com"}

    assert sleeping["status"] == SLEEPING
    (nap,) = sleeping["pauses"]
    assert (nap["name"], nap["kind"], nap["event"]) == ("cool-off", "sleep", None)
    assert nap["until"] == sleeping["due_at"]

    assert waiting["status"] == WAITING
    (wait,) = waiting["pauses"]
    assert (wait["name"], wait["kind"], wait["event"]) == ("approval", "wait", "order/approved")
    assert wait["condition"] == "async.data.order == event.data.order"
    assert wait["until"] == waiting["due_at"]

    assert done["status"] == COMPLETED
    assert done["output"] == {"order": 7, "by": "grace"}
    assert done["pauses"] == []
    assert [(s["name"], s["kind"]) for s in done["steps"]] == [
        ("fetch", "run"), ("check", "run"), ("cool-off", "sleep"), ("approval", "wait")]
    for step in done["steps"]:
        assert set(step) == {"id", "name", "kind", "invoked_run_id", "status", "attempts",
                             "started_at", "ended_at", "duration_ms", "output",
                             "reused_from", "failed_attempts"}
        assert len(step["failed_attempts"]) == step["attempts"]
        assert step["invoked_run_id"] is None and step["reused_from"] is None
        assert step["status"] == "completed"
        if step["started_at"] is not None:
            assert step["duration_ms"] >= 0
            assert step["started_at"] <= step["ended_at"]
    assert done["steps"][3]["output"]["data"] == {"order": 7, "by": "grace"}


async def test_an_events_runs_are_the_runs_it_started(engine: Engine,
                                                      client: httpx.AsyncClient) -> None:
    await engine.start(shop({}))
    first, second = await engine.send({"name": "order/placed", "data": {"order": 1}},
                                      {"name": "order/placed", "data": {"order": 2}})
    (quiet,) = await engine.send({"name": "nobody/listens"})
    await engine.drain()

    started = await ok(await client.get(f"/v1/events/{first}/runs"))
    none = await ok(await client.get(f"/v1/events/{quiet}/runs"))

    assert sorted(r["function"] for r in started) == ["shop-charge", "shop-receipt"]
    assert {r["event_id"] for r in started} == {first}
    assert second not in {r["event_id"] for r in started}
    assert none == []


# -- cancel ------------------------------------------------------------------------------------


def napper(effects: collections.Counter[str], seen: list[dict[str, Any]]) -> tidings.Tidings:
    client = tidings.Tidings(app_id="nap")

    @client.function(id="long", trigger=tidings.TriggerEvent(event="nap/start"))
    async def long(ctx: tidings.Context) -> Any:
        await ctx.step.sleep("nap", "1h")
        await ctx.step.run("after", lambda: effects.update(["after"]))
        return "woke"

    @client.function(id="quick", trigger=tidings.TriggerEvent(event="nap/quick"))
    async def quick(ctx: tidings.Context) -> Any:
        return "quick"

    @client.function(id="on-cancel",
                     trigger=tidings.TriggerEvent(event="inngest/function.cancelled"))
    async def on_cancel(ctx: tidings.Context) -> Any:
        seen.append(ctx.event.data)
        return None

    return client


async def test_cancelling_a_sleeping_run_ends_it_and_emits_function_cancelled(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    effects: collections.Counter[str] = collections.Counter()
    seen: list[dict[str, Any]] = []
    await engine.start(napper(effects, seen))
    (event_id,) = await engine.send({"name": "nap/start", "data": {"why": "tired"},
                                     "user": {"email": "secret@example.com"}})
    await engine.send({"name": "nap/quick"})
    await engine.drain()
    runs = {r.function_id: r for r in await engine.runs()}
    (sleeping,) = [r for r in runs.values() if r.status == SLEEPING]
    (quick,) = [r for r in runs.values() if r.status == COMPLETED]

    cancelled = await ok(await client.post(f"/v1/runs/{sleeping.id}/cancel"))
    again = await client.post(f"/v1/runs/{sleeping.id}/cancel")
    ended = await client.post(f"/v1/runs/{quick.id}/cancel")
    await engine.drain()
    engine.clock.advance(2 * HOUR)
    await engine.drain()

    assert cancelled["status"] == CANCELLED
    assert cancelled["error"] == {"name": "Cancelled", "message": "cancelled through the API"}
    assert cancelled["ended_at"] is not None
    assert again.status_code == 409
    assert again.json()["error"] == f"run {sleeping.id} already ended (Cancelled)"
    assert ended.status_code == 409
    assert (await engine.run(sleeping.id)).status == CANCELLED
    assert (await ok(await client.get(f"/v1/runs/{sleeping.id}")))["pauses"] == []
    assert effects["after"] == 0
    (data,) = seen
    assert data["run_id"] == sleeping.id
    assert data["function_id"] == "nap-long"
    assert data["event"]["id"] == event_id
    assert data["event"]["data"] == {"why": "tired"}
    assert data["error"]["name"] == "Cancelled"
    # Lifecycle events are stored in the clear: the user must not be copied into them.
    assert "secret@example.com" not in msgspec.json.encode(data).decode()


async def test_cancel_emits_nothing_when_nothing_listens(engine: Engine,
                                                         client: httpx.AsyncClient) -> None:
    client_app = tidings.Tidings(app_id="solo")

    @client_app.function(id="wait", trigger=tidings.TriggerEvent(event="go"))
    async def wait(ctx: tidings.Context) -> Any:
        await ctx.step.sleep("nap", "1h")

    await engine.start(client_app)
    await engine.send({"name": "go"})
    await engine.drain()
    (run,) = await engine.runs()

    await ok(await client.post(f"/v1/runs/{run.id}/cancel"))

    events = (await client.get("/v1/events")).json()["data"]
    assert [e["name"] for e in events] == ["go"]


async def test_a_run_cancelled_during_a_call_records_nothing_more(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    app = tidings.Tidings(app_id="slow")

    async def slow() -> str:
        entered.set()
        await release.wait()
        return "slow"

    @app.function(id="f", trigger=tidings.TriggerEvent(event="go"))
    async def f(ctx: tidings.Context) -> Any:
        await ctx.step.run("slow", slow)
        await ctx.step.run("next", lambda: "next")
        return "finished"

    await engine.start(app)
    await engine.send({"name": "go"})
    draining = asyncio.create_task(engine.drain())
    await asyncio.wait_for(entered.wait(), 30)
    (run,) = await engine.runs()
    cancelled = await client.post(f"/v1/runs/{run.id}/cancel")
    release.set()
    await draining
    await engine.drain()

    assert cancelled.status_code == 200, cancelled.text
    after = await engine.run(run.id)
    assert (after.status, after.output) == (CANCELLED, None)
    assert await engine.steps(run.id) == []


# -- rerun -------------------------------------------------------------------------------------


async def test_a_rerun_runs_the_function_again_with_the_same_event_and_user(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    state = {"broken": True}
    await engine.start(shop(state))
    (event_id,) = await engine.send({"name": "order/placed", "data": {"order": 9},
                                     "user": {"external_id": "u-9"}})
    await engine.drain()
    (failed,) = [r for r in await engine.runs() if r.status == FAILED]
    state["broken"] = False

    first = await ok(await client.post(f"/v1/runs/{failed.id}/rerun"), 201)
    second = await ok(await client.post(f"/v1/runs/{failed.id}/rerun"), 201)
    await engine.drain()

    assert first["id"] != second["id"]
    assert (first["status"], first["rerun_of"], first["event_id"]) == ("Queued", failed.id,
                                                                       event_id)
    assert first["function"] == "shop-charge"
    for rerun_id in (first["id"], second["id"]):
        rerun = await engine.run(rerun_id)
        assert rerun.status == COMPLETED
        assert rerun.output == {"order": 9, "user": {"external_id": "u-9"}}
    assert (await engine.run(failed.id)).status == FAILED
    of_event = await ok(await client.get(f"/v1/events/{event_id}/runs"))
    assert len(of_event) == 4  # charge, receipt and the two reruns


async def test_a_rerun_of_a_function_its_app_dropped_is_409(engine: Engine,
                                                            client: httpx.AsyncClient) -> None:
    await engine.start(shop({}))
    await engine.send({"name": "order/placed"})
    await engine.drain()
    (run, _) = await engine.runs()
    env_id = engine.env_id
    await engine.core.storage.write(lambda tx: registration.register(
        tx, env_id=env_id, app_id="shop", queue="native:shop", defs=[], now=now_ms()))

    reply = await client.post(f"/v1/runs/{run.id}/rerun")

    assert reply.status_code == 409
    assert "archived" in reply.json()["error"]


async def test_a_rerun_wakes_the_runtime_of_the_process(core: Core) -> None:
    called, ran = asyncio.Event(), asyncio.Event()
    app = tidings.Tidings(app_id="wake")

    @app.function(id="f", trigger=tidings.TriggerEvent(event="go"), retries=0)
    async def f(ctx: tidings.Context) -> Any:
        if not called.is_set():
            called.set()
            raise tidings.NonRetriableError("first time")
        ran.set()
        return "second time"

    # Executors that never poll: only a wake-up makes them look at the queue.
    runtime = Runtime(core, [app], env="dev", settings=EngineSettings(idle_poll_ms=600_000))
    await runtime.start()
    try:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(
            app=Starlette(routes=api_routes(core))), base_url="http://tidings")
        async with http:
            env = await core.storage.write(lambda tx: ensure_env(tx, "dev"))
            events = parse_events(b'{"name": "go"}', core.settings.limits, now_ms())
            (event_id,) = await core.ingest.append(env.id, events)
            await asyncio.wait_for(called.wait(), 20)
            (first,) = await ok(await http.get(f"/v1/events/{event_id}/runs"))
            rerun = await ok(await http.post(f"/v1/runs/{first['id']}/rerun"), 201)
            await asyncio.wait_for(ran.wait(), 20)
    finally:
        await runtime.stop(grace=5)

    assert rerun["rerun_of"] == first["id"]


# -- replay ------------------------------------------------------------------------------------


async def test_a_replay_reruns_each_matching_run_once(engine: Engine,
                                                      client: httpx.AsyncClient) -> None:
    state = {"broken": True}
    await engine.start(shop(state))
    start = engine.clock()
    await spread(engine, range(5))  # charge fails at +0, +1, +2, +3 and +4 minutes
    state["broken"] = False
    charges = await ok(await client.get("/v1/runs", params={"function": "shop-charge"}))
    inside = {r["id"] for r in charges[1:4]}  # +1 to +3 minutes

    replay = await ok(await client.post("/v1/replays", json={
        "function": "shop-charge", "since": iso(start + 60_000), "until": start + 4 * 60_000,
        "statuses": ["failed", "Cancelled"]}), 201)
    progress = await ok(await client.get(f"/v1/replays/{replay['id']}"))
    await engine.drain()
    reruns = [r for r in await engine.runs() if r.replay_id == replay["id"]]

    assert replay["total"] == replay["created"] == 3
    assert replay["done"] is True
    assert replay["statuses"] == [FAILED, CANCELLED]
    assert replay["function"] == "shop-charge"
    assert replay["since"] == iso(start + 60_000)
    assert progress == replay
    assert {r.rerun_of for r in reruns} == inside
    assert [r.status for r in reruns] == [COMPLETED] * 3
    assert {r.event_id for r in reruns} == {r["event_id"] for r in charges[1:4]}


async def cancelled_runs(engine: Engine, count: int) -> int:
    """``count`` cancelled runs of ``shop-charge``, created at one millisecond (returned)."""
    env_id = engine.env_id
    now = now_ms()

    def create(tx: Any) -> None:
        fn = registration.function_by_slug(tx, env_id, "shop-charge")
        assert fn is not None
        for i in range(count):
            event = EventRow(id=f"{_ulid(now, i)}", env_id=env_id, name="order/placed",
                             data=b"{}", user=None, user_subject=None, key=None, ts=now, v=None,
                             source="tidings", context=None, account_id=None, received_at=now,
                             deliver_at=None)
            store.insert_event(tx, event, delivered_at=now)
            run_id = store.create_run(tx, fn=fn, event_id=event.id, due_at=now, now=now)
            assert run_id is not None and store.cancel(tx, run_id, "test", now)

    await engine.core.storage.write(create)
    return now


async def test_a_large_replay_goes_on_in_batches(engine: Engine,
                                                 client: httpx.AsyncClient) -> None:
    await engine.start(shop({}))
    count = runs_api.REPLAY_BATCH * 2 + 37
    now = await cancelled_runs(engine, count)

    started = await client.post("/v1/replays", json={
        "function": "shop-charge", "since": now - 1, "until": now + 1,
        "statuses": ["Cancelled"]})
    first = await ok(started, 202)
    deadline = asyncio.get_running_loop().time() + 60
    progress = first
    while not progress["done"]:
        assert asyncio.get_running_loop().time() < deadline, progress
        await asyncio.sleep(0.02)
        progress = await ok(await client.get(f"/v1/replays/{first['id']}"))

    assert (first["total"], first["created"], first["done"]) == (count,
                                                                 runs_api.REPLAY_BATCH, False)
    assert (progress["total"], progress["created"]) == (count, count)
    reruns = [r for r in await engine.runs() if r.replay_id == first["id"]]
    assert len(reruns) == count
    assert len({r.rerun_of for r in reruns}) == count
    assert await engine.core.storage.read(admin.unfinished_replays) == []


async def test_a_replay_left_unfinished_is_carried_on_by_the_next_runtime(
    engine: Engine,
) -> None:
    """The process that started a large replay stopped after its first batch: the next runtime
    to start reruns the rest, each run once."""
    app = shop({})
    await engine.start(app)
    count = runs_api.REPLAY_BATCH + 123
    now = await cancelled_runs(engine, count)
    batch = runs_api.REPLAY_BATCH

    def start(tx: Any) -> tuple[admin.Replay, bool]:
        fn = registration.function_by_slug(tx, engine.env_id, "shop-charge")
        assert fn is not None
        return admin.start_replay(tx, fn=fn, since_ms=now - 1, until_ms=now + 1,
                                  statuses=[CANCELLED], now=now, batch=batch)

    # What POST /v1/replays writes before it answers; then its process is gone.
    replay, more = await engine.core.storage.write(start)
    assert more and (replay.total, replay.created) == (count, batch)
    [(left, fn)] = await engine.core.storage.read(admin.unfinished_replays)
    assert (left, fn.slug) == (replay.id, "shop-charge")

    runtime = Runtime(engine.core, [app], env="dev",
                      settings=EngineSettings(idle_poll_ms=600_000))
    await runtime.start()
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            progress = await engine.core.storage.read(partial(admin.get_replay,
                                                              replay_id=replay.id))
            assert progress is not None
            if progress.done:
                break
            assert asyncio.get_running_loop().time() < deadline, progress
            await asyncio.sleep(0.02)
    finally:
        await runtime.stop(grace=5)

    assert (progress.total, progress.created) == (count, count)
    reruns = [r for r in await engine.runs() if r.replay_id == replay.id]
    assert len(reruns) == count
    assert len({r.rerun_of for r in reruns}) == count
    assert await engine.core.storage.read(admin.unfinished_replays) == []


def _ulid(ms: int, i: int) -> str:
    from ulid import ULID

    return str(ULID.from_bytes(ms.to_bytes(6, "big") + i.to_bytes(10, "big")))


@pytest.mark.parametrize(("body", "words"), [
    ({"function": "shop-charge", "since": 0, "until": 1, "statuses": ["Running"]}, "'Running'"),
    ({"function": "shop-charge", "since": 0, "until": 1, "statuses": []}, "statuses"),
    ({"function": "shop-charge", "since": 5, "until": 5, "statuses": ["Failed"]}, "until"),
    ({"function": "shop-charge", "since": "last week", "until": 1, "statuses": ["Failed"]},
     "since"),
    ({"function": "shop-charge", "since": 0, "until": 1}, "missing field(s): statuses"),
    ({"function": "shop-charge", "since": 0, "until": 1, "statuses": ["Failed"], "x": 1},
     "unknown field(s): x"),
    ({"function": "", "since": 0, "until": 1, "statuses": ["Failed"]}, "function"),
    ([], "JSON object"),
])
async def test_bad_replays_are_400(engine: Engine, client: httpx.AsyncClient, body: Any,
                                   words: str) -> None:
    await engine.start(shop({}))

    reply = await client.post("/v1/replays", json=body)

    assert reply.status_code == 400, reply.text
    assert words in reply.json()["error"]


async def test_a_replay_of_an_unknown_function_is_404(client: httpx.AsyncClient) -> None:
    reply = await client.post("/v1/replays", json={"function": "x-y", "since": 0, "until": 1,
                                                   "statuses": ["Failed"]})
    not_json = await client.post("/v1/replays", content=b"{nope")

    assert reply.status_code == 404
    assert not_json.status_code == 400
    assert "not JSON" in not_json.json()["error"]


# -- cancelling a delayed event ------------------------------------------------------------------


async def test_a_delayed_event_cancelled_in_time_is_never_delivered(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    await engine.start(shop({}))
    (delayed,) = await engine.send({"name": "order/placed", "deliver_after": 3600})
    (prompt,) = await engine.send({"name": "order/placed"})
    await engine.drain()

    cancelled = await ok(await client.post(f"/v1/events/{delayed}/cancel"))
    again = await client.post(f"/v1/events/{delayed}/cancel")
    too_late = await client.post(f"/v1/events/{prompt}/cancel")
    engine.clock.advance(2 * HOUR)
    await engine.drain()

    assert cancelled["id"] == delayed
    assert cancelled["cancelled_at"] is not None
    assert cancelled["delivered_at"] is None
    assert again.status_code == 409
    assert again.json()["error"] == f"event {delayed} was already cancelled"
    assert too_late.status_code == 409
    assert too_late.json()["error"] == f"event {prompt} was already delivered"
    assert await ok(await client.get(f"/v1/events/{delayed}/runs")) == []
    assert {r.event_id for r in await engine.runs()} == {prompt}
    stored = await ok(await client.get(f"/v1/events/{delayed}"))
    assert stored["cancelled_at"] == cancelled["cancelled_at"]
    assert stored["delivered_at"] is None


# -- keys and environments ----------------------------------------------------------------------


async def test_under_serve_the_runs_api_needs_an_api_key_and_keeps_to_its_environment(
    db_url: str, tmp_path: Path
) -> None:
    settings = make_settings(db_url, tmp_path, mode="serve")
    async with app_client(settings) as (http, core):
        api_key, _ = await create_key(core.storage, "production", "api")
        event_key, _ = await create_key(core.storage, "production", "event")
        runtime = Runtime(core, [shop({})], env="production", clock=now_ms)
        await runtime.register()
        assert runtime.env is not None
        events = parse_events(b'{"name": "order/placed"}', core.settings.limits, now_ms())
        (event_id,) = await core.ingest.append(runtime.env.id, events)
        await runtime.drain()
        auth = {"authorization": f"Bearer {api_key}"}

        anonymous = await http.get("/v1/runs")
        with_event_key = await http.get("/v1/runs",
                                        headers={"authorization": f"Bearer {event_key}"})
        listed = await ok(await http.get("/v1/runs", headers=auth))
        run_id = listed[0]["id"]
        one = await http.get(f"/v1/runs/{run_id}", headers=auth)
        from_branch = await http.get(f"/v1/runs/{run_id}",
                                     headers={**auth, "x-inngest-env": "feature-x"})
        branch_list = await ok(await http.get("/v1/runs",
                                              headers={**auth, "x-inngest-env": "feature-x"}))
        rerun_from_branch = await http.post(f"/v1/runs/{run_id}/rerun",
                                            headers={**auth, "x-inngest-env": "feature-x"})
        cancel_anonymous = await http.post(f"/v1/events/{event_id}/cancel")

    assert anonymous.status_code == 401
    assert with_event_key.status_code == 401
    assert len(listed) == 2
    assert one.status_code == 200
    assert one.json()["data"]["event"]["id"] == event_id
    assert from_branch.status_code == 404
    assert branch_list == []
    assert rerun_from_branch.status_code == 404
    assert cancel_anonymous.status_code == 401


def pipeline(calls: collections.Counter[str], state: dict[str, Any]) -> tidings.Tidings:
    client = tidings.Tidings(app_id="pipe")

    @client.function(id="etl", trigger=tidings.TriggerEvent(event="pipe/go"), retries=0)
    async def etl(ctx: tidings.Context) -> Any:
        def step(name: str, value: Any) -> Any:
            calls[name] += 1
            return value

        a = await ctx.step.run("extract",
                               lambda: step("extract", {"rows": calls["extract"] + 1}))
        b = await ctx.step.run("transform", lambda: step("transform", state["factor"]))
        return await ctx.step.run("load", lambda: step("load", a["rows"] * b))

    return client


async def test_a_rerun_from_a_step_reuses_the_results_recorded_before_it(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    calls: collections.Counter[str] = collections.Counter()
    state = {"factor": 2}
    await engine.start(pipeline(calls, state))
    await engine.send({"name": "pipe/go", "data": {}})
    await engine.drain()
    [source] = await engine.runs()
    first = await ok(await client.get(f"/v1/runs/{source.id}"))
    assert first["output"] == 2 and dict(calls) == {"extract": 1, "transform": 1, "load": 1}
    ids = {step["name"]: step["id"] for step in first["steps"]}

    state["factor"] = 10
    rerun = await ok(await client.post(f"/v1/runs/{source.id}/rerun",
                                       json={"from_step": ids["transform"]}), 201)
    await engine.drain()
    again = await ok(await client.get(f"/v1/runs/{rerun['id']}"))
    assert (again["status"], again["output"], again["rerun_of"]) == (COMPLETED, 10, source.id)
    assert dict(calls) == {"extract": 1, "transform": 2, "load": 2}  # extract reused
    assert [step["name"] for step in again["steps"]] == ["extract", "transform", "load"]
    assert again["steps"][0]["output"] == first["steps"][0]["output"]

    whole = await ok(await client.post(f"/v1/runs/{source.id}/rerun",
                                       json={"from_step": ids["extract"]}), 201)
    await engine.drain()
    assert (await ok(await client.get(f"/v1/runs/{whole['id']}")))["output"] == 20
    assert calls["extract"] == 2

    for body, status, words in [
            (b'{"from_step": "nope"}', 404, f"from_step: run {source.id} has no recorded step"),
            (b'{"from_step": 5}', 400, "from_step: the id of one of the run's steps"),
            (b'{"from": "x"}', 400, "unknown field(s): 'from'; expected from_step"),
            (b'{"from_step": ', 400, "the body is not JSON"),
            (b'[]', 400, "the body: a JSON object")]:
        reply = await client.post(f"/v1/runs/{source.id}/rerun", content=body,
                                  headers={"content-type": "application/json"})
        assert reply.status_code == status, reply.text
        assert words in reply.json()["error"]
    assert len(await engine.runs()) == 3  # refusals started nothing
