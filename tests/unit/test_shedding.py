"""Admission control (``server/shedding.py``), driven through the ASGI app on both backends:
beyond its bounds — bytes of request bodies in flight, requests in flight, rows waiting for the
database — a request is answered ``503`` with ``Retry-After`` at once and nothing of it is
stored; within them, and once the load is gone, requests are served.

Requests are held in flight by a ``receive`` that hands over part of the body and then waits,
so the tests need no timing: what is in flight is exactly what they hold."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.conftest import make_settings
from tidings.core import Core
from tidings.errors import Overloaded
from tidings.events.reads import list_events
from tidings.server import create_app
from tidings.server.app import TidingsApp
from tidings.server.shedding import MIN_WRITE_BACKLOG, Shedder
from tidings.settings import Load
from tidings.storage.base import EventQuery
from tidings.storage.tx import Tx

EVENT = msgspec.json.encode({"name": "app/shed", "data": {"pad": "x" * 300}})


@dataclass
class Reply:
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


class Held:
    """A request whose body arrives in two parts: the first at once, the rest on ``finish``."""

    def __init__(self, app: TidingsApp, path: str, body: bytes, *,
                 headers: list[tuple[bytes, bytes]] | None = None, split: int = 1) -> None:
        self.parts = [body[:split], body[split:]]
        self.gate = asyncio.Event()
        self.reply = Reply()
        self.task = asyncio.create_task(call(app, path, self._receive, self.reply,
                                             headers if headers is not None else
                                             [(b"content-length", b"%d" % len(body))]))

    async def _receive(self) -> dict[str, Any]:
        if len(self.parts) == 2:
            return {"type": "http.request", "body": self.parts.pop(0), "more_body": True}
        await self.gate.wait()
        return {"type": "http.request", "body": self.parts.pop(0), "more_body": False}

    async def finish(self) -> Reply:
        self.gate.set()
        await self.task
        return self.reply


async def call(app: TidingsApp, path: str, receive: Any, reply: Reply,
               headers: list[tuple[bytes, bytes]]) -> None:
    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": [(b"content-type", b"application/json"), *headers],
             "http_version": "1.1", "scheme": "http", "server": ("tidings", 80),
             "client": ("127.0.0.1", 1), "root_path": "", "state": {}}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            reply.status = message["status"]
            reply.headers = dict(message.get("headers", []))
        else:
            reply.body += message.get("body", b"")

    await app(scope, receive, send)


async def post(app: TidingsApp, path: str, body: bytes,
               headers: list[tuple[bytes, bytes]] | None = None) -> Reply:
    reply = Reply()
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # a client that is still there
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    await call(app, path, receive, reply,
               headers if headers is not None else [(b"content-length", b"%d" % len(body))])
    return reply


@contextlib.asynccontextmanager
async def server(db_url: str, tmp_path: Path, **load: Any) -> AsyncIterator[tuple[TidingsApp,
                                                                                 Core]]:
    settings = replace(make_settings(db_url, tmp_path), load=Load(**load))
    core = await Core.start(settings)
    try:
        yield create_app(settings, core), core
    finally:
        await core.close()


async def stored(core: Core) -> int:
    env = await core.gate.env_for("key", "event")
    page = EventQuery(env_id=env.id, limit=1000)
    return len(await core.storage.read(lambda tx: list_events(tx, page)))


def assert_shed(reply: Reply, why: str) -> None:
    assert reply.status == 503, reply
    assert reply.headers[b"retry-after"] == b"2"
    assert why in reply.json()["error"]


async def test_bodies_in_flight_are_bounded_in_bytes(db_url: str, tmp_path: Path) -> None:
    async with server(db_url, tmp_path, max_inflight_bytes=1000, retry_after=2) as (app, core):
        before = await stored(core)
        held = Held(app, "/e/key", EVENT + b" " * (900 - len(EVENT)))
        await asyncio.sleep(0)  # let it be admitted (it then waits for the rest of its body)
        refused = await post(app, "/e/key", EVENT)
        assert_shed(refused, "request bodies being handled are over 1000 bytes")
        assert refused.json()["ids"] == [] and refused.json()["status"] == 503
        # The JSON API's routes are bounded by the same budget.
        sync = await post(app, "/v1/apps/sync", b'{"url": "http://127.0.0.1:1/"}' + b" " * 200)
        assert_shed(sync, "over 1000 bytes")
        assert sync.json() == {"error": sync.json()["error"], "status": 503}
        assert (await held.finish()).status == 200
        assert (await post(app, "/e/key", EVENT)).status == 200
        assert await stored(core) == before + 2


async def test_an_idle_server_admits_one_body_larger_than_the_budget(
        db_url: str, tmp_path: Path) -> None:
    big = msgspec.json.encode([{"name": "app/big", "data": {"n": i}} for i in range(100)])
    async with server(db_url, tmp_path, max_inflight_bytes=1000) as (app, _):
        assert len(big) > 1000
        assert (await post(app, "/e/key", big)).status == 200


async def test_requests_in_flight_are_bounded_in_number(db_url: str, tmp_path: Path) -> None:
    async with server(db_url, tmp_path, max_inflight_requests=2, retry_after=2) as (app, _):
        held = [Held(app, "/e/key", EVENT) for _ in range(2)]
        await asyncio.sleep(0)
        assert_shed(await post(app, "/e/key", EVENT), "2 requests are being handled")
        for one in held:
            assert (await one.finish()).status == 200
        assert (await post(app, "/e/key", EVENT)).status == 200


async def test_chunked_and_gzip_bodies_are_counted_as_they_grow(
        db_url: str, tmp_path: Path) -> None:
    async with server(db_url, tmp_path, max_inflight_bytes=1000, retry_after=2) as (app, core):
        before = await stored(core)
        held = Held(app, "/e/key", EVENT + b" " * (600 - len(EVENT)))
        await asyncio.sleep(0)
        # No Content-Length: admitted at 0 bytes, refused when its 600 bytes arrive.
        chunked = await post(app, "/e/key", EVENT + b" " * (600 - len(EVENT)),
                             headers=[(b"transfer-encoding", b"chunked")])
        assert_shed(chunked, "over 1000 bytes")
        # 100 bytes on the wire, over 3,000 once inflated.
        bomb = msgspec.json.encode({"name": "app/gz", "data": {"pad": " " * 3000}})
        packed = gzip.compress(bomb)
        assert len(packed) < 200
        inflated = await post(app, "/e/key", packed, headers=[
            (b"content-length", b"%d" % len(packed)), (b"content-encoding", b"gzip")])
        assert_shed(inflated, "over 1000 bytes")
        assert (await held.finish()).status == 200
        assert await stored(core) == before + 1
        # Alone, both are fine.
        assert (await post(app, "/e/key", packed, headers=[
            (b"content-length", b"%d" % len(packed)),
            (b"content-encoding", b"gzip")])).status == 200


async def test_refused_and_failed_requests_give_their_share_back(
        db_url: str, tmp_path: Path) -> None:
    async with server(db_url, tmp_path, max_inflight_bytes=1000,
                      max_inflight_requests=1) as (app, _):
        for _ in range(3):
            assert (await post(app, "/e/key", b"[" + b" " * 800)).status == 400
            assert (await post(app, "/v1/apps/sync", b"{" * 900)).status == 400
        held = Held(app, "/e/key", EVENT + b" " * (900 - len(EVENT)))
        await asyncio.sleep(0)
        assert (await post(app, "/e/key", EVENT)).status == 503
        assert (await held.finish()).status == 200
        assert (await post(app, "/e/key", EVENT + b" " * (900 - len(EVENT)))).status == 200


async def test_events_are_refused_while_the_database_is_behind(
        db_url: str, tmp_path: Path) -> None:
    async with server(db_url, tmp_path, max_write_backlog=1, retry_after=2) as (app, core):
        # Warm up: the environments these requests use exist before the database is held.
        assert (await post(app, "/e/key", EVENT)).status == 200
        assert (await post(app, "/v1/apps/sync", b"{}")).status == 400
        before = await stored(core)
        release = threading.Event()

        def stuck(tx: Tx) -> None:
            release.wait(60)

        # A write that holds the database (SQLite: the writer; PostgreSQL: a pooled
        # connection) until released: one row of backlog, the bound.
        blocker = asyncio.create_task(core.storage.write(stuck))
        await asyncio.sleep(0)
        assert core.storage.backlog() == 1
        assert_shed(await post(app, "/e/key", EVENT), "1 events are waiting to be stored")
        assert_shed(await post(app, "/v1/events", EVENT), "1 events are waiting")
        # A body declared over the size limit could never be stored: 413, not "retry later".
        over = [(b"content-length", b"%d" % (core.settings.limits.max_body_bytes + 1))]
        for path in ("/e/key", "/v1/events"):
            too_big = await post(app, path, EVENT, headers=over)
            assert too_big.status == 413, too_big
            assert "over the limit" in too_big.json()["error"]
        # Requests that write no events are not held back by it.
        assert (await post(app, "/v1/apps/sync", b"{}")).status == 400
        release.set()
        await blocker
        assert core.storage.backlog() == 0
        assert (await post(app, "/e/key", EVENT)).status == 200
        assert await stored(core) == before + 1


async def test_events_are_counted_before_they_are_parsed(db_url: str, tmp_path: Path) -> None:
    """A batch is refused on arrival when the events it probably holds (its size over the
    bytes per event seen so far) would take the rows waiting to be stored past the bound, so
    that no time goes into parsing batches that are then refused."""
    batch = msgspec.json.encode([{"name": "app/batch", "data": {"n": i}} for i in range(50)])
    async with server(db_url, tmp_path, max_write_backlog=60, retry_after=2) as (app, core):
        for _ in range(10):  # the server learns the size of these events
            assert (await post(app, "/e/key", batch)).status == 200
        before = await stored(core)
        held = Held(app, "/e/key", batch)  # about 50 events, not parsed yet
        await asyncio.sleep(0)
        assert_shed(await post(app, "/e/key", batch), "events are waiting to be stored")
        assert_shed(await post(app, "/v1/events", batch), "events are waiting to be stored")
        one = msgspec.json.encode({"name": "app/one", "data": {"n": 0}})
        assert (await post(app, "/e/key", one)).status == 200  # one more event fits
        assert (await held.finish()).status == 200
        assert (await post(app, "/e/key", batch)).status == 200  # nothing ahead: admitted
        assert await stored(core) == before + 101


def test_the_rows_allowed_to_wait_follow_the_rate_they_are_stored_at() -> None:
    now = [0.0]
    backlog = [0]
    shedder = Shedder(Load(max_write_backlog=100_000, max_write_wait=0.5), lambda: backlog[0],
                      clock=lambda: now[0])
    assert shedder.write_bound() == MIN_WRITE_BACKLOG  # nothing stored yet: the floor
    backlog[0] = MIN_WRITE_BACKLOG - 10
    with pytest.raises(Overloaded):
        shedder.admit(128 * 20, writes_events=True)  # about 21 events: over the floor
    shedder.admit(128 * 5, writes_events=True).release()  # about 6: fits
    # 60,000 events stored over one second: half a second of them may wait.
    shedder.stored(60_000)
    now[0] = 1.0
    assert shedder.write_bound() == 30_000
    assert shedder.rate == 60_000
    backlog[0] = 29_000
    ticket = shedder.admit(128 * 500, writes_events=True)
    with pytest.raises(Overloaded, match="29501 events are waiting to be stored"):
        shedder.admit(128 * 500, writes_events=True)
    ticket.release()
    # Never more than max_write_backlog, however fast.
    shedder.stored(10_000_000)
    now[0] = 2.0
    assert shedder.write_bound() == 100_000
