"""The Event API (``POST /e/{key}``): what is stored, and what is refused with which error."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings
from tests.unit.helpers import all_events, app_client
from tidings.ids import IdSeed
from tidings.settings import Limits


async def test_one_event_is_stored_and_acknowledged(client: httpx.AsyncClient) -> None:
    reply = await client.post("/e/any-key", json={"name": "app/user.created",
                                                  "data": {"plan": "pro"}, "v": "1"})
    assert reply.status_code == 200
    body = reply.json()
    assert body["status"] == 200 and len(body["ids"]) == 1
    (stored,) = await all_events(client)
    assert stored["id"] == body["ids"][0]
    assert (stored["name"], stored["data"], stored["v"]) == ("app/user.created", {"plan": "pro"},
                                                             "1")
    assert stored["source"] == "tidings" and stored["user"] == {}
    assert stored["event_id"] == stored["id"]


async def test_an_array_keeps_its_order(client: httpx.AsyncClient) -> None:
    events = [{"name": f"app/n{i}", "data": {"i": i}} for i in range(5)]
    ids = (await client.post("/e/k", json=events)).json()["ids"]
    assert len(ids) == 5 and len(set(ids)) == 5
    for i, event_id in enumerate(ids):
        got = (await client.get(f"/v1/events/{event_id}")).json()["data"]
        assert got["data"] == {"i": i}


async def test_defaults_and_normalisation(client: httpx.AsyncClient) -> None:
    ids = (await client.post("/e/k", json=[
        {"name": "a/null-data", "data": None},
        {"name": "a/internal", "data": {"keep": 1, "_inngest": {"x": 1}}},
        {"name": "a/trigger", "payload": {"p": 1}, "context": {"c": 2}, "source": "billing",
         "timestamp": "2030-01-02T03:04:05.678Z", "account_id": "acc_1"},
        {"name": "a/ts", "ts": 1_900_000_000_000},
    ])).json()["ids"]
    got = [(await client.get(f"/v1/events/{i}")).json()["data"] for i in ids]
    assert got[0]["data"] == {}
    assert got[1]["data"] == {"keep": 1}
    assert (got[2]["data"], got[2]["context"], got[2]["source"], got[2]["account_id"]) == (
        {"p": 1}, {"c": 2}, "billing", "acc_1")
    assert got[2]["ts"] == 1_893_553_445_678
    assert got[2]["timestamp"] == "2030-01-02T03:04:05.678Z"
    assert got[3]["ts"] == 1_900_000_000_000


async def test_delivery_options_are_stored(client: httpx.AsyncClient) -> None:
    ids = (await client.post("/e/k", json=[
        {"name": "a/at", "deliver_at": "2031-01-01T00:00:00Z"},
        {"name": "a/after", "deliver_after": 3600},
        {"name": "a/both", "deliver_at": 1_950_000_000_000, "deliver_after": 5},
    ])).json()["ids"]
    got = [(await client.get(f"/v1/events/{i}")).json()["data"] for i in ids]
    assert got[0]["deliver_at"] == "2031-01-01T00:00:00.000Z"
    received_ms = got[1]["ts"]
    assert got[1]["deliver_at"] is not None
    after = datetime.fromisoformat(got[1]["deliver_at"].replace("Z", "+00:00"))
    assert abs(after.timestamp() * 1000 - (received_ms + 3_600_000)) < 5
    assert got[2]["deliver_at"] == "2031-10-17T10:40:00.000Z"  # 1_950_000_000_000 ms
    assert all(g["delivered_at"] is None for g in got)


INVALID = [
    ({"name": ""}, "name", "non-empty"),
    ({"name": "x" * 257}, "name", "at most 256"),
    ({"name": "inngest/function.failed"}, "name", "reserved"),
    ({"name": "Tidings/x"}, "name", "reserved"),
    ({"name": 5}, "name", "expected `str`"),
    ({"data": {}}, "name", "required"),
    ({"name": "a", "data": [1]}, "data", "expected `object | null`"),
    ({"name": "a", "data": "x"}, "data", "expected `object | null`"),
    ({"name": "a", "ts": 1.5}, "ts", "expected `int"),
    ({"name": "a", "ts": "1700000000000"}, "ts", "expected `int"),
    ({"name": "a", "ts": 100}, "ts", "between 1980 and 2100"),
    ({"name": "a", "ts": 4_102_444_800_000}, "ts", "between 1980 and 2100"),
    ({"name": "a", "user": "bob"}, "user", "expected `object | null`"),
    ({"name": "a", "id": 7}, "id", "expected `str"),
    ({"name": "a", "v": 2}, "v", "expected `str"),
    ({"name": "a", "surprise": 1}, "surprise", "not a known event field"),
    ({"name": "a", "deliver_after": -1}, "deliver_after", "non-negative"),
    ({"name": "a", "timestamp": "yesterday"}, "timestamp", "ISO-8601"),
    ({"name": "a", "source": ""}, "source", "non-empty"),
    ({"name": "a", "data": {"a": 1}, "payload": {"a": 2}}, "payload", "not both"),
    ({"name": "a", "meta": "user-1"}, "meta", "expected `object | null`, got `str`"),
    ({"name": "a", "meta": [{"sessions": {}}]}, "meta", "expected `object | null`, got `array`"),
    ({"name": "a", "meta": {"sessions": ["u"]}}, "meta.sessions", "expected `object | null`"),
    ({"name": "a", "meta": {"sessions": {"u": True}}}, "meta.sessions",
     "session 'u' must be a string, a number or null, got `bool`"),
    ({"name": "a", "meta": {"sessions": {"": "x"}}}, "meta.sessions", "cannot be empty"),
    ({"name": "a", "meta": {"sessions": {"u": ""}}}, "meta.sessions", "empty id"),
    ({"name": "a", "meta": {"sessions": {"k" * 129: "x"}}}, "meta.sessions", "over 128 bytes"),
    ({"name": "a", "meta": {"sessions": {"u": "é" * 257}}}, "meta.sessions", "over 512 bytes"),
    ({"name": "a", "meta": {"sessions": {f"k{i}": "x" for i in range(6)}}}, "meta.sessions",
     "at most 5 sessions, got 6"),
    ({"name": "a", "meta": {"propagated_sessions": {"u": None}}}, "meta.propagated_sessions",
     "must be a string or a number, got `null`"),
]


@pytest.mark.parametrize(("event", "field", "words"), INVALID)
async def test_invalid_events_are_refused_naming_the_field(
    client: httpx.AsyncClient, event: dict[str, object], field: str, words: str
) -> None:
    reply = await client.post("/e/k", json=[{"name": "ok/first"}, event])
    assert reply.status_code == 400
    body = reply.json()
    assert body["ids"] == [] and body["status"] == 400
    assert f"events[1].{field}" in body["error"] and words in body["error"]
    assert body["errors"][0]["index"] == 1 and body["errors"][0]["field"] == field
    assert await all_events(client) == []


async def test_meta_sessions_are_resolved_as_inngest_does(client: httpx.AsyncClient) -> None:
    """The user's sessions win, inherited ones fill the free places (at most five) in key
    order, null cuts (before anything is checked); what is stored is one ``sessions`` layer of
    strings, or nothing."""
    events = [
        {"name": "a/m", "meta": {"sessions": {"user": "u-1", "n": 42}}},
        {"name": "a/m", "meta": {
            "sessions": {"user": "u-2", "gone": None},
            "propagated_sessions": {"user": "parent", "gone": "g", "org": "o", "b": "1",
                                    "c": "2", "d": "3", "e": "4"}}},
        {"name": "a/m", "meta": {"propagatedSessions": {"org": "o"}}},
        {"name": "a/m", "meta": {"sessions": None, "propagated_sessions": {"org": "o"}}},
        {"name": "a/m", "meta": {"sessions": {"x": None}, "propagated_sessions": {"x": ""}}},
        {"name": "a/m", "meta": {"sessions": {}}},
        {"name": "a/m", "meta": {"future": {"x": 1}}},
        {"name": "a/m", "meta": None},
        {"name": "a/m"},
    ]
    ids = (await client.post("/e/k", json=events)).json()["ids"]
    got = [(await client.get(f"/v1/events/{i}")).json()["data"]["meta"] for i in ids]
    assert got == [
        {"sessions": {"user": "u-1", "n": "42"}},
        {"sessions": {"user": "u-2", "b": "1", "c": "2", "d": "3", "e": "4"}},
        {"sessions": {"org": "o"}},
        None, None, None, None, None, None,
    ]
    listed = {e["id"]: e["meta"] for e in await all_events(client)}
    assert [listed[i] for i in ids] == got


async def test_every_bad_event_is_listed(client: httpx.AsyncClient) -> None:
    reply = await client.post("/e/k", json=[
        {"name": "ok"}, {"name": ""}, {"name": "ok"}, {"name": "a", "ts": 3}, {"x": 1}])
    assert reply.status_code == 400
    assert [e["index"] for e in reply.json()["errors"]] == [1, 3, 4]
    assert await all_events(client) == []


BAD_BODIES = [
    (b'{"name": "a", ', 400, "malformed JSON"),
    (b'"just a string"', 400, "event object or an array"),
    (b"42", 400, "event object or an array"),
    (b"null", 400, "event object or an array"),
    (b"", 400, "empty"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b'{"name": "caf\xe9"}', 400, "UTF-8"),
    (b"\xff\xfe\x00", 400, "malformed JSON"),
    (b'{"name": "a", "data": {"d": ' + b"[" * 100 + b"]" * 100 + b"}}", 400, "nested"),
    (b'{"name": "a", "data": {"d": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}", 400, "nested"),
]


@pytest.mark.parametrize(("body", "status", "words"), BAD_BODIES)
async def test_bad_bodies_get_a_clear_error_and_change_nothing(
    client: httpx.AsyncClient, body: bytes, status: int, words: str
) -> None:
    reply = await client.post("/e/k", content=body,
                              headers={"content-type": "application/json"})
    assert reply.status_code == status, reply.text
    assert words in reply.json()["error"]
    assert reply.json()["ids"] == []
    assert await all_events(client) == []
    still = await client.post("/e/k", json={"name": "after/bad"})
    assert still.status_code == 200


async def test_missing_key_is_401(client: httpx.AsyncClient) -> None:
    reply = await client.post("/e/", json={"name": "a"})
    assert reply.status_code == 401
    assert reply.json() == {"ids": [], "status": 401, "error": "Event key is required"}


async def test_limits_are_settings(db_url: str, tmp_path: Path) -> None:
    limits = Limits(max_event_bytes=1000, max_events_per_request=10, max_body_bytes=20_000)
    async with app_client(make_settings(db_url, tmp_path, limits=limits)) as (http, _):
        events = [{"name": "a"}, {"name": "b", "data": {"x": "y" * 1000}}]
        big = await http.post("/e/k", json=events)
        assert big.status_code == 413 and "events[1]" in big.json()["error"]
        many = await http.post("/e/k", json=[{"name": "a"}] * 11)
        assert many.status_code == 413 and "at most 10 events" in many.json()["error"]
        body = json.dumps([{"name": "a", "data": {"x": "y" * 900}}] * 10) + " " * 20_000
        huge = await http.post("/e/k", content=body)
        assert huge.status_code == 413 and "over the limit" in huge.json()["error"]
        assert await all_events(http) == []
        assert (await http.post("/e/k", json=[{"name": "a"}] * 10)).status_code == 200


async def test_default_limits(client: httpx.AsyncClient) -> None:
    many = await client.post("/e/k", json=[{"name": "a"}] * 5001)
    assert many.status_code == 413 and "at most 5000 events" in many.json()["error"]
    oversized = {"name": "a", "data": {"x": "y" * (3 * 1024 * 1024)}}
    big = await client.post("/e/k", json=oversized)
    assert big.status_code == 413 and "over the limit of 3145728 bytes" in big.json()["error"]
    too_long = await client.post("/e/k", content=b" " * (10 * 1024 * 1024 + 1))
    assert too_long.status_code == 413
    assert await all_events(client) == []
    assert (await client.post("/e/k", json=[{"name": "a"}] * 5000)).status_code == 200


async def test_gzip_bodies_are_accepted(client: httpx.AsyncClient) -> None:
    body = gzip.compress(json.dumps([{"name": "zipped", "data": {"n": 1}}]).encode())
    reply = await client.post("/e/k", content=body, headers={"content-encoding": "gzip"})
    assert reply.status_code == 200, reply.text
    assert [e["name"] for e in await all_events(client)] == ["zipped"]


async def test_bad_or_huge_gzip_is_refused(client: httpx.AsyncClient) -> None:
    broken = await client.post("/e/k", content=b"not gzip", headers={"content-encoding": "gzip"})
    assert broken.status_code == 400 and "gzip" in broken.json()["error"]
    bomb = gzip.compress(b"[" + b" " * (11 * 1024 * 1024) + b"]")
    exploded = await client.post("/e/k", content=bomb, headers={"content-encoding": "gzip"})
    assert exploded.status_code == 413
    odd = await client.post("/e/k", content=b"{}", headers={"content-encoding": "br"})
    assert odd.status_code == 415
    assert await all_events(client) == []


def _seed_header() -> str:
    return f"1795412162482,{base64.b64encode(os.urandom(10)).decode()}"


async def test_seeded_ids_are_deterministic(client: httpx.AsyncClient) -> None:
    seed = _seed_header()
    expected = [IdSeed.parse(seed).id_at(i) for i in (1, 2)]  # type: ignore[union-attr]
    events = [{"name": "a"}, {"name": "b"}]
    first = await client.post("/e/k", json=events, headers={"x-inngest-event-id-seed": seed})
    retry = await client.post("/e/k", json=events, headers={"x-inngest-event-id-seed": seed})
    assert first.json()["ids"] == retry.json()["ids"] == expected
    assert len(await all_events(client)) == 2


def test_seed_algorithm_matches_the_reference() -> None:
    # entropy[6:10] as a big-endian uint32 plus the 1-based index, wrapping.
    entropy = bytes(range(6)) + b"\xff\xff\xff\xff"
    seed = IdSeed.parse(f"1700000000000,{base64.b64encode(entropy).decode()}")
    assert seed is not None
    from ulid import ULID

    first = ULID.from_str(seed.id_at(1))
    assert first.milliseconds == 1_700_000_000_000
    assert first.bytes[6:] == bytes(range(6)) + b"\x00\x00\x00\x00"
    assert ULID.from_str(seed.id_at(2)).bytes[12:] == b"\x00\x00\x00\x01"
    for malformed in ["", "abc", "0,AAAAAAAAAAAAAA==", "17,AAAA", "x,AAAAAAAAAAAAAA=="]:
        assert IdSeed.parse(malformed) is None


async def test_a_duplicate_id_is_not_stored_again(client: httpx.AsyncClient) -> None:
    first = (await client.post("/e/k", json={"name": "a", "id": "order-1"})).json()["ids"]
    again = (await client.post("/e/k", json={"name": "a", "id": "order-1",
                                              "data": {"x": 1}})).json()["ids"]
    other = (await client.post("/e/k", json={"name": "a", "id": "order-2"})).json()["ids"]
    assert again == first and other != first
    stored = await all_events(client)
    assert len(stored) == 2
    assert {e["idempotency_key"] for e in stored} == {"order-1", "order-2"}


async def test_concurrent_duplicates_store_exactly_one(client: httpx.AsyncClient) -> None:
    replies = await asyncio.gather(*(
        client.post("/e/k", json={"name": "dup", "id": "same", "data": {"n": n}})
        for n in range(40)
    ))
    ids = {r.json()["ids"][0] for r in replies}
    assert all(r.status_code == 200 for r in replies)
    assert len(ids) == 1
    assert [e["id"] for e in await all_events(client)] == list(ids)


async def test_branch_environments_are_isolated(client: httpx.AsyncClient) -> None:
    await client.post("/e/k", json={"name": "in/dev"})
    await client.post("/e/k", json={"name": "in/branch"}, headers={"x-inngest-env": "feature-1"})
    dup = {"name": "same/id", "id": "shared"}
    main_id = (await client.post("/e/k", json=dup)).json()["ids"][0]
    branch_id = (await client.post("/e/k", json=dup, headers={"x-inngest-env": "feature-1"}))
    assert branch_id.json()["ids"][0] != main_id
    assert {e["name"] for e in await all_events(client)} == {"in/dev", "same/id"}
    branch = await all_events(client, **{"x-inngest-env": "feature-1"})
    assert {e["name"] for e in branch} == {"in/branch", "same/id"}
    hidden = await client.get(f"/v1/events/{main_id}", headers={"x-inngest-env": "feature-1"})
    assert hidden.status_code == 404


async def test_cors_and_server_kind(client: httpx.AsyncClient) -> None:
    preflight = await client.options("/e/k", headers={
        "origin": "https://app.example", "access-control-request-method": "POST",
        "access-control-request-headers": "content-type, x-inngest-env"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-max-age"] == "3600"
    sent = await client.post("/e/k", json={"name": "a"}, headers={"origin": "https://app.example"})
    assert sent.headers["access-control-allow-origin"] == "https://app.example"
    assert sent.headers["x-inngest-server-kind"] == "dev"
    assert (await client.get("/health")).headers["x-inngest-server-kind"] == "dev"
