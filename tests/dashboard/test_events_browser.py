"""The events pages in a real browser: an event sent with curl appears live, the send form
shows the API's field errors and sends a good event, hostile text stays text."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from playwright.async_api import Page, expect

from tests.conftest import LiveServer
from tests.dashboard.conftest import shoot

HOSTILE = "<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>"


async def _curl(server: LiveServer, event: dict[str, Any]) -> str:
    """Send with the real curl, as a user would."""
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-X", "POST", f"{server.url}/e/any-key", "-H",
        "content-type: application/json", "-d", json.dumps(event),
        stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    assert process.returncode == 0
    return str(json.loads(out)["ids"][0])


def _no_dialogs(page: Page) -> list[str]:
    seen: list[str] = []
    page.on("dialog", lambda dialog: (seen.append(dialog.message), dialog.dismiss()))
    return seen


async def test_an_event_sent_with_curl_appears_live(page: Page, dev_server: LiveServer) -> None:
    await page.goto(dev_server.url + "/")
    await expect(page.locator("[sse-connect]")).to_have_attribute("data-live", "open")
    event_id = await _curl(dev_server, {"name": "shop/order.placed", "data": {"total": 42}})
    row = page.locator(f"#ev-{event_id}")
    await expect(row).to_be_visible()
    await expect(row).to_contain_text("shop/order.placed")
    await shoot(page, "events-live")
    await row.get_by_role("link").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("shop/order.placed")
    await expect(page.locator(".json")).to_contain_text('"total"')
    await shoot(page, "event-detail")


async def test_the_send_form_shows_the_api_field_error_then_sends(
        page: Page, dev_server: LiveServer) -> None:
    await page.goto(dev_server.url + "/send")
    await page.get_by_label("Name").fill("shop/cart.updated")
    await page.get_by_label("Data").fill('{"items": [1, 2,}')
    await page.get_by_role("button", name="Send").click()
    error = page.locator("#e-data")
    await expect(error).to_have_text("events[0].data is not JSON: invalid character (byte 16)")
    await expect(page.get_by_label("Data")).to_have_attribute("aria-invalid", "true")
    await shoot(page, "send-error")
    await page.get_by_label("Data").fill('{"items": [1, 2]}')
    await page.get_by_role("button", name="Send").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("shop/cart.updated")
    event_id = page.url.rsplit("/", 1)[1]
    async with httpx.AsyncClient() as http:
        stored = (await http.get(f"{dev_server.url}/v1/events/{event_id}")).json()["data"]
    assert stored["data"] == {"items": [1, 2]}


async def test_hostile_text_is_shown_as_text_everywhere(page: Page, dev_server: LiveServer) -> None:
    dialogs = _no_dialogs(page)
    await page.goto(dev_server.url + "/")
    await expect(page.locator("[sse-connect]")).to_have_attribute("data-live", "open")
    async with httpx.AsyncClient() as http:
        sent = await http.post(f"{dev_server.url}/v1/events", json={
            "name": "x/" + HOSTILE, "data": {HOSTILE: HOSTILE}, "user": {"note": HOSTILE},
            "id": HOSTILE, "source": HOSTILE, "context": {"c": HOSTILE}})
    event_id = sent.json()["data"][0]["id"]
    await expect(page.locator(f"#ev-{event_id}")).to_contain_text(HOSTILE)  # live row
    await page.goto(dev_server.url + "/")  # rendered row
    await expect(page.locator(f"#ev-{event_id}")).to_contain_text(HOSTILE)
    await page.goto(f"{dev_server.url}/events/{event_id}")
    await expect(page.get_by_role("heading", level=1)).to_have_text("x/" + HOSTILE)
    await expect(page.locator("dl.facts")).to_contain_text(HOSTILE)
    await page.goto(dev_server.url + "/?name=" + httpx.QueryParams({"n": HOSTILE})["n"])
    await expect(page.get_by_label("Name (exact, or prefix/*)")).to_have_value(HOSTILE)
    await shoot(page, "hostile")
    assert await page.evaluate("window.__pwned") is None
    assert dialogs == []


async def test_erasing_the_person_of_an_event(page: Page, dev_server: LiveServer) -> None:
    event_id = await _curl(dev_server, {"name": "shop/signup", "data": {},
                                        "user": {"external_id": "person-3",
                                                 "email": "lin@example.com"}})
    dialogs = _no_dialogs(page)
    await page.goto(f"{dev_server.url}/events/{event_id}")
    await page.get_by_role("button", name="Erase this person…").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Erase a person")
    await expect(page.get_by_label("keep them")).to_be_checked()
    await page.get_by_label("delete them").check()
    await shoot(page, "erase-confirm")
    await page.get_by_role("button", name="Erase this person").click()
    await expect(page.locator("#erased")).to_contain_text("person-3")
    await expect(page.locator('[data-count="events_deleted"]')).to_have_text("1")
    await shoot(page, "erase-done")
    assert dialogs == []
    async with httpx.AsyncClient() as http:
        gone = await http.get(f"{dev_server.url}/v1/events/{event_id}")
    assert gone.status_code == 404
