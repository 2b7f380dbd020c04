"""The runs, functions and apps pages over ASGI, on both backends, with functions run in drain
mode: lists, filters and their errors, counts, a run's timeline and levers, bulk actions with
their preview, and the API's side of them (``failed_attempts``, ``dry_run``)."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
from collections.abc import AsyncIterator, MutableMapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

import tidings
from tests.engine.conftest import Clock, Engine
from tidings.core import Core
from tidings.keys import get_env
from tidings.runs import admin
from tidings.server import create_app
from tidings.server.dashboard.timeline import timeline
from tidings.server.run_levers import RunLevers

ORIGIN = {"origin": "http://tidings"}


async def csrf(client: httpx.AsyncClient) -> dict[str, str]:
    page = await client.get("/send")
    found = re.search(r'name="_csrf" value="([^"]+)"', page.text)
    assert found is not None
    return {"_csrf": found.group(1)}
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture
async def engine(core: Core) -> Engine:
    return Engine(core, Clock(), [])


def shop(state: dict[str, Any]) -> tidings.Tidings:
    client = tidings.Tidings(app_id="shop")

    @client.function(id="checkout", trigger=tidings.TriggerEvent(event="shop/checkout"),
                     retries=2)
    async def checkout(ctx: tidings.Context) -> Any:
        await ctx.step.run("load", lambda: 1)

        def charge() -> str:
            state["tries"] = state.get("tries", 0) + 1
            if state["tries"] == 1:
                raise RuntimeError("declined " + HOSTILE)
            return "ok"

        await ctx.step.run("charge", charge)
        await ctx.step.sleep("cool", timedelta(minutes=5))
        return "done"

    @client.function(id="quick", trigger=tidings.TriggerEvent(event="shop/quick"))
    async def quick(ctx: tidings.Context) -> Any:
        return ctx.event.data.get("n")

    return client


async def _settle(engine: Engine, rounds: int = 5, advance_ms: int = 0) -> None:
    for _ in range(rounds):
        await engine.drain()
        engine.clock.advance(advance_ms)


async def test_a_run_page_draws_its_timeline(engine: Engine, client: httpx.AsyncClient) -> None:
    await engine.start(shop({}))
    await engine.send({"name": "shop/checkout", "data": {}})
    await _settle(engine, advance_ms=1_000)
    [run] = await engine.runs()
    page = await client.get(f"/runs/{run.id}")
    assert page.status_code == 200
    lanes = re.findall(r'<span class="lane-name" title="([^"]*)"', page.text)
    assert lanes[:3] == ["queue", "load", "charge"]
    assert "attempt 1 failed" in page.text and HOSTILE not in page.text
    assert "declined &lt;script&gt;" in page.text
    api = (await client.get(f"/v1/runs/{run.id}")).json()["data"]
    charge = next(step for step in api["steps"] if step["name"] == "charge")
    assert [a["attempt"] for a in charge["failed_attempts"]] == [1]
    assert charge["failed_attempts"][0]["error"]["message"] == "declined " + HOSTILE
    engine.clock.advance(10 * 60_000)
    await _settle(engine, advance_ms=1_000)
    page = await client.get(f"/runs/{run.id}")
    assert 'class="pill s-completed" id="run-status">Completed' in page.text
    assert re.search(r'<span class="lane-name" title="cool">', page.text)
    assert "slept" in page.text


async def test_the_timeline_places_bars_by_time(engine: Engine, core: Core) -> None:
    await engine.start(shop({}))
    await engine.send({"name": "shop/checkout", "data": {}})
    await _settle(engine, advance_ms=1_000)
    [run] = await engine.runs()
    env = await core.storage.read(lambda tx: get_env(tx, run.env_id))
    assert env is not None
    detail = await RunLevers(core).detail(env, run.id)
    line = timeline(detail, engine.clock())
    assert [bar.lane for bar in line.bars][:2] == ["queue", "load"]
    assert all(0 <= bar.left <= 100 and 0 < bar.width <= 100 for bar in line.bars)
    failed = [bar for bar in line.bars if bar.state == "failed"]
    assert [bar.attempt for bar in failed] == [1]
    sleeping = [bar for bar in line.bars if bar.kind == "sleep"]
    assert sleeping and sleeping[0].open


async def test_the_runs_list_filters_counts_and_refuses_bad_filters(
        engine: Engine, client: httpx.AsyncClient) -> None:
    await engine.start(shop({}))
    await engine.send({"name": "shop/quick", "data": {"n": 1}},
                      {"name": "shop/quick", "data": {"n": 2}})
    await _settle(engine)
    page = await client.get("/runs", params={"function": "shop-quick", "status": "completed"})
    assert page.status_code == 200
    assert page.text.count('<tr data-row id="run-') == 2
    assert re.search(r"Completed <strong>2</strong>", page.text)
    # A time range still open is live (runs replayed or started now join it); one that ended
    # cannot change and is not.
    for until, live in (("2100-01-01T00:00:00Z", True), ("2001-01-01T00:00:00Z", False)):
        ranged = await client.get("/runs", params={"function": "shop-quick", "until": until})
        assert ('sse-connect="/live/runs?' in ranged.text) is live, until
    for params, field, words in [
            ({"function": "nope"}, "function", "function &#39;nope&#39; not found"),
            ({"status": "sleepy"}, "status", "status: &#39;sleepy&#39; is not one of"),
            ({"since": "soon"}, "since", "since: expected an ISO-8601 time")]:
        bad = await client.get("/runs", params=params)
        assert bad.status_code in (400, 404), params
        found = re.search(rf'<p class="field-error" id="e-{field}">([^<]*)</p>', bad.text)
        assert found is not None and words in found.group(1), (params, bad.text[-2000:])


async def test_the_runs_list_filters_by_app_event_and_started_time_as_the_api_does(
        engine: Engine, client: httpx.AsyncClient) -> None:
    await engine.start(shop({}))
    start = engine.clock()
    first = await engine.send({"name": "shop/quick", "data": {"n": 1}})
    await _settle(engine)
    engine.clock.advance(60_000)
    second = await engine.send({"name": "shop/quick", "data": {"n": 2}})
    await _settle(engine)

    def shown(page: httpx.Response) -> list[str]:
        assert page.status_code == 200, page.text[-2000:]
        return re.findall(r'<tr data-row id="run-([0-9A-Z]+)"', page.text)

    async def api(**params: Any) -> list[str]:
        return [r["id"] for r in (await client.get("/v1/runs", params=params)).json()["data"]]

    for params in ({"app": "shop"}, {"event_id": second[0]}, {"event_id": first[0]},
                   {"time": "started", "since": str(start + 30_000)},
                   {"time": "ended", "until": str(start + 30_000)},
                   {"app": "shop", "event_id": first[0], "status": "completed"}):
        page = await client.get("/runs", params=params)
        assert shown(page) == await api(**params), params
        assert len(shown(page)) == 1 or params == {"app": "shop"}, params
        for name, value in params.items():  # kept in the form
            assert re.search(rf'(value="{value}"[^>]*selected|name="{name}" value="{value}"'
                             rf'|value="{value}" selected)', page.text), (name, page.text[:3000])
    assert len(shown(await client.get("/runs", params={"app": "shop"}))) == 2
    started = await client.get("/runs", params={"time": "started", "since": start + 30_000})
    assert 'id="f-time"' in started.text and '<option value="started" selected>' in started.text
    assert "status=completed" in started.text and "time=started" in started.text  # counts links
    for params, field, words in [
            ({"app": "nope"}, "app", "app &#39;nope&#39; not found"),
            ({"app": HOSTILE}, "app", "app &#39;&lt;script&gt;"),
            ({"event_id": HOSTILE}, "event_id", "event_id: expected an event id"),
            ({"time": HOSTILE}, "time", "time: expected one of queued, started, ended"),
            ({"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"}, "until",
             "until: must be after since")]:
        bad = await client.get("/runs", params=params)
        assert bad.status_code in (400, 404), params
        assert HOSTILE not in bad.text
        found = re.search(rf'<p class="field-error" id="e-{field}">([^<]*)</p>', bad.text)
        assert found is not None and words in found.group(1), (params, bad.text[-2000:])
        api_error = (await client.get("/v1/runs", params=params)).json()["error"]
        assert found.group(1).replace("&#39;", "'").replace("&lt;", "<").replace(
            "&gt;", ">").replace("&#34;", '"').replace("&amp;", "&") == api_error


async def test_a_status_filter_page_shorter_than_asked_says_so_and_its_older_link_finds_the_rest(
        engine: Engine, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    await engine.start(shop({"tries": 1}))  # checkout's charge never fails: each run sleeps
    for name in ("quick", "checkout", "quick", "quick", "quick", "checkout", "quick", "quick",
                 "checkout"):
        await engine.send({"name": f"shop/{name}", "data": {"n": 1}})
        await _settle(engine)
    sleeping = [r["id"] for r in (await client.get(
        "/v1/runs", params={"function": "shop-checkout"})).json()["data"]]
    assert len(sleeping) == 3
    # Each page looks at three runs: a page holds the sleeping ones among them, fewer than
    # the two asked for, says so, and links to older runs until none are left.
    monkeypatch.setattr(admin, "SCAN", 3)
    shown, notes, url = [], 0, "/runs?status=sleeping&limit=2"
    for _ in range(20):
        page = await client.get(url)
        assert page.status_code == 200, page.text[-2000:]
        rows = re.findall(r'<tr data-row id="run-([0-9A-Z]+)"', page.text)
        shown.extend(rows)
        older = re.search(r'<a rel="next" href="([^"]+)">', page.text)
        if older is None:
            break
        if 0 < len(rows) < 2:
            notes += 1
            assert re.search(r"1 run matches these filters among the 3 runs this page looked "
                             r"at: older runs may match too", page.text), page.text[-3000:]
        elif not rows:
            assert "No runs match these filters among the newest 3 looked at" in page.text
        url = html.unescape(older.group(1))
        assert "status=sleeping" in url and "limit=2" in url  # the filters are kept
    else:
        raise AssertionError("the pages never ended")
    assert shown == sleeping  # every sleeping run once, newest first
    assert notes >= 1


async def test_a_live_status_filter_page_redraws_its_short_page_note_and_older_link(
        engine: Engine, core: Core, client: httpx.AsyncClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The note under a short page ("looked at the newest ...") and its "Older" cursor follow
    the rows the stream redraws: a page that matched nothing says it found one once a
    matching run started, and its link to older runs starts below the runs it now looks at."""
    await engine.start(shop({"tries": 1}))  # checkout's charge never fails: each run sleeps
    for _ in range(3):
        await engine.send({"name": "shop/quick", "data": {"n": 1}})
        await _settle(engine)
    monkeypatch.setattr(admin, "SCAN", 3)
    page = await client.get("/runs?status=sleeping&limit=2")
    assert "No runs match these filters among the newest 3 looked at" in page.text
    found = re.search(r'sse-connect="([^"]+)"', page.text)
    assert found is not None
    live = html.unescape(found.group(1))

    async def start_a_sleeping_run() -> None:
        await engine.send({"name": "shop/checkout", "data": {"n": 1}})
        await _settle(engine)

    pager = await _stream_until(core, live, start_a_sleeping_run,
                                lambda events: [data for name, data in events
                                                if name == "pager" and "1 run matches" in data])
    quick = [r["id"] for r in (await client.get(
        "/v1/runs", params={"function": "shop-quick"})).json()["data"]]
    assert "among the 3 runs this page looked at: older runs may match too" in pager[-1]
    assert f"cursor={quick[1]}" in pager[-1] and "status=sleeping" in pager[-1], pager[-1]
    assert '<div id="run-pager" sse-swap="pager"' in page.text  # where the page puts it


@contextlib.asynccontextmanager
async def _streaming(core: Core, path: str) -> AsyncIterator[tuple[Any, list[bytes],
                                                                   asyncio.Task[None]]]:
    """A GET of the stream at ``path`` over ASGI, from a browser that stays until the stream
    ends or the block does (the request is then cancelled): the app, the chunks of the body as
    they come, and the request's task."""
    app = create_app(core.settings, core)
    url = urlsplit(path)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": url.path, "raw_path": url.path.encode(),
             "query_string": url.query.encode(), "root_path": "",
             "headers": [(b"host", b"tidings")], "client": ("127.0.0.1", 1),
             "server": ("tidings", 80)}
    body: list[bytes] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the browser stays: only the server ends the stream
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    task = asyncio.create_task(app(scope, receive, send))
    try:
        yield app, body, task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _until_sent(body: list[bytes], wanted: Any, seconds: float = 10) -> Any:
    """What ``wanted(text)`` finds (the first truthy answer) in the body sent so far, polled
    until it finds it (within ``seconds``)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not (found := wanted(b"".join(body).decode())):
        assert asyncio.get_running_loop().time() < deadline, f"not sent: {b''.join(body)!r}"
        await asyncio.sleep(0.01)
    return found


async def _stream_until(core: Core, path: str, meanwhile: Any,
                        wanted: Any) -> Any:
    """What ``wanted(events)`` finds (the first truthy answer) in the events the stream at
    ``path`` sent, as ``(name, data)``, read until it finds it (within a deadline);
    ``meanwhile()`` is awaited once the stream sent its first event."""

    def events(text: str) -> list[tuple[str, str]]:
        return [(name, "\n".join(re.findall(r"^data: ?(.*)$", data, re.M)))
                for name, data in re.findall(r"^event: (\S+)\n((?:data:.*\n)*)", text, re.M)]

    async with _streaming(core, path) as (_, body, _):
        await _until_sent(body, events, 15)
        await meanwhile()
        return await _until_sent(body, lambda text: wanted(events(text)), 15)


async def test_bulk_replay_previews_then_acts_as_the_api_does(
        engine: Engine, client: httpx.AsyncClient) -> None:
    await engine.start(shop({}))
    await engine.send(*({"name": "shop/quick", "data": {"n": n}} for n in range(3)))
    await _settle(engine)
    body = {"function": "shop-quick", "since": 0, "until": "2100-01-01T00:00:00Z",
            "statuses": ["Completed"], "dry_run": True}
    preview = (await client.post("/v1/replays", json=body)).json()["data"]
    assert preview["matched"] == 3
    assert len(await engine.runs()) == 3  # a dry run touches nothing
    form = {**await csrf(client), "action": "replay", "function": "shop-quick", "since": "0",
            "until": "2100-01-01T00:00:00Z", "statuses": "completed",
            "back": "function=shop-quick&status=completed"}
    page = await client.post("/runs/bulk", data=form, headers=ORIGIN)
    assert page.status_code == 200 and "Replay 3 runs?" in page.text
    assert len(await engine.runs()) == 3
    done = await client.post("/runs/bulk", data={**form, "confirmed": "yes"}, headers=ORIGIN)
    assert done.status_code == 303
    assert done.headers["location"].startswith("/runs?function=shop-quick&status=completed&")
    assert len(await engine.runs()) == 6
    cancel = await client.post("/v1/cancellations", json={
        "function": "shop-quick", "since": 0, "until": "2100-01-01T00:00:00Z",
        "dry_run": True})
    assert cancel.json()["data"]["matched"] == 3  # the reruns, queued
    refused = await client.post("/runs/bulk", data={**form, "function": ""}, headers=ORIGIN)
    assert refused.status_code == 400 and "filter by function first" in refused.text


async def test_cancel_and_rerun_from_a_run_page(engine: Engine,
                                                client: httpx.AsyncClient) -> None:
    await engine.start(shop({}))
    await engine.send({"name": "shop/checkout", "data": {}})
    await _settle(engine, advance_ms=1_000)
    [run] = await engine.runs()
    token = await csrf(client)
    refused = await client.post(f"/runs/{run.id}/cancel", data=token)  # no Origin
    assert refused.status_code == 403
    refused = await client.post(f"/runs/{run.id}/cancel", headers=ORIGIN)  # no token
    assert refused.status_code == 403
    cancelled = await client.post(f"/runs/{run.id}/cancel", data=token, headers=ORIGIN)
    assert cancelled.status_code == 303
    assert (await engine.run(run.id)).status == "Cancelled"
    again = await client.post(f"/runs/{run.id}/cancel", data=token, headers=ORIGIN)
    assert again.status_code == 409 and f"run {run.id} already ended (Cancelled)" in again.text
    rerun = await client.post(f"/runs/{run.id}/rerun", data=token, headers=ORIGIN)
    assert rerun.status_code == 303 and rerun.headers["location"] != f"/runs/{run.id}"
    assert len(await engine.runs()) == 2


async def _first_event(core: Core, path: str) -> str:
    """The name of the first event the stream at ``path`` sends (over ASGI: the stream never
    ends by itself, so it is read until its first event and then cancelled)."""
    def first(text: str) -> str | None:
        found = re.search(r"^event: (\S+)$", text, re.M)
        return found and found.group(1)

    async with _streaming(core, path) as (_, body, _):
        name: str = await _until_sent(body, first)
        return name


async def test_a_run_page_stream_sends_what_moved_since_the_page_was_drawn(
        engine: Engine, core: Core, client: httpx.AsyncClient) -> None:
    await engine.start(shop({}))
    await engine.send({"name": "shop/checkout", "data": {}})
    await _settle(engine, advance_ms=1_000)
    [run] = await engine.runs()
    assert run.status == "Sleeping"
    page = await client.get(f"/runs/{run.id}")
    found = re.search(r'sse-connect="([^"]+)"', page.text)
    assert found is not None
    live = found.group(1).replace("&amp;", "&")
    assert await _first_event(core, live) == "timeline"  # the page shows the run as it is
    engine.clock.advance(10 * 60_000)  # the run wakes and ends before the stream starts
    await _settle(engine, advance_ms=1_000)
    assert (await engine.run(run.id)).status == "Completed"
    assert await _first_event(core, live) == "run"  # sent at once, not taken as shown


async def _whole_stream(core: Core, path: str, meanwhile: Any = None) -> tuple[list[str], int]:
    """The names of the events the stream at ``path`` sends until it ends by itself (within a
    deadline), and how many streams its feed still has open afterwards; ``meanwhile()`` is
    awaited once the stream sent its first event."""
    async with _streaming(core, path) as (app, body, task):
        assert app.dashboard is not None
        if meanwhile is not None:
            await _until_sent(body, lambda text: "event: " in text)
            await meanwhile()
        try:
            await asyncio.wait_for(asyncio.shield(task), 10)
        except TimeoutError:
            raise AssertionError(f"the stream did not end: {b''.join(body)[-300:]!r}") from None
    text = b"".join(body).decode()
    return re.findall(r"^event: (\S+)$", text, re.M), len(app.dashboard.feed)


async def test_a_run_page_stream_ends_once_its_run_ended(
        engine: Engine, core: Core, client: httpx.AsyncClient) -> None:
    """An ended run changes no more: its page's stream sends the last body and ``ended`` (the
    page's ``sse-close``) and closes, so nothing reads for that page again. A rerun is a new
    run, whose own page is live."""
    await engine.start(shop({}))
    await engine.send({"name": "shop/checkout", "data": {}})
    await _settle(engine, advance_ms=1_000)
    [run] = await engine.runs()
    page = await client.get(f"/runs/{run.id}")
    found = re.search(r'sse-connect="([^"]+)" sse-close="ended"', page.text)
    assert found is not None
    live = found.group(1).replace("&amp;", "&")

    async def wake_and_end() -> None:
        engine.clock.advance(10 * 60_000)
        await _settle(engine, advance_ms=1_000)
        assert (await engine.run(run.id)).status == "Completed"

    events, open_streams = await _whole_stream(core, live, wake_and_end)
    assert events[0] == "timeline" and events[-2:] == ["run", "ended"], events
    assert open_streams == 0
    assert await _whole_stream(core, live) == (["run", "ended"], 0)  # opened after the end
    ended = await client.get(f"/runs/{run.id}")
    assert "sse-connect" not in ended.text

    rerun = await client.post(f"/runs/{run.id}/rerun", data=await csrf(client), headers=ORIGIN)
    assert rerun.status_code == 303
    new_page = await client.get(rerun.headers["location"])
    assert 'sse-connect="/live/runs/' in new_page.text and f'href="/runs/{run.id}"' in new_page.text


async def test_unknown_runs_give_a_404_page(client: httpx.AsyncClient) -> None:
    for path in ("/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV", "/runs/nope", f"/runs/{HOSTILE}"):
        page = await client.get(path)
        assert page.status_code == 404 and "<h1>Not found</h1>" in page.text
        assert HOSTILE not in page.text


async def test_functions_and_apps_pages(engine: Engine, client: httpx.AsyncClient) -> None:
    await engine.start(shop({}))
    await engine.send(*({"name": "shop/quick", "data": {"n": n}} for n in range(3)))
    await _settle(engine)
    functions = await client.get("/functions")
    assert functions.status_code == 200
    assert 'id="fn-shop-checkout"' in functions.text and "shop/checkout" in functions.text
    quick = functions.text[functions.text.index('id="fn-shop-quick"'):]
    assert re.search(r"<td>3 · <span class=\"muted\">0.0% failed</span></td>", quick), quick[:1500]
    apps = await client.get("/apps")
    assert apps.status_code == 200 and "<strong>shop</strong>: 2 functions" in apps.text
    refused = await client.post("/apps", data={"url": "javascript:alert(1)",
                                               **await csrf(client)}, headers=ORIGIN)
    assert refused.status_code == 400
    assert 'url: expected {&#34;url&#34;: &#34;http(s)://…&#34;}' in refused.text


async def test_a_function_is_invoked_from_its_page_and_the_page_lands_on_the_run(
        engine: Engine, client: httpx.AsyncClient) -> None:
    await engine.start(shop({}))
    functions = await client.get("/functions")
    assert 'href="/functions/shop-quick/invoke"' in functions.text
    form_page = await client.get("/functions/shop-quick/invoke")
    assert form_page.status_code == 200 and 'name="data"' in form_page.text
    token = await csrf(client)
    for data, user, field, words in [
            ("{not json", "", "data", "data is not JSON"),
            ("[1]", "", "data", "data: must be a JSON object"),
            ("{}", f'"{HOSTILE}"', "user", "user: must be a JSON object")]:
        bad = await client.post("/functions/shop-quick/invoke", headers=ORIGIN,
                                data={**token, "data": data, "user": user})
        assert bad.status_code == 400, bad.text[-1000:]
        found = re.search(rf'<p class="field-error" id="e-{field}">([^<]*)</p>', bad.text)
        assert found is not None and words in found.group(1), bad.text[-2000:]
        assert HOSTILE not in bad.text  # the typed text comes back escaped
    assert await engine.runs() == []
    refused = await client.post("/functions/shop-quick/invoke", data={"data": "{}", **token})
    assert refused.status_code == 403  # no Origin: not from the dashboard
    done = await client.post("/functions/shop-quick/invoke", headers=ORIGIN,
                             data={**token, "data": '{"n": "' + HOSTILE + '"}', "user": ""})
    assert done.status_code == 303
    run_id = done.headers["location"].removeprefix("/runs/")
    await _settle(engine)
    page = await client.get(f"/runs/{run_id}")
    assert page.status_code == 200 and "tidings/function.invoked" in page.text
    assert HOSTILE not in page.text
    api = (await client.get(f"/v1/runs/{run_id}")).json()["data"]
    assert (api["status"], api["output"]) == ("Completed", HOSTILE)
    missing = await client.get("/functions/shop-nope/invoke")
    assert missing.status_code == 404


async def test_large_values_are_cut_and_load_all_brings_the_whole_value_in_place(
        engine: Engine, client: httpx.AsyncClient) -> None:
    client_app = tidings.Tidings(app_id="big")
    long_text = "x" * 5_000 + HOSTILE

    @client_app.function(id="big", trigger=tidings.TriggerEvent(event="big/one"), retries=1)
    async def big(ctx: tidings.Context) -> Any:
        await ctx.step.run("many", lambda: list(range(1_000)))
        await ctx.step.run("long", lambda: {"text": long_text})
        if ctx.attempt == 0:
            raise RuntimeError(long_text)
        return list(range(600))

    await engine.start(client_app)
    [event_id] = await engine.send({"name": "big/one", "data": {"items": list(range(900))}})
    await _settle(engine, advance_ms=60_000)
    [run] = await engine.runs()
    page = await client.get(f"/runs/{run.id}")
    assert page.status_code == 200 and HOSTILE not in page.text
    links = re.findall(r'<a class="load-all" href="([^"]+)" hx-get="\1" hx-target="closest \.json"',
                       page.text)
    api = (await client.get(f"/v1/runs/{run.id}")).json()["data"]
    steps = {step["name"]: step for step in api["steps"]}
    expected = {"of=output": api["output"], "of=step&amp;step=" + steps["many"]["id"]:
                steps["many"]["output"],
                "of=step&amp;step=" + steps["long"]["id"]: steps["long"]["output"]}
    for query, value in expected.items():
        link = f"/runs/{run.id}/value?{query}"
        assert link in links, (link, links)
        whole = await client.get(link.replace("&amp;", "&"))
        assert whole.status_code == 200 and whole.text.startswith('<div class="json json-all">')
        assert HOSTILE not in whole.text
        shown = re.fullmatch(r'<div class="json json-all"><pre>(.*)</pre></div>', whole.text,
                             re.S)
        assert shown is not None and json.loads(html.unescape(shown.group(1))) == value
    assert api["error"] is None and api["status"] == "Completed"
    for params, status in (({"of": "nope"}, 400), ({"of": "step", "step": "nope"}, 404)):
        assert (await client.get(f"/runs/{run.id}/value", params=params)).status_code == status
    event_page = await client.get(f"/events/{event_id}")
    assert f'href="/events/{event_id}/value?of=data"' in event_page.text
    data = await client.get(f"/events/{event_id}/value", params={"of": "data"})
    assert data.status_code == 200 and "899" in data.text


async def test_rerun_from_a_step_on_the_run_page(engine: Engine,
                                                 client: httpx.AsyncClient) -> None:
    await engine.start(shop({}))
    await engine.send({"name": "shop/checkout", "data": {}})
    await _settle(engine, advance_ms=10 * 60_000)
    [run] = await engine.runs()
    page = await client.get(f"/runs/{run.id}")
    steps = (await client.get(f"/v1/runs/{run.id}")).json()["data"]["steps"]
    charge = next(step["id"] for step in steps if step["name"] == "charge")
    assert f'name="from_step" value="{charge}"' in page.text
    token = await csrf(client)
    done = await client.post(f"/runs/{run.id}/rerun", headers=ORIGIN,
                             data={**token, "from_step": charge})
    assert done.status_code == 303
    new_id = done.headers["location"].removeprefix("/runs/")
    new = (await client.get(f"/v1/runs/{new_id}")).json()["data"]
    assert new["rerun_of"] == run.id
    assert [step["name"] for step in new["steps"]] == ["load"]  # recorded before charge
    missing = await client.post(f"/runs/{run.id}/rerun", headers=ORIGIN,
                                data={**token, "from_step": "<script>x"})
    assert missing.status_code == 404 and "<script>x" not in missing.text
