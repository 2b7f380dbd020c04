"""Appends that share a commit: many requests at once, one of them bad, one of them large.

The backends batch concurrent appends (SQLite merges them into one savepoint and multi-row
INSERTs); these scenarios hold either way.
"""

from __future__ import annotations

import asyncio

import pytest

from tidings.events.reads import list_events
from tidings.ids import new_ids, now_ms
from tidings.keys import ensure_env
from tidings.storage import Storage
from tidings.storage.base import EventQuery, EventRow


def rows(env_id: str, count: int, *, key: str | None = None) -> list[EventRow]:
    at = now_ms()
    return [
        EventRow(id=event_id, env_id=env_id, name="app/batch", data=b'{"i":%d}' % i, user=None,
                 user_subject=None, key=key, ts=at, v=None, source="tidings", context=None,
                 account_id=None, received_at=at, deliver_at=None)
        for i, event_id in enumerate(new_ids(count, at))
    ]


async def stored_ids(storage: Storage, env_id: str) -> set[str]:
    found = await storage.read(lambda tx: list_events(tx, EventQuery(env_id=env_id, limit=10_000)))
    return {e.id for e in found}


async def test_concurrent_appends_each_get_their_own_ids(storage: Storage) -> None:
    env = await storage.write(lambda tx: ensure_env(tx, "production"))
    requests = [rows(env.id, 1 + i % 5) for i in range(40)]
    keyed = rows(env.id, 1, key="order-1")
    results = await asyncio.gather(
        *(storage.append_events(r, now_ms() + 60_000) for r in [*requests, keyed]))
    for sent, ids in zip([*requests, keyed], results, strict=True):
        assert ids == [r.id for r in sent]
    assert await stored_ids(storage, env.id) == {r.id for batch in requests for r in batch} | {
        keyed[0].id}


async def test_a_bad_append_fails_alone(storage: Storage) -> None:
    env = await storage.write(lambda tx: ensure_env(tx, "production"))
    good = [rows(env.id, 3) for _ in range(10)]
    bad = rows("no-such-environment", 2)
    outcomes = await asyncio.gather(
        *(storage.append_events(r, now_ms() + 60_000) for r in [*good[:5], bad, *good[5:]]),
        return_exceptions=True)
    assert isinstance(outcomes[5], Exception)
    assert all(isinstance(o, list) for i, o in enumerate(outcomes) if i != 5)
    assert await stored_ids(storage, env.id) == {r.id for batch in good for r in batch}


@pytest.mark.parametrize("count", [1, 255, 256, 257, 777])
async def test_large_appends_are_stored_whole(storage: Storage, count: int) -> None:
    env = await storage.write(lambda tx: ensure_env(tx, "production"))
    sent = rows(env.id, count)
    assert await storage.append_events(sent, now_ms() + 60_000) == [r.id for r in sent]
    assert await stored_ids(storage, env.id) == {r.id for r in sent}


async def test_appending_stored_ids_again_skips_them(storage: Storage) -> None:
    """A retried request with seeded ids repeats ids already stored, many at once."""
    env = await storage.write(lambda tx: ensure_env(tx, "production"))
    first = rows(env.id, 20)
    retry = [*first, *rows(env.id, 5)]
    await storage.append_events(first, now_ms() + 60_000)
    assert await storage.append_events(retry, now_ms() + 60_000) == [r.id for r in retry]
    assert await stored_ids(storage, env.id) == {r.id for r in retry}
