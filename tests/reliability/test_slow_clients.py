"""Slow and excess clients against a live ``tidings dev``, over real loopback sockets
(``server/protocol.py``): connections that send nothing, headers or bodies that trickle in a
byte at a time are cut at their deadline (``--keepalive``, ``--header-timeout``,
``--body-timeout``; with ``408`` when a request had begun), while a normal client is served
all along; connections over ``--max-connections`` get ``503`` with ``Retry-After``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from tests.conftest import LiveServer, start_server, stop_server

pytestmark = pytest.mark.slow
EACH = 40  # connections of each kind of slow client
DEADLINE = 60.0  # seconds within which every slow connection must have been cut


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[LiveServer]:
    server = start_server(tmp_path, "--keepalive", "1", "--header-timeout", "1",
                          "--body-timeout", "1")
    yield server
    stop_server(server)


@contextlib.asynccontextmanager
async def connection(server: LiveServer) -> AsyncIterator[tuple[asyncio.StreamReader,
                                                                 asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def slow_client(server: LiveServer, first: bytes, trickle: bytes) -> bytes:
    """Send ``first`` at once, then ``trickle`` a byte every 0.2 s; everything received
    until the server closed the connection."""
    async with connection(server) as (reader, writer):
        writer.write(first)

        async def dribble() -> None:
            for byte in trickle:
                await asyncio.sleep(0.2)  # the pace of a slow client, not a synchronisation
                writer.write(bytes([byte]))
                await writer.drain()

        dribbling = asyncio.create_task(dribble())
        try:
            received = await asyncio.wait_for(reader.read(), DEADLINE)
        finally:
            dribbling.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await dribbling
        return received


async def test_slow_clients_are_cut_while_others_are_served(strict: LiveServer) -> None:
    event = msgspec.json.encode({"name": "app/normal", "data": {}})
    body = b'{"name": "app/slow", "data": {"pad": "' + b"x" * 600 + b'"}}'
    head = (b"POST /e/key HTTP/1.1\r\nhost: tidings\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(body))
    kinds = {
        "silent": (b"", b""),
        "headers": (head[:10], head[10:] + body),
        "body": (head + body[:5], body[5:]),
    }
    slow = {kind: [asyncio.create_task(slow_client(strict, first, rest)) for _ in range(EACH)]
            for kind, (first, rest) in kinds.items()}
    served = 0
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=strict.url, timeout=10) as http:
        while not all(task.done() for tasks in slow.values() for task in tasks):
            reply = await http.post("/e/key", content=event)
            assert reply.status_code == 200, reply.text
            served += 1
            assert time.monotonic() - started < DEADLINE + 10, "slow clients were not cut"
        listed = (await http.get("/v1/events", params={"limit": 1000})).json()["data"]
    assert served > 0
    for kind, tasks in slow.items():
        answers = [task.result() for task in tasks]  # a task that timed out raises here
        if kind == "silent":
            assert answers == [b""] * EACH  # closed without a word: no request had begun
        else:
            for answer in answers:
                assert answer.startswith(b"HTTP/1.1 408 "), (kind, answer[:200])
                assert b"did not arrive within 1 s" in answer
    # None of the trickled events was stored; the normal ones all were.
    assert {e["name"] for e in listed} == {"app/normal"}
    assert len(listed) == min(served, 1000)


@pytest.fixture
def small(tmp_path: Path) -> Iterator[LiveServer]:
    server = start_server(tmp_path, "--max-connections", "5", "--retry-after", "3")
    yield server
    stop_server(server)


HEALTH = b"GET /health HTTP/1.1\r\nhost: tidings\r\n\r\n"


async def answer_on(writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> bytes:
    writer.write(HEALTH)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    return head + await asyncio.wait_for(reader.readexactly(length), 30)


async def test_connections_over_the_limit_are_answered_503(small: LiveServer) -> None:
    async with contextlib.AsyncExitStack() as stack:
        # The fixture's readiness check has closed its connection; wait until the server
        # has seen that (a sixth connection is answered once only five are open).
        first = [await stack.enter_async_context(connection(small)) for _ in range(4)]
        deadline = time.monotonic() + 30
        while True:
            async with contextlib.AsyncExitStack() as attempt:
                extra = await attempt.enter_async_context(connection(small))
                if (await answer_on(extra[1], extra[0])).startswith(b"HTTP/1.1 200 "):
                    stack.push_async_exit(attempt.pop_all())
                    break
            assert time.monotonic() < deadline, "the fifth connection was never served"
        over = await stack.enter_async_context(connection(small))
        answer = await answer_on(over[1], over[0])
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"retry-after: 3" in head.lower()
        assert msgspec.json.decode(body) == {"error": "too many connections: retry after 3 s",
                                             "status": 503}
        assert await asyncio.wait_for(over[0].read(), 30) == b""  # and closed
        # The connections that were there first are still served.
        for reader, writer in first:
            assert (await answer_on(writer, reader)).startswith(b"HTTP/1.1 200 ")
