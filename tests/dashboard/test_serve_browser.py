"""The dashboard of ``tidings serve`` on PostgreSQL, in a real browser: closed until signed in
with an API key, a run completed by a worker in another process shown live (the worker's
``NOTIFY`` wakes the page: its periodic read is ten minutes away), CSRF required on actions,
sign-out."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.acceptance.sdk_apps import ProductionKeys, production_keys
from tests.conftest import ROOT, TIDINGS, LiveServer, start_server, stop_process, stop_server
from tests.dashboard.conftest import shoot

pytestmark = pytest.mark.postgres


@pytest.fixture
def production(tmp_path: Path, pg_url: str) -> Iterator[tuple[LiveServer, ProductionKeys]]:
    """``tidings serve`` with no function of its own, and a ``tidings worker`` process running
    ``shop_app`` against the same database. The server's live pages read again only when told
    (their periodic read is ten minutes away)."""
    keys = production_keys(tmp_path, db=pg_url)
    env = {**keys.env, "PYTHONPATH": str(ROOT), "TIDINGS_LIVE_RESCAN": "600"}
    server = start_server(tmp_path, "--db", pg_url, "--env", "production", command="serve",
                          env=env)
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [TIDINGS, "worker", "tests.dashboard.shop_app:client", "--db", pg_url, "--env",
         "production", "--retry-interval", "0.05"],
        cwd=tmp_path, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not any(f["slug"] == "dash-shop-nap" for f in httpx.get(
                f"{server.url}/v1/functions",
                headers={"authorization": f"Bearer {keys.api_key}"}).json()["data"]):
            assert time.monotonic() < deadline, "the worker did not register its functions"
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            time.sleep(0.1)
        yield server, keys
    finally:
        stop_process(worker)
        log.close()
        stop_server(server)


async def test_serve_signs_in_shows_a_workers_run_live_and_wants_csrf(
        page: Page, production: tuple[LiveServer, ProductionKeys]) -> None:
    server, keys = production
    await page.goto(f"{server.url}/runs")
    await expect(page).to_have_url(f"{server.url}/signin?next=%2Fruns")
    await expect(page).to_have_title("[PRODUCTION] Sign in · Tidings")
    await page.get_by_label("API key").fill(keys.event_key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#e-key")).to_contain_text("this is an event key")
    await page.get_by_label("API key").fill(keys.api_key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(f"{server.url}/runs")
    await expect(page.locator("#current-env")).to_have_text("production")
    cookie = next(c for c in await page.context.cookies() if c["name"] == "tidings_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # The worker, in another process, completes a run two seconds after anything else
    # happened: the runs list (open) shows it.
    dawdle = await _run_of(server, keys, "shop/dawdle")
    await expect(page.locator(f"#run-{dawdle} .pill")).to_have_text("Completed")
    await shoot(page, "serve-runs-live")

    runs = [{"id": await _run_of(server, keys, "shop/nap")}]
    await page.goto(f"{server.url}/runs/{runs[0]['id']}")
    # The worker, in another process, takes the run to its sleep: the page follows.
    await expect(page.locator("#run-status")).to_have_text("Sleeping", timeout=30_000)
    await expect(page.locator(".lane", has_text="before").locator(".bar")).to_have_text(
        "completed")
    await shoot(page, "serve-run-live")

    refused = await page.request.post(f"{server.url}/runs/{runs[0]['id']}/cancel",
                                      headers={"origin": server.url}, form={})
    assert refused.status == 403 and "CSRF" in await refused.text()
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_role("button", name="Cancel run").click()
    await expect(page.locator("#run-status")).to_have_text("Cancelled")

    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(f"{server.url}/signin")
    await page.goto(f"{server.url}/")
    await expect(page).to_have_url(f"{server.url}/signin?next=%2F")


async def _run_of(server: LiveServer, keys: ProductionKeys, name: str) -> str:
    """Send an event; the id of the run it started (the router of the serve process starts
    it)."""
    async with httpx.AsyncClient() as http:
        sent = await http.post(f"{server.url}/e/{keys.event_key}", json={"name": name, "data": {}})
        event_id = sent.json()["ids"][0]
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            runs = (await http.get(f"{server.url}/v1/events/{event_id}/runs", headers={
                "authorization": f"Bearer {keys.api_key}"})).json()["data"]
            if runs:
                return str(runs[0]["id"])
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
