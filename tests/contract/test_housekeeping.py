"""Housekeeping deletes expired idempotency claims and flow-control limits, a chunk at a time,
and nothing that still counts (each test runs on SQLite and PostgreSQL)."""

from __future__ import annotations

from tests.contract.test_storage import row
from tidings.engine.housekeeping import DAY_MS, TABLES, Housekeeper, sweep
from tidings.ids import now_ms
from tidings.keys import ensure_env
from tidings.storage import Storage
from tidings.storage.tx import Tx
from tidings.supervision import Supervisor


async def _count(storage: Storage, table: str) -> int:
    name = {"event_idempotency": "idempotency_count", "flow_limits": "flow_limits_count"}[table]
    found = await storage.read(lambda tx: tx.one(name))
    assert found is not None
    return int(found[0])


async def test_expired_idempotency_claims_go_and_live_ones_stay(storage: Storage) -> None:
    env = await storage.write(lambda tx: ensure_env(tx, "dev"))
    now = now_ms()
    for i in range(7):  # claims whose window ended
        await storage.append_events([row(env.id, key=f"old-{i}", ms=now - 5_000)], now - 1_000)
    live = [row(env.id, key=f"live-{i}") for i in range(4)]
    for event in live:
        await storage.append_events([event], now + 60_000)
    assert await _count(storage, "event_idempotency") == 11

    keeper = Housekeeper(storage, supervisor=Supervisor(), clock=lambda: now, chunk=3)
    deleted = 0
    for _ in range(6):  # 11 rows in chunks of 3: past the end and round again
        deleted += await keeper.once()
    assert deleted == 7
    assert await _count(storage, "event_idempotency") == 4
    # A live claim still dedupes: the same key gives the first event's id.
    again = await storage.append_events([row(env.id, key="live-2")], now + 60_000)
    assert again == [live[2].id]
    # An expired key is free again.
    fresh = row(env.id, key="old-3")
    assert await storage.append_events([fresh], now + 60_000) == [fresh.id]


async def test_expired_flow_limits_go_and_live_ones_stay(storage: Storage) -> None:
    now = now_ms()
    limits = {
        "throttle-passed": (now - 1, 0),  # its theoretical arrival time is past: like no row
        "throttle-ahead": (now + 5_000, 0),  # still spacing starts out
        "window-old": (now - DAY_MS - 1, 3),  # older than any period (a day at most)
        "window-open": (now - 60_000, 3),  # may still be inside its period
    }

    def put(tx: Tx) -> None:
        for key, (a, b) in limits.items():
            tx.one("flow_limit_lock", (key, now))
            tx.run("flow_limit_set", (a, b, key))

    await storage.write(put)
    table = next(t for t in TABLES if t.name == "flow_limits")
    # In key order, two at a time: throttle-ahead, throttle-passed | window-old, window-open | end.
    cursor, deleted = await storage.write(lambda tx: sweep(tx, table, table.start, now, 2))
    assert (cursor, deleted) == (("throttle-passed",), 1)
    cursor, deleted = await storage.write(lambda tx: sweep(tx, table, cursor, now, 2))
    assert (cursor, deleted) == (("window-open",), 1)
    cursor, deleted = await storage.write(lambda tx: sweep(tx, table, cursor, now, 2))
    assert (cursor, deleted) == (table.start, 0)  # past the end: start over
    kept = await storage.read(lambda tx: tx.all("flow_limits_keys"))
    assert sorted(k for (k,) in kept) == ["throttle-ahead", "window-open"]
