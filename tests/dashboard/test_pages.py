"""The dashboard's pages over ASGI, on both backends: what they show, how they refuse bad input
(a 404 page, the parser's error next to the filter, hostile text escaped), and the search they
share with ``GET /v1/events``."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings
from tidings.core import Core
from tidings.server import create_app

HOSTILE = "<script>alert(1)</script>"


async def csrf(client: httpx.AsyncClient) -> str:
    """The CSRF token the dashboard's forms carry."""
    page = await client.get("/send")
    found = re.search(r'name="_csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


async def _send(client: httpx.AsyncClient, *events: dict[str, object]) -> list[str]:
    response = await client.post("/v1/events", json=list(events))
    assert response.status_code == 200, response.text
    return [record["id"] for record in response.json()["data"]]


async def test_the_home_page_lists_events_newest_first(client: httpx.AsyncClient) -> None:
    first, second = await _send(client, {"name": "shop/a", "data": {}},
                                {"name": "shop/b", "data": {}})
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "[dev]" in page.text and "Development server" in page.text
    assert page.text.index(second) < page.text.index(first)
    assert 'sse-connect="/live/events?after=' + second in page.text


async def test_filters_by_name_prefix_and_condition(client: httpx.AsyncClient) -> None:
    pro, free, other = await _send(
        client, {"name": "billing/paid", "data": {"plan": "pro"}},
        {"name": "billing/paid", "data": {"plan": "free"}},
        {"name": "shop/paid", "data": {"plan": "pro"}})
    page = await client.get("/", params={"name": "billing/*", "if": "event.data.plan == 'pro'"})
    assert pro in page.text and free not in page.text and other not in page.text
    api = await client.get("/v1/events", params={"name": "billing/*"})
    assert [e["id"] for e in api.json()["data"]] == [free, pro]
    api = await client.get("/v1/events", params={"if": "event.data.plan == 'pro'"})
    assert [e["id"] for e in api.json()["data"]] == [other, pro]


async def test_a_condition_page_is_cut_and_carries_on(client: httpx.AsyncClient) -> None:
    ids = await _send(client, *({"name": "n/x", "data": {"i": i}} for i in range(5)))
    first = (await client.get("/v1/events", params={"if": "event.data.i % 2 == 0",
                                                      "limit": "2"})).json()
    assert [e["data"]["i"] for e in first["data"]] == [4, 2]
    assert first["cursor"] == ids[2]
    rest = (await client.get("/v1/events", params={"if": "event.data.i % 2 == 0", "limit": "2",
                                                     "cursor": first["cursor"]})).json()
    assert [e["data"]["i"] for e in rest["data"]] == [0]
    assert rest["cursor"] is None


@pytest.mark.parametrize(("params", "field", "message"), [
    ({"if": "event.data.("}, "if", "if: invalid expression"),
    ({"if": "event.name"}, "if", "a condition must be true or false"),
    ({"if": "foo(1)"}, "if", "undefined function(s) foo"),
    ({"since": "yesterday"}, "since", "since: expected an ISO-8601 time"),
    ({"name": "x" * 1000}, "name", "name: an event name has at most"),
])
async def test_a_bad_filter_shows_the_error_next_to_it(
        client: httpx.AsyncClient, params: dict[str, str], field: str, message: str) -> None:
    page = await client.get("/", params=params)
    assert page.status_code == 400
    found = re.search(rf'<p class="field-error" id="e-{field}">([^<]*)</p>', page.text)
    assert found is not None and message.replace("'", "&#39;") in found.group(1)
    api = await client.get("/v1/events", params=params)
    assert api.status_code == 400 and message in api.json()["error"]


async def test_unknown_ids_give_a_404_page(client: httpx.AsyncClient) -> None:
    for path in ("/events/01ARZ3NDEKTSV4RRFFQ69G5FAV", "/events/not-an-id",
                 f"/events/{HOSTILE}"):
        page = await client.get(path)
        assert page.status_code == 404
        assert "<h1>Not found</h1>" in page.text and HOSTILE not in page.text


async def test_hostile_text_is_escaped(client: httpx.AsyncClient) -> None:
    [event_id] = await _send(client, {"name": "x/" + HOSTILE, "data": {HOSTILE: HOSTILE},
                                      "user": {"u": HOSTILE}, "id": HOSTILE,
                                      "source": HOSTILE, "context": {"c": HOSTILE}})
    pages = [await client.get("/"), await client.get(f"/events/{event_id}"),
             await client.get("/", params={"name": HOSTILE, "if": HOSTILE})]
    for page in pages:
        assert HOSTILE not in page.text
        assert "&lt;script&gt;" in page.text


async def test_event_detail_shows_runs_delivery_and_copies(client: httpx.AsyncClient) -> None:
    [event_id] = await _send(client, {"name": "shop/later", "data": {"n": 1},
                                      "deliver_at": "2099-01-01T00:00:00Z"})
    page = await client.get(f"/events/{event_id}")
    assert "d-delayed" in page.text and "until 2099-01-01T00:00:00.000Z" in page.text
    assert "curl -X POST http://tidings/e/$TIDINGS_EVENT_KEY" in page.text
    assert "client.send(tidings.Event(name=&#39;shop/later&#39;, data={&#39;n&#39;: 1}))" \
        in page.text
    token = {"_csrf": await csrf(client)}
    cancelled = await client.post(f"/events/{event_id}/cancel", data=token,
                                  headers={"origin": "http://tidings"})
    assert cancelled.status_code == 303
    page = await client.get(f"/events/{event_id}")
    assert "d-cancelled" in page.text
    again = await client.post(f"/events/{event_id}/cancel", data=token,
                              headers={"origin": "http://tidings"})
    assert again.status_code == 409 and "already cancelled" in again.text


async def test_actions_from_another_site_are_refused(client: httpx.AsyncClient) -> None:
    token = await csrf(client)
    for headers in ({}, {"origin": "http://evil.example"}):
        response = await client.post("/send", data={"name": "a", "data": "{}", "_csrf": token},
                                     headers=headers)
        assert response.status_code == 403
    for bad in ("", "x" + token):  # same origin, without the form's token
        response = await client.post("/send", data={"name": "a", "data": "{}", "_csrf": bad},
                                     headers={"origin": "http://tidings"})
        assert response.status_code == 403 and "CSRF token" in response.text
    assert (await client.get("/v1/events")).json()["data"] == []


async def test_send_form_errors_are_the_api_s(client: httpx.AsyncClient) -> None:
    origin = {"origin": "http://tidings"}
    token = await csrf(client)
    cases = [({"name": "", "data": "{}"}, "name", "events[0].name: must be a non-empty string"),
             ({"name": "a", "data": "[1]"}, "data", "events[0].data: expected `object | null`"),
             ({"name": "a", "data": "{", "ts": ""}, "data", "events[0].data is not JSON"),
             ({"name": "a", "data": "{}", "ts": "soon"}, "ts", "events[0].ts: expected `int"),
             ({"name": "a", "data": "{}", "user": "1"}, "user", "events[0].user")]
    for form, field, message in cases:
        page = await client.post("/send", data={**form, "_csrf": token}, headers=origin)
        assert page.status_code == 400, page.text
        found = re.search(rf'<p class="field-error" id="e-{field}">([^<]*)</p>', page.text)
        assert found is not None and message in found.group(1).replace("&#39;", "'"), page.text
    assert (await client.get("/v1/events")).json()["data"] == []
    sent = await client.post("/send", data={"name": "ok/sent", "data": '{"a": 1}',
                                            "user": '{"email": "a@b.c"}', "_csrf": token},
                             headers=origin)
    assert sent.status_code == 303
    stored = (await client.get("/v1/events")).json()["data"]
    assert [(e["name"], e["data"], e["user"]) for e in stored] == [
        ("ok/sent", {"a": 1}, {"email": "a@b.c"})]
    assert sent.headers["location"] == f"/events/{stored[0]['id']}"


async def test_assets_are_hashed_and_cached_for_long(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    urls = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert any("htmx.min." in url for url in urls) and any("dashboard." in url for url in urls)
    for url in urls:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        again = await client.get(url, headers={"if-none-match": asset.headers["etag"]})
        assert again.status_code == 304
    assert (await client.get("/static/dashboard.css")).status_code == 404


async def test_the_dashboard_is_closed_under_serve(db_url: str, tmp_path: Path) -> None:
    core = await Core.start(make_settings(db_url, tmp_path, mode="serve"))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(
                core.settings, core)), base_url="http://tidings") as http:
            page = await http.get("/")
            event = await http.get("/events/01ARZ3NDEKTSV4RRFFQ69G5FAV?x=1")
            live = await http.get("/live/events")
            sign_in = await http.get("/signin")
    finally:
        await core.close()
    assert page.status_code == 303 and page.headers["location"] == "/signin?next=%2F"
    assert event.headers["location"] == (
        "/signin?next=%2Fevents%2F01ARZ3NDEKTSV4RRFFQ69G5FAV%3Fx%3D1")
    assert live.status_code == 401
    assert sign_in.status_code == 200 and "API key" in sign_in.text


async def test_dashboard_passwords_sign_in_and_only_those_that_read_user_see_it(
        db_url: str, tmp_path: Path) -> None:
    from tests.acceptance.test_cli import cli, ok
    from tidings.keys import create_key

    made = {}
    for name, flags in (("reader", ["--reads-user"]), ("plain", [])):
        result = cli(tmp_path, "keys", "create-dashboard", "--env", "production", "--db",
                     db_url, *flags)
        made[name] = ok(result).strip()
        assert made[name].startswith("tdp_") and "only time it is shown" in result.stderr
    listing = ok(cli(tmp_path, "keys", "list", "--db", db_url))
    assert "dashboard (reads user)" in listing and made["reader"] not in listing
    core = await Core.start(make_settings(db_url, tmp_path, mode="serve"))
    try:
        api_key, _ = await create_key(core.storage, "production", "api")
        event_key, _ = await create_key(core.storage, "production", "event")
        origin = {"origin": "https://tidings"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(
                core.settings, core)), base_url="https://tidings") as http:
            [event_id] = (await http.post(f"/e/{event_key}", json={
                "name": "signup", "data": {"plan": "pro"},
                "user": {"email": "ada@example.com"}})).json()["ids"]

            async def event_page(secret: str) -> httpx.Response:
                http.cookies.clear()
                signed = await http.post("/signin", data={"key": secret, "next": "/"},
                                         headers=origin)
                assert signed.status_code == 303, signed.text[-1500:]
                return await http.get(f"/events/{event_id}")

            reader = await event_page(made["reader"])
            plain = await event_page(made["plain"])
            by_key = await event_page(api_key)
            for bad in (made["reader"][:-2] + "xx", "tdp_000000000000_nope",
                        "tdp_1_" + HOSTILE):
                http.cookies.clear()
                refused = await http.post("/signin", data={"key": bad}, headers=origin)
                assert refused.status_code == 401 and HOSTILE not in refused.text
                assert "dashboard password not found, revoked or wrong" in refused.text
            # Revoking a password ends its sessions at their next request.
            await event_page(made["plain"])
            ids = [line.strip("│ ").split()[0] for line in listing.splitlines()
                   if "dashboard" in line and "reads user" not in line]
            ok(cli(tmp_path, "keys", "revoke", ids[0], "--db", db_url))
            after = await http.get(f"/events/{event_id}")
    finally:
        await core.close()
    assert reader.status_code == 200 and "ada@example.com" in reader.text
    assert 'id="user-masked"' not in reader.text
    for page in (plain, by_key):
        assert page.status_code == 200 and "ada@example.com" not in page.text
        assert 'id="user-masked"' in page.text and "Masked: 1 key" in page.text
        assert "&#34;plan&#34;" in page.text or "plan" in page.text
    assert after.status_code == 303 and after.headers["location"].startswith("/signin")
