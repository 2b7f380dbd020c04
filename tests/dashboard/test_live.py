"""The live pages' streams, on both backends: woken by the commits of this process and (on
PostgreSQL) of another, not by a clock; a stalled browser holds up no writer, costs no read
while it is stalled, and catches up from its cursor when it reads again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import make_settings
from tests.contract.test_storage import row
from tidings.core import Core
from tidings.ids import now_ms
from tidings.keys import ensure_env
from tidings.server import create_app
from tidings.server.dashboard.live import Feed
from tidings.storage import Storage, storage_for


async def until(condition: Any, what: str, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.02)


async def drain(stream: AsyncIterator[str]) -> None:
    async for _ in stream:
        pass


@dataclass(slots=True)
class Reads:
    count: int = 0


@contextlib.asynccontextmanager
async def streaming(feed: Feed, storage: Storage) -> AsyncIterator[Reads]:
    """A stream of ``feed`` that would read again only in 10 minutes, counting its reads; it
    has read at its start and once more a gap later when this yields, and ends after."""
    reads = Reads()

    async def fresh() -> list[str]:
        reads.count += 1
        return []

    reading = asyncio.create_task(drain(feed.stream(fresh, period=600)))
    try:
        await until(lambda: reads.count == 2 and not storage.changes.due,
                    "the stream did not read at its start and once more a gap later")
        yield reads
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)


async def test_a_stream_reads_when_a_commit_changed_something(core: Core) -> None:
    """A stream that would read again only in 10 minutes reads as soon as this process stores
    an event and, on PostgreSQL, as soon as another process does."""
    env = await core.storage.write(lambda tx: ensure_env(tx, "dev"))
    await until(lambda: not core.storage.changes.due, "the hooks were never called")
    feed = Feed(core.storage, core.supervisor)
    try:
        async with streaming(feed, core.storage) as reads:
            await core.storage.append_events([row(env.id)], now_ms() + 60_000)
            await until(lambda: reads.count == 3,
                        "a commit of this process did not wake the stream")
            if core.storage.notifies:
                other = storage_for(core.settings.database_url)  # as another process has
                await other.open()
                try:
                    seen = reads.count
                    await other.append_events([row(env.id)], now_ms() + 60_000)
                    await until(lambda: reads.count > seen,
                                "a commit of another process did not wake the stream")
                finally:
                    await other.close()
    finally:
        await feed.close()


async def test_commits_are_noted_only_while_a_stream_is_open(sqlite_url: str,
                                                            tmp_path: Path) -> None:
    """SQLite, no dashboard stream open: a write costs no note of its commit (no callback per
    write, so nothing is due); with a stream open the commit wakes it; closed again, nothing
    is noted."""
    core = await Core.start(make_settings(sqlite_url, tmp_path))
    feed = Feed(core.storage, core.supervisor)
    try:
        env = await core.storage.write(lambda tx: ensure_env(tx, "dev"))
        await core.storage.append_events([row(env.id)], now_ms() + 60_000)
        assert not core.storage.changes.due
        async with streaming(feed, core.storage) as reads:
            await core.storage.append_events([row(env.id)], now_ms() + 60_000)
            assert core.storage.changes.due
            await until(lambda: reads.count == 3, "a commit did not wake the stream")
        await until(lambda: not core.storage.changes.due, "the hooks were never called")
        await core.storage.append_events([row(env.id)], now_ms() + 60_000)
        assert not core.storage.changes.due
    finally:
        await feed.close()
        await core.close()


async def test_a_stalled_browser_holds_up_no_writer_and_catches_up(core: Core) -> None:
    """The browser takes the stream's first message and then nothing: 500 events are stored
    meanwhile, the stream reads none of them and holds only that one message; once the
    browser reads again, the newest event reaches it."""
    app = create_app(core.settings, core)
    assert app.dashboard is not None
    feed = app.dashboard.feed
    taken: list[bytes] = []
    stalled, resumed = asyncio.Event(), asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            taken.append(message["body"])
            if not resumed.is_set():
                stalled.set()
                await resumed.wait()

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the browser never goes
        raise AssertionError("unreachable")

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
             "http_version": "1.1", "method": "GET", "scheme": "http", "path": "/live/events",
             "raw_path": b"/live/events", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"tidings")], "client": ("127.0.0.1", 50000),
             "server": ("tidings", 80)}
    streaming = asyncio.create_task(app(scope, receive, send))
    try:
        await asyncio.wait_for(stalled.wait(), 15)
        reads = feed.reads()
        assert len(reads) == 1
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://tidings") as http:
            ids: list[str] = []
            for batch in range(20):
                sent = await http.post("/v1/events", json=[
                    {"name": "stall/e", "data": {"batch": batch, "n": n}} for n in range(25)])
                assert sent.status_code == 200, sent.text
                ids.extend(record["id"] for record in sent.json()["data"])
            stored = await http.get("/v1/events", params={"name": "stall/e", "limit": "500"})
            assert len(stored.json()["data"]) == 500
        assert feed.reads() == reads  # no read while stalled: nothing queued for it
        assert len(taken) == 1 and taken[0].startswith(b"retry:")

        resumed.set()
        await until(lambda: any(ids[-1].encode() in body for body in taken),
                    "the stream did not catch up once the browser read again")
    finally:
        streaming.cancel()
        await asyncio.gather(streaming, return_exceptions=True)


async def test_copies_of_a_page_share_a_read_until_a_poke(core: Core) -> None:
    feed = Feed(core.storage, core.supervisor)
    reads = 0

    async def read() -> int:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0)
        return reads

    try:
        together = await asyncio.gather(*(feed.shared("page", read) for _ in range(20)))
        assert together == [1] * 20 and reads == 1
        assert await feed.shared("another page", read) == 2
        feed.poke()  # something changed: the next reader reads again
        assert await feed.shared("page", read) == 3
    finally:
        await feed.close()
