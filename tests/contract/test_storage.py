"""One behavioural suite for every storage backend (each test runs on SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import threading

import msgspec

from tidings.events.reads import get_event, list_events
from tidings.ids import floor_id, new_id, now_ms
from tidings.keys import (
    add_key,
    ensure_env,
    get_env,
    get_secret,
    key_by_hash,
    list_keys,
    put_secret,
    revoke_key,
)
from tidings.runs import store
from tidings.storage import Storage
from tidings.storage.base import EventQuery, EventRow, WrappedKey
from tidings.storage.migrations import schema_version
from tidings.storage.tx import Tx
from tidings.vault import (
    delete_user_key,
    ensure_user_key,
    get_user_key,
    list_user_keys,
    replace_user_keys,
)


def row(env_id: str, name: str = "app/x", *, key: str | None = None, ms: int | None = None,
        event_id: str | None = None) -> EventRow:
    at = ms or now_ms()
    return EventRow(
        id=event_id or new_id(at), env_id=env_id, name=name, data=b'{"n":1}', user=None,
        user_subject=None, key=key, ts=at, v=None, source="tidings", context=b'{"c":true}',
        account_id=None, received_at=at, deliver_at=None,
    )


async def test_environments_are_created_once(storage: Storage) -> None:
    first = await storage.write(lambda tx: ensure_env(tx, "production"))
    again = await storage.write(lambda tx: ensure_env(tx, "production"))
    branch = await storage.write(lambda tx: ensure_env(tx, "production/feature", first.id))
    assert first == again
    assert branch.parent_id == first.id
    assert await storage.read(lambda tx: get_env(tx, first.id)) == first
    assert await storage.read(lambda tx: get_env(tx, "nope")) is None


async def test_keys_round_trip_and_revoke(storage: Storage) -> None:
    env = await storage.write(lambda tx: ensure_env(tx, "production"))
    key = await storage.write(lambda tx: add_key(tx, env.id, "event", "h" * 64, "tdk_abc"))
    assert (await storage.read(lambda tx: key_by_hash(tx, "h" * 64))) == key
    assert key.env_name == "production"
    assert [k.id for k in await storage.read(list_keys)] == [key.id]
    assert await storage.write(lambda tx: revoke_key(tx, key.id))
    assert not await storage.write(lambda tx: revoke_key(tx, key.id))
    revoked = await storage.read(lambda tx: key_by_hash(tx, "h" * 64))
    assert revoked is not None and revoked.revoked_at is not None


async def test_append_and_read_events(storage: Storage) -> None:
    env = await storage.write(lambda tx: ensure_env(tx, "dev"))
    rows = [row(env.id, f"app/{i}") for i in range(3)]
    ids = await storage.append_events(rows, now_ms() + 60_000)
    assert ids == [r.id for r in rows]
    stored = await storage.read(lambda tx: get_event(tx, env.id, rows[1].id))
    assert stored == rows[1]
    assert await storage.read(lambda tx: get_event(tx, "other-env", rows[1].id)) is None


async def test_meta_round_trips_whichever_way_rows_are_written(storage: Storage) -> None:
    """``meta`` comes back as it went in, next to rows without it: one row (an INSERT), a few
    (several INSERTs; SQLite groups them by the columns they fill), many (PostgreSQL's COPY)
    and the engine's own (lifecycle and invocation events, inserted in a transaction); read by
    id, by page and by the shared queries of a transaction."""
    env = await storage.write(lambda tx: ensure_env(tx, "dev"))

    def with_meta(i: int) -> EventRow:
        plain = row(env.id, f"app/{i}")
        if i % 2:
            return plain
        return msgspec.structs.replace(plain, meta=b'{"sessions":{"user":"u-%d"}}' % i)

    rows = [with_meta(i) for i in range(26)]
    for batch in (rows[:1], rows[1:4], rows[4:24]):
        assert await storage.append_events(batch, now_ms() + 60_000) == [r.id for r in batch]
    for r in rows[24:]:
        await storage.write(lambda tx, r=r: store.insert_event(tx, r, delivered_at=None))
    for r in rows:
        assert await storage.read(lambda tx, r=r: get_event(tx, env.id, r.id)) == r
    listed = await storage.read(lambda tx: list_events(tx, EventQuery(env_id=env.id, limit=100)))
    assert sorted(listed, key=lambda r: r.id) == sorted(rows, key=lambda r: r.id)
    ids = [r.id for r in rows]
    read = await storage.read(lambda tx: store.event_rows(tx, ids))
    assert sorted(read, key=lambda r: r.id) == sorted(rows, key=lambda r: r.id)
    assert await storage.read(lambda tx: store.event_row(tx, rows[0].id)) == rows[0]


async def test_duplicate_keys_resolve_to_the_first_event(storage: Storage) -> None:
    env = await storage.write(lambda tx: ensure_env(tx, "dev"))
    first, second, third = row(env.id, key="k"), row(env.id, key="k"), row(env.id, key="other")
    ids = await storage.append_events([first, second, third], now_ms() + 60_000)
    assert ids == [first.id, first.id, third.id]
    again = await storage.append_events([row(env.id, key="k")], now_ms() + 60_000)
    assert again == [first.id]
    assert await storage.read(lambda tx: get_event(tx, env.id, second.id)) is None


async def test_keys_are_per_environment(storage: Storage) -> None:
    one = await storage.write(lambda tx: ensure_env(tx, "one"))
    two = await storage.write(lambda tx: ensure_env(tx, "two"))
    a, b = row(one.id, key="k"), row(two.id, key="k")
    assert await storage.append_events([a], now_ms() + 60_000) == [a.id]
    assert await storage.append_events([b], now_ms() + 60_000) == [b.id]


async def test_an_expired_key_is_claimed_again(storage: Storage) -> None:
    env = await storage.write(lambda tx: ensure_env(tx, "dev"))
    old_ms = now_ms() - 10_000
    old = row(env.id, key="k", ms=old_ms)
    assert await storage.append_events([old], old_ms + 1_000) == [old.id]
    fresh = row(env.id, key="k")
    assert await storage.append_events([fresh], now_ms() + 60_000) == [fresh.id]
    assert await storage.append_events([row(env.id, key="k")], now_ms() + 60_000) == [fresh.id]


async def test_concurrent_duplicates_store_one_event(storage: Storage) -> None:
    env = await storage.write(lambda tx: ensure_env(tx, "dev"))
    attempts = [row(env.id, key="same") for _ in range(50)]
    results = await asyncio.gather(
        *(storage.append_events([r], now_ms() + 60_000) for r in attempts)
    )
    winners = {ids[0] for ids in results}
    assert len(winners) == 1
    (winner,) = winners
    stored = await storage.read(lambda tx: list_events(tx, EventQuery(env_id=env.id, limit=100)))
    assert [e.id for e in stored] == [winner]


async def test_a_repeated_id_is_not_stored_twice(storage: Storage) -> None:
    env = await storage.write(lambda tx: ensure_env(tx, "dev"))
    first = row(env.id)
    assert await storage.append_events([first], now_ms() + 60_000) == [first.id]
    assert await storage.append_events([first], now_ms() + 60_000) == [first.id]
    assert len(await storage.read(lambda tx: list_events(tx, EventQuery(env_id=env.id)))) == 1


async def test_list_events_pages_newest_first_with_filters(storage: Storage) -> None:
    env = await storage.write(lambda tx: ensure_env(tx, "dev"))
    base = now_ms() - 100_000
    rows = [row(env.id, "app/a" if i % 2 else "app/b", ms=base + i * 1000) for i in range(10)]
    await storage.append_events(rows, now_ms() + 60_000)
    newest = await storage.read(lambda tx: list_events(tx, EventQuery(env_id=env.id, limit=4)))
    assert [e.id for e in newest] == [r.id for r in reversed(rows)][:4]
    after = await storage.read(lambda tx: list_events(tx, EventQuery(
        env_id=env.id, before_id=newest[-1].id, limit=4)))
    assert [e.id for e in after] == [r.id for r in reversed(rows)][4:8]
    named = await storage.read(lambda tx: list_events(tx, EventQuery(
        env_id=env.id, name="app/a", limit=100)))
    assert {e.name for e in named} == {"app/a"} and len(named) == 5
    window = await storage.read(lambda tx: list_events(tx, EventQuery(
        env_id=env.id, min_id=floor_id(base + 2000), max_id=floor_id(base + 5000), limit=100)))
    assert [e.ts for e in window] == [base + 4000, base + 3000, base + 2000]


async def test_secrets_keep_the_first_value_unless_replaced(storage: Storage) -> None:
    assert await storage.read(lambda tx: get_secret(tx, "s")) is None
    assert await storage.write(lambda tx: put_secret(tx, "s", b"one")) == b"one"
    assert await storage.write(lambda tx: put_secret(tx, "s", b"two")) == b"one"
    assert await storage.write(
        lambda tx: put_secret(tx, "s", b"three", replace=True)) == b"three"


async def test_user_keys_get_or_create_delete_and_rewrap(storage: Storage) -> None:
    assert await storage.write(
        lambda tx: ensure_user_key(tx, "env", b"subject", b"first")) == b"first"
    assert await storage.write(
        lambda tx: ensure_user_key(tx, "env", b"subject", b"second")) == b"first"
    assert await storage.read(lambda tx: get_user_key(tx, "env", b"subject")) == b"first"
    await storage.write(lambda tx: replace_user_keys(
        tx, [WrappedKey(env_id="env", subject=b"subject", wrapped=b"new")]))
    assert await storage.read(list_user_keys) == [
        WrappedKey(env_id="env", subject=b"subject", wrapped=b"new")]
    assert await storage.write(lambda tx: delete_user_key(tx, "env", b"subject"))
    assert await storage.read(lambda tx: get_user_key(tx, "env", b"subject")) is None


async def test_migrate_twice_is_a_no_op(storage: Storage) -> None:
    version = await storage.read(schema_version)
    assert version >= 1
    assert await storage.migrate() == []
    assert await storage.read(schema_version) == version


async def test_backlog_counts_rows_handed_over_and_not_answered(storage: Storage) -> None:
    env = await storage.write(lambda tx: ensure_env(tx, "dev"))
    assert storage.backlog() == 0
    release = threading.Event()

    def stuck(tx: Tx) -> None:
        release.wait(60)

    blocker = asyncio.create_task(storage.write(stuck))
    appending = asyncio.create_task(storage.append_events(
        [row(env.id, f"app/{i}") for i in range(5)], now_ms() + 60_000))
    await asyncio.sleep(0)  # both handed over; neither can be answered in one loop turn
    assert storage.backlog() == 1 + 5
    release.set()
    await blocker
    assert len(await appending) == 5
    assert storage.backlog() == 0
