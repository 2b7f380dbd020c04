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
from tidings.storage.postgres import PostgresStorage
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


@pytest.mark.postgres
async def test_a_call_cancelled_while_it_waits_for_a_connection_leaves_at_once(
        pg_url: str) -> None:
    """Every pooled connection busy (here taken from the pool by the test): a call waits in its
    thread for one, up to the pool's timeout (30 s). Cancelled, it has run nothing and leaves
    without waiting; it never runs once the connections come back."""
    store = PostgresStorage(pg_url, min_size=1, max_size=2)  # two threads, two connections
    await store.open()
    try:
        ran: list[str] = []
        held = [await asyncio.to_thread(store._sync_pool.getconn) for _ in range(2)]
        try:
            reading = asyncio.create_task(store.read(lambda tx: ran.append("read")))
            writing = asyncio.create_task(store.write(lambda tx: ran.append("write")))
            await asyncio.sleep(0)  # both handed to their threads
            for call in (reading, writing):
                call.cancel()
            # Before, each cancelled call waited for its thread, stuck in the pool for 30 s.
            done, _ = await asyncio.wait([reading, writing], timeout=10)
            assert done == {reading, writing}
            assert all(call.cancelled() for call in done)
        finally:
            for conn in held:
                await asyncio.to_thread(store._sync_pool.putconn, conn)
        assert await store.read(schema_version) > 0  # the connections serve the next call
        assert ran == []  # the abandoned calls handed it back without running
    finally:
        await store.close()
