"""The runs pages in a real browser: a run's timeline (steps, a retry, a sleep), cancelling a
sleeping run from its page, a bulk replay with its preview."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
from playwright.async_api import Page, expect

from tests.conftest import LiveServer
from tests.dashboard.conftest import shoot


async def _send(server: LiveServer, *events: dict[str, Any]) -> list[str]:
    async with httpx.AsyncClient() as http:
        sent = await http.post(f"{server.url}/v1/events", json=list(events))
    return [record["id"] for record in sent.json()["data"]]


async def _run_of(server: LiveServer, event_id: str, status: str | None = None) -> str:
    """The run the event started (once it has ``status``, when given)."""
    deadline = asyncio.get_running_loop().time() + 20
    async with httpx.AsyncClient() as http:
        while True:
            runs = (await http.get(f"{server.url}/v1/events/{event_id}/runs")).json()["data"]
            if runs and (status is None or runs[0]["status"] == status):
                return str(runs[0]["id"])
            assert asyncio.get_running_loop().time() < deadline, runs
            await asyncio.sleep(0.05)


async def test_a_runs_timeline_shows_steps_a_retry_and_a_sleep(
        page: Page, dev_server: LiveServer) -> None:
    [event_id] = await _send(dev_server, {"name": "shop/checkout", "data": {"items": 2}})
    run_id = await _run_of(dev_server, event_id)
    await page.goto(f"{dev_server.url}/runs/{run_id}")
    # Live: the page follows the run until it completes, without a reload.
    await expect(page.locator("#run-status")).to_have_text("Completed", timeout=60_000)
    timeline = page.get_by_role("figure", name="Timeline of the run")
    lanes = timeline.locator(".lane-name")
    await expect(lanes).to_have_text(["queue", "load-cart", "charge-card", "cool-down",
                                      "send-receipt"])
    charge = timeline.locator(".lane", has_text="charge-card")
    await expect(charge.locator(".bar.b-failed")).to_have_text("attempt 1 failed")
    await expect(charge.locator(".bar.b-completed")).to_have_text("completed on attempt 2")
    await expect(timeline.locator(".lane", has_text="cool-down").locator(".bar.k-sleep")) \
        .to_have_text("slept")
    step = page.locator(".step", has_text="charge-card")
    await step.locator("summary").first.click()
    await expect(step.locator(".attempt")).to_contain_text(
        "card declined <script>alert(1)</script>")
    await shoot(page, "run-timeline")


async def test_cancel_a_sleeping_run_from_its_page(page: Page, dev_server: LiveServer) -> None:
    [event_id] = await _send(dev_server, {"name": "shop/nap", "data": {}})
    run_id = await _run_of(dev_server, event_id, "Sleeping")
    await page.goto(f"{dev_server.url}/runs/{run_id}")
    await expect(page.locator("#run-status")).to_have_text("Sleeping")
    await expect(page.locator(".lane", has_text="long-nap").locator(".bar")).to_have_text(
        "sleeping")
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_role("button", name="Cancel run").click()
    await expect(page.locator("#run-status")).to_have_text("Cancelled")
    await expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    async with httpx.AsyncClient() as http:
        run = (await http.get(f"{dev_server.url}/v1/runs/{run_id}")).json()["data"]
    assert run["status"] == "Cancelled"
    await shoot(page, "run-cancelled")


async def test_bulk_replay_shows_a_preview_and_keeps_the_filters(
        page: Page, dev_server: LiveServer) -> None:
    ids = await _send(dev_server, *({"name": "shop/quick", "data": {"n": n}} for n in range(3)))
    for event_id in ids:
        await _run_of(dev_server, event_id, "Completed")
    await _send(dev_server, {"name": "shop/checkout", "data": {}})  # another function
    since, until = "2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z"
    await page.goto(f"{dev_server.url}/runs?function=dash-shop-quick&status=completed"
                    f"&since={since}&until={until}")
    await expect(page.locator("#run-rows tr")).to_have_count(3)
    await page.get_by_role("button", name="Replay…").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Replay 3 runs?")
    await expect(page.locator("#preview")).to_contain_text("3 runs match now")
    await shoot(page, "bulk-preview")
    await page.get_by_role("button", name="Yes, replay 3").click()
    await expect(page.locator("p.ok")).to_have_text("Done: replaying 3 runs of dash-shop-quick")
    assert "function=dash-shop-quick" in page.url and "status=completed" in page.url
    await expect(page.get_by_label("Function")).to_have_value("dash-shop-quick")
    await expect(page.locator("#run-rows tr")).to_have_count(6, timeout=60_000)


async def test_invoke_from_the_functions_page_and_load_a_whole_value_in_place(
        page: Page, dev_server: LiveServer) -> None:
    await page.goto(f"{dev_server.url}/functions")
    await page.locator("#fn-dash-shop-quick").get_by_role("link", name="Invoke…").click()
    await page.get_by_label("Data").fill("[1]")
    await page.get_by_role("button", name="Invoke").click()
    await expect(page.locator("#e-data")).to_have_text("data: must be a JSON object")
    await page.get_by_label("Data").fill('{"n": 7, "note": "<script>alert(1)</script>"}')
    await shoot(page, "function-invoke")
    await page.get_by_role("button", name="Invoke").click()
    await expect(page.locator("#run-status")).to_have_text("Completed", timeout=30_000)
    assert "/runs/" in page.url
    await expect(page.locator("section.actions ~ h2", has_text="Output")).to_have_count(1)
    await expect(page.get_by_role("link", name="tidings/function.invoked")).to_have_count(1)

    [event_id] = await _send(dev_server, {"name": "shop/quick",
                                          "data": {"n": 1, "items": list(range(900))}})
    await page.goto(f"{dev_server.url}/events/{event_id}")
    data = page.locator("section", has=page.get_by_role("heading", name="Data"))
    await expect(data.locator(".cut")).to_contain_text("cut after 400 values")
    await data.get_by_role("link", name="load all").click()
    await expect(data.locator(".json-all pre")).to_contain_text('"items"')
    await expect(data.locator(".json-all pre")).to_contain_text("899")
    await expect(data.locator(".cut")).to_have_count(0)
    assert page.url == f"{dev_server.url}/events/{event_id}"  # in place, no navigation
    await shoot(page, "event-load-all")


async def test_rerun_from_a_step_and_filter_runs_by_app_and_event(
        page: Page, dev_server: LiveServer) -> None:
    [event_id] = await _send(dev_server, {"name": "shop/checkout", "data": {"items": 3}})
    run_id = await _run_of(dev_server, event_id, "Completed")
    await page.goto(f"{dev_server.url}/runs/{run_id}")
    step = page.locator(".step", has_text="send-receipt")
    await step.locator("summary").first.click()
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await step.get_by_role("button", name="Rerun from this step").click()
    await expect(page.locator("#run-status")).to_have_text("Completed", timeout=30_000)
    assert run_id not in page.url
    new_id = page.url.rsplit("/", 1)[1]
    async with httpx.AsyncClient() as http:
        new = (await http.get(f"{dev_server.url}/v1/runs/{new_id}")).json()["data"]
    assert new["rerun_of"] == run_id
    reused = [s for s in new["steps"] if s["name"] in ("load-cart", "charge-card")]
    assert [s["failed_attempts"] for s in reused] == [[], []]  # recorded results, not rerun
    # Drawn as reused where this run started, not at the times they ran in the first run.
    timeline = page.get_by_role("figure", name="Timeline of the run")
    for name in ("load-cart", "charge-card", "cool-down"):
        bar = timeline.locator(".lane", has_text=name).locator(".bar")
        await expect(bar).to_have_class(re.compile(r"\bb-reused\b"))
        await expect(bar).to_have_text(f"reused from run {run_id}")
    await expect(timeline.locator(".lane", has_text="send-receipt").locator(".bar")) \
        .to_have_class(re.compile(r"\bb-completed\b"))
    await expect(page.locator(".step .reused")).to_have_count(3)
    await shoot(page, "run-rerun-from-step")

    await page.goto(f"{dev_server.url}/runs?app=dash-shop&event_id={event_id}&time=ended")
    rows = page.locator("#run-rows tr[data-row]")
    await expect(rows).to_have_count(2)  # the run and its rerun
    await page.get_by_label("Event id").fill("<script>alert(1)</script>")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("#e-event_id")).to_contain_text(
        "event_id: expected an event id (26 characters, a ULID), got '<script>alert(1)</script>'")
    await shoot(page, "runs-filter-error")


async def test_a_run_page_stops_streaming_once_its_run_ended(
        page: Page, dev_server: LiveServer) -> None:
    """The page follows the run while it is active; once it ended, the stream closes (the
    page's ``sse-close``) and the browser opens no other: no read for an ended run. Its rerun,
    a new run, is followed live on its own page."""
    await page.add_init_script("""
        window.streams = {opened: 0, closed: []};
        document.addEventListener("htmx:sseOpen", () => { window.streams.opened += 1; });
        document.addEventListener("htmx:sseClose",
                                  (e) => { window.streams.closed.push(e.detail.type); });
    """)
    [event_id] = await _send(dev_server, {"name": "shop/nap", "data": {}})
    run_id = await _run_of(dev_server, event_id, "Sleeping")
    await page.goto(f"{dev_server.url}/runs/{run_id}")
    await page.wait_for_function("() => window.streams.opened == 1")
    async with httpx.AsyncClient() as http:  # it ends elsewhere while its page is open
        cancelled = await http.post(f"{dev_server.url}/v1/runs/{run_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
    await expect(page.locator("#run-status")).to_have_text("Cancelled")
    await page.wait_for_function("() => window.streams.closed.length > 0")
    streams = await page.evaluate("window.streams")
    assert streams == {"opened": 1, "closed": ["message"]}, streams
    await expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    await shoot(page, "run-ended")

    await page.get_by_role("button", name="Rerun", exact=True).click()
    await expect(page.get_by_role("link", name=run_id)).to_be_visible()  # "Rerun of"
    assert run_id not in page.url
    await expect(page.locator("#run-status")).to_have_text("Sleeping")
    await expect(page.locator(".lane", has_text="long-nap").locator(".bar")).to_have_text(
        "sleeping")
    assert (await page.evaluate("window.streams"))["opened"] == 1  # its own, live
