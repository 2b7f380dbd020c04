"""The functions and apps pages in a real browser: functions with their triggers, adding an
app by URL and reading its sync error word for word."""

from __future__ import annotations

import httpx
from playwright.async_api import Page, expect

from tests.conftest import LiveServer, free_port
from tests.dashboard.conftest import shoot


async def test_add_an_app_by_url_and_see_its_sync_error(
        page: Page, dev_server: LiveServer) -> None:
    url = f"http://127.0.0.1:{free_port()}/api/inngest"  # nothing listens there
    await page.goto(f"{dev_server.url}/apps")
    await page.get_by_label("Add an app by URL").fill(url)
    await page.get_by_role("button", name="Add and sync").click()
    await expect(page.locator("#sync-result")).to_contain_text(
        f"{url}: unreachable: cannot reach the app")
    async with httpx.AsyncClient() as http:
        [app] = (await http.get(f"{dev_server.url}/v1/apps")).json()["data"]
    row = page.locator("tr", has_text=url)
    await expect(row.locator(".sync-error")).to_have_text(app["error"])
    await shoot(page, "apps-sync-error")
    await row.get_by_role("button", name="Resync").click()
    await expect(page.locator("#sync-result")).to_contain_text("unreachable")


async def test_an_app_url_the_api_refuses_is_refused_with_its_words(
        page: Page, dev_server: LiveServer) -> None:
    await page.goto(f"{dev_server.url}/apps")
    await page.get_by_label("Add an app by URL").fill("ftp://example.com/x")
    await page.get_by_role("button", name="Add and sync").click()
    await expect(page.locator("#e-url")).to_have_text(
        'url: expected {"url": "http(s)://…"}, the URL the app serves')


async def test_functions_show_their_triggers(page: Page, dev_server: LiveServer) -> None:
    await page.goto(f"{dev_server.url}/functions")
    row = page.locator("#fn-dash-shop-checkout")
    await expect(row).to_contain_text("event shop/checkout")
    await expect(row).to_contain_text("native")
    await shoot(page, "functions")
