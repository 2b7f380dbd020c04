"""Reading the event log: ``GET /v1/events`` and ``GET /v1/events/{id}``; sending with records
back (``POST /v1/events``)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings
from tests.unit.helpers import app_client
from tidings.keys import create_key


async def _send_spread(client: httpx.AsyncClient, count: int) -> list[str]:
    base = 1_800_000_000_000
    ids = []
    for i in range(count):
        seed = f"{base + i * 1000},AAAAAAAAAAAAAA=="
        reply = await client.post("/e/k", json={"name": "app/a" if i % 2 else "app/b",
                                                "data": {"i": i}},
                                  headers={"x-inngest-event-id-seed": seed})
        ids.extend(reply.json()["ids"])
    return ids


async def test_pages_follow_the_cursor_newest_first(client: httpx.AsyncClient) -> None:
    ids = await _send_spread(client, 7)
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/events", params=params)).json()
        seen.extend(e["id"] for e in page["data"])
        cursor = page["cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


async def test_filters_by_name_and_time(client: httpx.AsyncClient) -> None:
    ids = await _send_spread(client, 6)
    named = (await client.get("/v1/events", params={"name": "app/a"})).json()["data"]
    assert [e["id"] for e in named] == [ids[5], ids[3], ids[1]]
    window = (await client.get("/v1/events", params={
        "since": "2027-01-15T08:00:01Z", "until": 1_800_000_004_000})).json()["data"]
    assert [e["id"] for e in window] == [ids[3], ids[2], ids[1]]


@pytest.mark.parametrize(("params", "words"), [
    ({"limit": "0"}, "limit"),
    ({"limit": "1001"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"since": "last week"}, "since"),
    ({"until": "2030-01-01T00:00:00"}, "until"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"colour": "blue"}, "colour"),
])
async def test_bad_parameters_are_400_naming_them(
    client: httpx.AsyncClient, params: dict[str, str], words: str
) -> None:
    reply = await client.get("/v1/events", params=params)
    assert reply.status_code == 400
    assert words in reply.json()["error"]


async def test_unknown_event_is_404(client: httpx.AsyncClient) -> None:
    for event_id in ["01HQ8PTAESBZPBDS8JTRZZYY3S", "nonsense"]:
        reply = await client.get(f"/v1/events/{event_id}")
        assert reply.status_code == 404
        assert event_id in reply.json()["error"]


async def test_unknown_route_is_json_404(client: httpx.AsyncClient) -> None:
    reply = await client.get("/nowhere")
    assert reply.status_code == 404 and reply.json()["status"] == 404


async def test_send_with_records_back(client: httpx.AsyncClient) -> None:
    reply = await client.post("/v1/events", headers={"authorization": "Bearer any"}, json=[
        {"name": "order/placed", "payload": {"total": 10}, "context": {"ip": "1.2.3.4"},
         "id": "o-1", "deliver_after": 60},
        {"name": "order/placed", "payload": {"total": 11}, "id": "o-1"},
    ])
    assert reply.status_code == 200, reply.text
    first, duplicate = reply.json()["data"]
    assert first == duplicate
    assert first["data"] == {"total": 10} and first["context"] == {"ip": "1.2.3.4"}
    assert first["event_id"] == "o-1" and first["deliver_at"] is not None
    assert first["delivered_at"] is None
    refused = await client.post("/v1/events", headers={"authorization": "Bearer any"},
                                json={"name": ""})
    assert refused.status_code == 400 and "events[0].name" in refused.json()["error"]
    # Dev needs no key, as for reads and for /e/{key} (any key): its OpenAPI document says so.
    keyless = await client.post("/v1/events", json={"name": "a"})
    assert keyless.status_code == 200


async def test_serve_requires_keys_per_environment(db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path, mode="serve")
    async with app_client(settings) as (http, core):
        prod_key, _ = await create_key(core.storage, "production", "event")
        stage_key, _ = await create_key(core.storage, "staging", "event")
        prod_api, _ = await create_key(core.storage, "production", "api")
        unknown = await http.post("/e/not-a-key", json={"name": "a"})
        assert unknown.status_code == 401
        assert unknown.json() == {"ids": [], "status": 401, "error": "Event key not found"}
        assert (await http.post(f"/e/{prod_api}", json={"name": "a"})).status_code == 401
        sent = await http.post(f"/e/{prod_key}", json={"name": "in/prod"})
        assert sent.status_code == 200
        await http.post(f"/e/{stage_key}", json={"name": "in/staging"})
        assert (await http.get("/v1/events")).status_code == 401
        assert (await http.post("/v1/events", json={"name": "a"})).status_code == 401
        assert (await http.get("/v1/events", headers={
            "authorization": f"Bearer {prod_key}"})).status_code == 401
        listed = await http.get("/v1/events", headers={"authorization": f"Bearer {prod_api}"})
        assert [e["name"] for e in listed.json()["data"]] == ["in/prod"]
        assert (await http.get("/health")).headers["x-inngest-server-kind"] == "cloud"
