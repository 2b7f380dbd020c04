"""A browser that stops reading its live stream, over a real TCP socket to a running server,
on both backends: the server holds a bounded amount for it (what the socket and the transport
take, never a message per change), reads nothing for it while it is stalled, keeps serving the
other pages and ingest, and the stalled stream catches up once its browser reads again."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import uvicorn

from tests.conftest import free_port
from tidings.core import Core
from tidings.server import create_app
from tidings.server.dashboard.live import Feed
from tidings.server.protocol import protocol_for

ROUNDS = 30
BATCH = 50  # a page of rows (``LIVE_ROWS``): each round's message is about 25 kB
NAME = "stall/" + "n" * 240  # rows as wide as names allow, so that buffers fill in a few rounds


class Quiet(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(core: Core) -> AsyncIterator[tuple[str, Quiet, Feed]]:
    """The app on a loopback port with the protocol ``tidings dev`` serves with."""
    app = create_app(core.settings, core)
    assert app.dashboard is not None
    port = free_port()
    server = Quiet(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off",
                                  http=protocol_for(core.settings.load), access_log=False,
                                  log_config=None, timeout_graceful_shutdown=5))
    task = asyncio.create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + 15
    while not server.started:
        assert not task.done() and asyncio.get_running_loop().time() < deadline, "no server"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", server, app.dashboard.feed
    finally:
        server.should_exit = True
        await task


async def until(condition: Any, what: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


async def test_a_stalled_socket_holds_a_bounded_buffer_and_catches_up(core: Core) -> None:
    loop = asyncio.get_running_loop()
    async with serving(core) as (url, server, feed):
        # The stalled browser: a small receive buffer, the stream's first bytes read, then
        # nothing.
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.setblocking(False)
        await loop.sock_connect(stalled, ("127.0.0.1", int(url.rsplit(":", 1)[1])))
        await loop.sock_sendall(stalled, b"GET /live/events HTTP/1.1\r\nhost: tidings\r\n"
                                         b"accept: text/event-stream\r\n\r\n")
        head = b""
        while b"retry: 1000" not in head:
            head += await asyncio.wait_for(loop.sock_recv(stalled, 4096), 15)
        assert head.startswith(b"HTTP/1.1 200")
        port = stalled.getsockname()[1]
        [held] = [c for c in server.server_state.connections
                  if c.transport.get_extra_info("peername")[1] == port]  # type: ignore[attr-defined]
        # Loopback gives a socket about 4 MB of send buffer, which would take every round of
        # this test: the server's side of this one is held to 16 kB, as a slow link's would
        # be, so that what is tested is the server's own bound, not the kernel's.
        held.transport.get_extra_info("socket").setsockopt(  # type: ignore[attr-defined]
            socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)

        seen: set[str] = set()
        received = 0

        async def healthy(http: httpx.AsyncClient) -> None:
            nonlocal received
            async with http.stream("GET", f"{url}/live/events") as stream:
                async for chunk in stream.aiter_text():
                    received += len(chunk)
                    seen.update(re.findall(r'id="ev-(\w+)"', chunk))

        async with httpx.AsyncClient(timeout=30) as http:
            following = asyncio.create_task(healthy(http))
            try:
                await until(lambda: len(feed) == 2, "the healthy page did not open its stream")
                reads_at: dict[int, list[int]] = {}
                last = ""
                for round_ in range(ROUNDS):
                    sent = await http.post(f"{url}/v1/events", json=[
                        {"name": NAME, "data": {"round": round_, "n": n}}
                        for n in range(BATCH)])
                    assert sent.status_code == 200, sent.text
                    last = max(record["id"] for record in sent.json()["data"])
                    await until(lambda: last in seen,  # noqa: B023 (awaited here)
                                f"round {round_}: the healthy page missed its event")
                    reads_at[round_] = sorted(feed.reads())
                    # What the server holds for the stalled page beyond the kernel's socket
                    # buffers: under the transport's high-water mark plus the one message the
                    # stream is sending.
                    buffered = held.transport.get_write_buffer_size()  # type: ignore[attr-defined]
                    high = held.transport.get_write_buffer_limits()[1]  # type: ignore[attr-defined]
                    assert buffered <= high + 64 * 1024, (round_, buffered, high)
                # Stalled: no read for it in the last two thirds of the rounds, while the
                # healthy page read at least once a round.
                stalled_then, healthy_then = reads_at[ROUNDS // 3]
                stalled_now, healthy_now = reads_at[ROUNDS - 1]
                assert stalled_now == stalled_then, reads_at
                assert healthy_now - healthy_then >= ROUNDS - 1 - ROUNDS // 3, reads_at
                assert received > ROUNDS * BATCH * len(NAME)  # the healthy page got every row

                # The browser reads again: it gets what the buffers held, then the newest
                # rows, not a message per round it missed.
                taken = bytearray(head)
                while last.encode() not in taken:
                    taken += await asyncio.wait_for(loop.sock_recv(stalled, 65536), 15)
                messages = taken.count(b"event: rows")
                assert messages < ROUNDS // 2, messages
                assert len(taken) < received / 2, (len(taken), received)
            finally:
                stalled.close()
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)
