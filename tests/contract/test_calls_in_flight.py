"""A database call already sent ends before whoever stops its caller or closes the storage goes
on (``storage/threads.py``): nothing of a stopped runtime or a closed storage still runs a
statement or holds a lock."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from tidings.storage import Storage, storage_for
from tidings.storage.migrations import schema_version
from tidings.storage.tx import Tx


def held_read(order: list[str]) -> tuple[Callable[[Tx], int], threading.Event, threading.Event]:
    """A read that starts, waits until released, then reads on its connection."""
    started, release = threading.Event(), threading.Event()

    def read(tx: Tx) -> int:
        started.set()
        assert release.wait(30)
        version = schema_version(tx)
        order.append("read ended")
        return version

    return read, started, release


async def test_a_cancelled_read_ends_only_once_its_statement_has(storage: Storage) -> None:
    order: list[str] = []
    read, started, release = held_read(order)
    reading = asyncio.create_task(storage.read(read))
    assert await asyncio.to_thread(started.wait, 30)

    reading.cancel()
    reading.add_done_callback(lambda _: order.append("cancelled"))
    # Before, the task ended here with its read still running in the thread.
    await asyncio.wait([reading], timeout=0.5)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await reading

    assert order == ["read ended", "cancelled"]
    assert await storage.read(schema_version) > 0  # its connection went back to the pool


async def test_close_returns_only_once_a_read_in_flight_has_ended(db_url: str) -> None:
    store = storage_for(db_url)
    await store.open()
    order: list[str] = []
    read, started, release = held_read(order)
    reading = asyncio.create_task(store.read(read))
    assert await asyncio.to_thread(started.wait, 30)

    closing = asyncio.create_task(store.close())
    closing.add_done_callback(lambda _: order.append("closed"))
    # Before, PostgreSQL's close returned here with the read still holding its connection.
    await asyncio.wait([closing], timeout=0.5)
    release.set()
    await closing

    assert order == ["read ended", "closed"]
    assert await reading > 0
