"""Erasing a person from an event's page, over ASGI on both backends: the button shows only
for an event with ``user.external_id`` and a viewer who may read ``user`` (everyone in dev; under
serve a sign-in made ``--reads-user``), the erasure needs its confirmation page and the form's
CSRF token, and it runs the API's erasure (``privacy/erase.py``) and shows its counts."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.conftest import make_settings
from tidings.core import Core
from tidings.keys import create_key
from tidings.server import create_app

USER = {"external_id": "person-9", "email": "grace@example.com"}
BUTTON = 'id="erase-person"'


def token_of(html: str) -> str:
    found = re.search(r'id="erase-confirm"><input type="hidden" name="_csrf" value="([^"]+)"',
                      html)
    assert found is not None, html[-2000:]
    return found.group(1)


async def user_of(http: httpx.AsyncClient, event_id: str) -> tuple[object, object]:
    data = (await http.get(f"/v1/events/{event_id}")).json()["data"]
    return data["user"], data["user_erased"]


async def test_dev_erases_a_person_after_confirming(client: httpx.AsyncClient) -> None:
    [mine, theirs_too, nobody] = (await client.post("/e/any", json=[
        {"name": "signup", "data": {}, "user": USER},
        {"name": "login", "data": {}, "user": USER},
        {"name": "ping", "data": {}, "user": {"email": "no-id@example.com"}}])).json()["ids"]
    assert BUTTON in (await client.get(f"/events/{mine}")).text
    assert BUTTON not in (await client.get(f"/events/{nobody}")).text
    assert (await client.get(f"/events/{nobody}/erase")).status_code == 409

    confirm = await client.get(f"/events/{mine}/erase")
    assert confirm.status_code == 200 and "person-9" in confirm.text
    assert 'value="keep" checked' in confirm.text
    token = token_of(confirm.text)
    origin = {"origin": "http://tidings"}

    no_csrf = await client.post(f"/events/{mine}/erase",
                                data={"confirm": "erase", "events": "keep"}, headers=origin)
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
    unconfirmed = await client.post(f"/events/{mine}/erase",
                                    data={"_csrf": token, "events": "keep"}, headers=origin)
    assert unconfirmed.status_code == 400 and "confirm:" in unconfirmed.text
    bad_mode = await client.post(f"/events/{mine}/erase", data={
        "_csrf": token, "confirm": "erase", "events": "all"}, headers=origin)
    assert bad_mode.status_code == 400 and "events: expected keep or delete" in bad_mode.text
    assert await user_of(client, mine) == (USER, False)  # nothing erased by the refusals

    done = await client.post(f"/events/{mine}/erase", data={
        "_csrf": token, "confirm": "erase", "events": "keep"}, headers=origin)
    assert done.status_code == 200 and 'id="erased"' in done.text
    counts = dict(re.findall(r'data-count="(\w+)">([^<]*)<', done.text))
    assert counts["key_destroyed"] == "yes" and counts["events"] == "2"
    assert counts["events_deleted"] == "0" and counts["events_mode"] == "keep"
    assert await user_of(client, mine) == ({}, True)
    assert await user_of(client, theirs_too) == ({}, True)
    assert BUTTON not in (await client.get(f"/events/{mine}")).text  # no person left to erase
    assert (await client.get(f"/v1/events/{nobody}")).json()["data"]["user"] == {
        "email": "no-id@example.com"}


async def test_dev_erase_can_delete_the_events(client: httpx.AsyncClient) -> None:
    [mine] = (await client.post("/e/any", json={"name": "signup", "data": {},
                                                "user": USER})).json()["ids"]
    token = token_of((await client.get(f"/events/{mine}/erase")).text)
    done = await client.post(f"/events/{mine}/erase", data={
        "_csrf": token, "confirm": "erase", "events": "delete"},
        headers={"origin": "http://tidings"})
    counts = dict(re.findall(r'data-count="(\w+)">([^<]*)<', done.text))
    assert counts["events_deleted"] == "1" and counts["events_mode"] == "delete"
    assert (await client.get(f"/v1/events/{mine}")).status_code == 404


async def test_serve_erases_only_for_a_sign_in_that_reads_user(db_url: str,
                                                               tmp_path: Path) -> None:
    core = await Core.start(make_settings(db_url, tmp_path, mode="serve"))
    try:
        event_key, _ = await create_key(core.storage, "production", "event")
        plain, _ = await create_key(core.storage, "production", "api")
        reader, _ = await create_key(core.storage, "production", "api", reads_user=True)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(
                core.settings, core)), base_url="https://tidings") as http:
            [event_id] = (await http.post(f"/e/{event_key}", json={
                "name": "signup", "data": {}, "user": USER})).json()["ids"]
            origin = {"origin": "https://tidings"}

            async def sign_in(key: str) -> None:
                http.cookies.clear()
                signed = await http.post("/signin", data={"key": key, "next": "/"},
                                         headers=origin)
                assert signed.status_code == 303, signed.text[-500:]

            await sign_in(plain)
            assert BUTTON not in (await http.get(f"/events/{event_id}")).text
            assert (await http.get(f"/events/{event_id}/erase")).status_code == 403
            csrf = re.search(r'name="_csrf" value="([^"]+)"',
                             (await http.get("/send")).text)
            assert csrf is not None
            refused = await http.post(f"/events/{event_id}/erase", data={
                "_csrf": csrf.group(1), "confirm": "erase", "events": "keep"}, headers=origin)
            assert refused.status_code == 403 and "--reads-user" in refused.text

            await sign_in(reader)
            auth = {"authorization": f"Bearer {reader}"}
            kept = (await http.get(f"/v1/events/{event_id}", headers=auth)).json()["data"]
            assert kept["user"] == USER  # the plain sign-in erased nothing
            assert BUTTON in (await http.get(f"/events/{event_id}")).text
            token = token_of((await http.get(f"/events/{event_id}/erase")).text)
            done = await http.post(f"/events/{event_id}/erase", data={
                "_csrf": token, "confirm": "erase", "events": "keep"}, headers=origin)
            assert done.status_code == 200 and 'id="erased"' in done.text
            gone = (await http.get(f"/v1/events/{event_id}", headers=auth)).json()["data"]
            assert (gone["user"], gone["user_erased"]) == ({}, True)
    finally:
        await core.close()
