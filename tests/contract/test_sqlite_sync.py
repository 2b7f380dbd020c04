"""SQLite's group commits are acknowledged only once the WAL is synced (``_Syncer``): what a
caller is told was stored is on disk, and a sync that fails is an error, not an acknowledgement."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tidings.errors import StorageError
from tidings.events.reads import get_event
from tidings.ids import new_id, now_ms
from tidings.keys import ensure_env
from tidings.storage.base import EventRow
from tidings.storage.sqlite import SQLiteStorage


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    storage = SQLiteStorage(f"sqlite:///{tmp_path / 'tidings.db'}")
    await storage.open()
    try:
        yield storage
    finally:
        await storage.close()


def row(env_id: str) -> EventRow:
    now = now_ms()
    return EventRow(id=new_id(now), env_id=env_id, name="app/x", data=b"{}", user=None,
                    user_subject=None, key=None, ts=now, v=None, source="tidings", context=None,
                    account_id=None, received_at=now, deliver_at=None)


async def test_commits_sync_the_wal_before_they_are_answered(sqlite: SQLiteStorage) -> None:
    env = await sqlite.write(lambda tx: ensure_env(tx, "dev"))
    assert sqlite._writer is not None
    syncer = sqlite._writer.syncer
    assert syncer is not None and syncer.wal == sqlite.path + "-wal"

    stored = await sqlite.append_events([row(env.id)], now_ms())

    # The answer came through the syncer, which holds the WAL open to sync it.
    assert syncer._fd is not None
    assert os.fstat(syncer._fd).st_ino == os.stat(syncer.wal).st_ino
    assert (await sqlite.read(lambda tx: get_event(tx, env.id, stored[0]))) is not None


async def test_a_failed_sync_is_an_error_to_the_callers(sqlite: SQLiteStorage,
                                                        tmp_path: Path) -> None:
    env = await sqlite.write(lambda tx: ensure_env(tx, "dev"))
    assert sqlite._writer is not None and sqlite._writer.syncer is not None
    syncer = sqlite._writer.syncer
    wal = syncer.wal
    # Point the syncer at a file that is not there: its sync fails as a failing disk's would.
    syncer.wal = str(tmp_path / "gone" / "tidings.db-wal")
    syncer._fd = None
    with pytest.raises(StorageError, match="could not be synced to disk"):
        await sqlite.append_events([row(env.id)], now_ms())

    syncer.wal = wal
    [event_id] = await sqlite.append_events([row(env.id)], now_ms())
    assert (await sqlite.read(lambda tx: get_event(tx, env.id, event_id))) is not None
