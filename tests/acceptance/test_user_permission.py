"""Who reads events' ``user`` under ``tidings serve``, on both backends: an API key made with
``tidings keys create --kind api --reads-user`` gets it decrypted from the JSON API and on the
dashboard it signs in to; any other API key gets it masked (``{}``, ``user_masked``) and may
not export a person's events; ``tidings dev`` is unchanged (every reader sees it)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.acceptance.test_cli import cli, ok
from tests.conftest import make_settings
from tidings.core import Core
from tidings.ids import now_ms
from tidings.keys import create_key
from tidings.server import create_app

USER = {"external_id": "person-7", "email": "ada@example.com"}


async def test_only_api_keys_made_to_read_user_read_it(db_url: str, tmp_path: Path) -> None:
    reader = ok(cli(tmp_path, "keys", "create", "--env", "production", "--kind", "api",
                    "--reads-user", "--db", db_url)).strip()
    plain = ok(cli(tmp_path, "keys", "create", "--env", "production", "--kind", "api",
                   "--db", db_url)).strip()
    listing = ok(cli(tmp_path, "keys", "list", "--db", db_url))
    kinds = sorted(line.split("│")[2].strip() for line in listing.splitlines()
                   if "tda_" in line)
    assert kinds == ["api", "api (reads user)"], listing
    refused = cli(tmp_path, "keys", "create", "--env", "production", "--kind", "event",
                  "--reads-user", "--db", db_url)
    assert refused.returncode == 2 and "--reads-user is for API keys" in refused.stderr

    core = await Core.start(make_settings(db_url, tmp_path, mode="serve"))
    try:
        event_key, _ = await create_key(core.storage, "production", "event")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(
                core.settings, core)), base_url="https://tidings") as http:
            [event_id, later_id] = (await http.post(f"/e/{event_key}", json=[
                {"name": "signup", "data": {"plan": "pro"}, "user": USER},
                {"name": "signup", "data": {"plan": "team"}, "user": USER,
                 "ts": now_ms() + 3_600_000}])).json()["ids"]

            async def reads(key: str) -> dict[str, object]:
                auth = {"authorization": f"Bearer {key}"}
                one = (await http.get(f"/v1/events/{event_id}", headers=auth)).json()["data"]
                listed = (await http.get("/v1/events", params={"name": "signup"},
                                         headers=auth)).json()["data"]
                export = await http.get(f"/v1/users/{USER['external_id']}/events",
                                        headers=auth)
                return {"one": (one["user"], one["user_masked"]),
                        "listed": [(e["user"], e["user_masked"]) for e in listed],
                        "export": (export.status_code, export.text)}

            by_reader, by_plain = await reads(reader), await reads(plain)
            cancelled = await http.post(f"/v1/events/{later_id}/cancel",
                                        headers={"authorization": f"Bearer {plain}"})
            pages = {}
            for name, key in (("reader", reader), ("plain", plain)):
                http.cookies.clear()
                signed = await http.post("/signin", data={"key": key, "next": "/"},
                                         headers={"origin": "https://tidings"})
                assert signed.status_code == 303, signed.text[-500:]
                pages[name] = (await http.get(f"/events/{event_id}")).text
    finally:
        await core.close()

    assert by_reader["one"] == (USER, False)
    assert by_reader["listed"] == [(USER, False)] * 2
    status, text = by_reader["export"]  # type: ignore[misc]
    assert status == 200 and "ada@example.com" in text
    assert by_plain["one"] == ({}, True)
    assert by_plain["listed"] == [({}, True)] * 2
    status, text = by_plain["export"]  # type: ignore[misc]
    assert status == 403 and "--reads-user" in text and "ada@example.com" not in text
    assert cancelled.status_code == 200
    assert cancelled.json()["data"]["user"] == {} and cancelled.json()["data"]["user_masked"]
    assert "ada@example.com" in pages["reader"] and 'id="user-masked"' not in pages["reader"]
    assert "ada@example.com" not in pages["plain"] and 'id="user-masked"' in pages["plain"]


async def test_dev_reads_user_as_before(client: httpx.AsyncClient) -> None:
    [event_id] = (await client.post("/e/any", json={"name": "signup", "data": {},
                                                     "user": USER})).json()["ids"]
    one = (await client.get(f"/v1/events/{event_id}")).json()["data"]
    assert one["user"] == USER and one["user_masked"] is False
    export = await client.get(f"/v1/users/{USER['external_id']}/events")
    assert export.status_code == 200 and "ada@example.com" in export.text


async def test_only_api_keys_made_to_read_user_erase_a_person(db_url: str,
                                                               tmp_path: Path) -> None:
    core = await Core.start(make_settings(db_url, tmp_path, mode="serve"))
    try:
        event_key, _ = await create_key(core.storage, "production", "event")
        reader, _ = await create_key(core.storage, "production", "api", reads_user=True)
        plain, _ = await create_key(core.storage, "production", "api")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(
                core.settings, core)), base_url="https://tidings") as http:
            [event_id] = (await http.post(f"/e/{event_key}", json={
                "name": "signup", "data": {}, "user": USER})).json()["ids"]
            as_plain = {"authorization": f"Bearer {plain}"}
            as_reader = {"authorization": f"Bearer {reader}"}
            path = f"/v1/users/{USER['external_id']}"
            refused = await http.delete(path, params={"events": "delete"}, headers=as_plain)
            bad = await http.delete(path, params={"events": "all"}, headers=as_plain)
            kept = (await http.get(f"/v1/events/{event_id}", headers=as_reader)).json()["data"]
            erased = await http.delete(path, params={"events": "delete"}, headers=as_reader)
            gone = await http.get(f"/v1/events/{event_id}", headers=as_reader)
    finally:
        await core.close()

    assert refused.status_code == 403, refused.text
    assert "reads-user permission" in refused.json()["error"]
    assert bad.status_code == 400 and "events" in bad.json()["error"]
    assert kept["user"] == USER  # the refused erasure destroyed nothing
    assert erased.status_code == 200, erased.text
    assert erased.json()["data"]["key_destroyed"] and erased.json()["data"]["events_deleted"] == 1
    assert gone.status_code == 404
