"""The events pages in a real browser: an event sent with curl appears live, the send form
shows the API's field errors and sends a good event, hostile text stays text."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from tests.conftest import LiveServer
from tests.dashboard.conftest import shoot

HOSTILE = "<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>"


def _curl(server: LiveServer, event: dict[str, Any]) -> str:
    out = subprocess.run(
        ["curl", "-sS", "-X", "POST", f"{server.url}/e/any-key", "-H",
         "content-type: application/json", "-d", json.dumps(event)],
        check=True, capture_output=True, text=True, timeout=30).stdout
    return str(json.loads(out)["ids"][0])


def _no_dialogs(page: Page) -> list[str]:
    seen: list[str] = []
    page.on("dialog", lambda dialog: (seen.append(dialog.message), dialog.dismiss()))
    return seen


def test_an_event_sent_with_curl_appears_live(page: Page, dev_server: LiveServer) -> None:
    page.goto(dev_server.url + "/")
    expect(page.locator("[sse-connect]")).to_have_attribute("data-live", "open")
    event_id = _curl(dev_server, {"name": "shop/order.placed", "data": {"total": 42}})
    row = page.locator(f"#ev-{event_id}")
    expect(row).to_be_visible()
    expect(row).to_contain_text("shop/order.placed")
    shoot(page, "events-live")
    row.get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("shop/order.placed")
    expect(page.locator(".json")).to_contain_text('"total"')
    shoot(page, "event-detail")


def test_the_send_form_shows_the_api_field_error_then_sends(
        page: Page, dev_server: LiveServer) -> None:
    page.goto(dev_server.url + "/send")
    page.get_by_label("Name").fill("shop/cart.updated")
    page.get_by_label("Data").fill('{"items": [1, 2,}')
    page.get_by_role("button", name="Send").click()
    error = page.locator("#e-data")
    expect(error).to_have_text("events[0].data is not JSON: invalid character (byte 16)")
    expect(page.get_by_label("Data")).to_have_attribute("aria-invalid", "true")
    shoot(page, "send-error")
    page.get_by_label("Data").fill('{"items": [1, 2]}')
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("shop/cart.updated")
    event_id = page.url.rsplit("/", 1)[1]
    stored = httpx.get(f"{dev_server.url}/v1/events/{event_id}").json()["data"]
    assert stored["data"] == {"items": [1, 2]}


def test_hostile_text_is_shown_as_text_everywhere(page: Page, dev_server: LiveServer) -> None:
    dialogs = _no_dialogs(page)
    page.goto(dev_server.url + "/")
    expect(page.locator("[sse-connect]")).to_have_attribute("data-live", "open")
    event_id = httpx.post(f"{dev_server.url}/v1/events", json={
        "name": "x/" + HOSTILE, "data": {HOSTILE: HOSTILE}, "user": {"note": HOSTILE},
        "id": HOSTILE, "source": HOSTILE, "context": {"c": HOSTILE}}).json()["data"][0]["id"]
    expect(page.locator(f"#ev-{event_id}")).to_contain_text(HOSTILE)  # live row
    page.goto(dev_server.url + "/")  # rendered row
    expect(page.locator(f"#ev-{event_id}")).to_contain_text(HOSTILE)
    page.goto(f"{dev_server.url}/events/{event_id}")
    expect(page.get_by_role("heading", level=1)).to_have_text("x/" + HOSTILE)
    expect(page.locator("dl.facts")).to_contain_text(HOSTILE)
    page.goto(dev_server.url + "/?name=" + httpx.QueryParams({"n": HOSTILE})["n"])
    expect(page.get_by_label("Name (exact, or prefix/*)")).to_have_value(HOSTILE)
    shoot(page, "hostile")
    assert page.evaluate("window.__pwned") is None
    assert dialogs == []
