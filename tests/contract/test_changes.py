"""Every backend tells ``storage.changes`` of the commits that changed rows (coalesced), and
PostgreSQL tells the other processes (``Storage.watch``): what wakes the dashboard's live
pages (``storage/changes.py``)."""

from __future__ import annotations

import asyncio

import pytest

from tests.contract.test_storage import row
from tidings.ids import now_ms
from tidings.keys import ensure_env
from tidings.runs import store
from tidings.storage import Storage, storage_for
from tidings.storage.changes import Changes


async def test_many_commits_call_the_hooks_once_per_gap() -> None:
    changes = Changes(gap=0.01)
    calls: list[int] = []
    changes.add(lambda: calls.append(1))
    for _ in range(100):
        changes.committed()
    assert changes.due
    deadline = asyncio.get_running_loop().time() + 10
    while not calls:
        assert asyncio.get_running_loop().time() < deadline, "the hooks were never called"
        await asyncio.sleep(0.01)
    assert calls == [1] and not changes.due
    changes.committed()  # a commit after the call: called again
    while len(calls) < 2:
        assert asyncio.get_running_loop().time() < deadline, "the hooks were not called again"
        await asyncio.sleep(0.01)


async def test_a_commit_is_told_only_when_it_changed_rows(storage: Storage) -> None:
    told = asyncio.Event()
    storage.changes.add(told.set)
    env = await storage.write(lambda tx: ensure_env(tx, "dev"))
    await settled(storage.changes)
    told.clear()
    await storage.write(lambda tx: store.claim(tx, "nothing-due-here", "me", now_ms(), 1000, 10))
    assert not storage.changes.due  # a claim that found nothing changed nothing

    await storage.append_events([row(env.id)], now_ms() + 60_000)
    assert storage.changes.due
    await asyncio.wait_for(told.wait(), 10)

    await settled(storage.changes)
    await storage.write(lambda tx: tx.run("release_lease", ("no-such-run", 1)))
    assert not storage.changes.due


async def settled(changes: Changes) -> None:
    """Until the hooks of earlier commits were called."""
    deadline = asyncio.get_running_loop().time() + 10
    while changes.due:
        assert asyncio.get_running_loop().time() < deadline, "the hooks were never called"
        await asyncio.sleep(0.01)


@pytest.mark.postgres
async def test_other_processes_hear_a_commit(pg_url: str) -> None:
    """Two storages on one database, as two processes have: a commit of one is heard by the
    other's ``watch``."""
    here, there = storage_for(pg_url), storage_for(pg_url)
    await here.open()
    await there.open()
    heard, listening = asyncio.Event(), asyncio.Event()
    watching = asyncio.create_task(here.watch(heard.set, listening.set))
    try:
        await asyncio.wait_for(listening.wait(), 10)
        env = await there.write(lambda tx: ensure_env(tx, "dev"))
        await there.append_events([row(env.id)], now_ms() + 60_000)
        await asyncio.wait_for(heard.wait(), 10)
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await here.close()
        await there.close()


async def test_sqlite_watch_only_listens(sqlite_url: str) -> None:
    storage = storage_for(sqlite_url)
    await storage.open()
    listening = asyncio.Event()
    watching = asyncio.create_task(storage.watch(lambda: None, listening.set))
    try:
        await asyncio.wait_for(listening.wait(), 10)
        assert not watching.done()
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await storage.close()
