"""One gateway socket (``connect.session.Session``) on a real WebSocket over loopback: a worker
that keeps beating stays connected past the heartbeat timeout, one that falls silent is cut
with 1008 and the reason, and its connection leaves the hub."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tidings.connect import wire_pb2 as pb
from tidings.connect.hub import Hub
from tidings.connect.session import Session
from tidings.settings import ConnectSettings

HEARTBEAT_TIMEOUT = 4.0
FUNCTIONS = [{"id": "app-fn", "name": "fn", "triggers": [{"event": "a/b"}]}]


@dataclass
class _Function:
    slug: str


@dataclass
class _Config:
    functions: list[_Function]


class _Sync:
    """Stands in for ``AppSync``: every registration is taken as it is."""

    async def register_connected(self, env_id: str, body: Any, url: Any) -> tuple[_Config, bool]:
        return _Config([_Function(f["id"]) for f in body["functions"]]), True


async def _env(request: pb.WorkerConnectRequestData) -> str:
    return "env1"


def _message(kind: int, payload: bytes = b"") -> bytes:
    return pb.ConnectMessage(kind=kind, payload=payload).SerializeToString()  # type: ignore[arg-type]


async def _kind(ws: ClientConnection) -> int:
    message = pb.ConnectMessage()
    message.ParseFromString(await asyncio.wait_for(ws.recv(), 10))
    return int(message.kind)


@contextlib.asynccontextmanager
async def _gateway(hub: Hub) -> AsyncIterator[int]:
    settings = ConnectSettings(heartbeat_timeout=HEARTBEAT_TIMEOUT)

    async def session(ws: ServerConnection) -> None:
        await Session(ws, hub=hub, sync=_Sync(), settings=settings,  # type: ignore[arg-type]
                      authenticate=_env).run()

    async with serve(session, "127.0.0.1", 0, compression=None) as server:
        yield int(next(iter(server.sockets)).getsockname()[1])


async def _ready(port: int) -> ClientConnection:
    ws = await connect(f"ws://127.0.0.1:{port}", compression=None)
    assert await asyncio.wait_for(ws.recv(), 10) == b""  # GATEWAY_HELLO
    request = pb.WorkerConnectRequestData(
        connection_id="01M90W3Q9S82EK4PVH1C9AB6KE", instance_id="i1",
        apps=[pb.AppConfiguration(app_name="app", functions=json.dumps(FUNCTIONS).encode())])
    await ws.send(_message(pb.WORKER_CONNECT, request.SerializeToString()))
    assert await _kind(ws) == pb.GATEWAY_CONNECTION_READY
    return ws


async def _closed(ws: ClientConnection, within: float) -> tuple[int, str]:
    deadline = time.monotonic() + within
    with contextlib.suppress(ConnectionClosed):
        while time.monotonic() < deadline:
            await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
    assert ws.close_code is not None, "the gateway did not close the socket"
    return ws.close_code, ws.close_reason or ""


async def test_a_beating_worker_outlives_the_heartbeat_timeout_and_a_silent_one_is_cut() -> None:
    hub = Hub()
    async with _gateway(hub) as port:
        ws = await _ready(port)
        assert len(hub.workers()) == 1
        # Beats for longer than the timeout: each is answered and the socket stays.
        started = time.monotonic()
        while time.monotonic() - started < HEARTBEAT_TIMEOUT * 1.25:
            await ws.send(_message(pb.WORKER_HEARTBEAT))
            assert await _kind(ws) == pb.GATEWAY_HEARTBEAT
            await asyncio.sleep(0.5)  # the worker's pace, not a wait for the gateway
        assert len(hub.workers()) == 1
        # Then silence: the gateway cuts the socket, saying why, and the hub forgets it.
        code, reason = await _closed(ws, HEARTBEAT_TIMEOUT + 20)
        assert (code, reason) == (1008, f"no heartbeat for {HEARTBEAT_TIMEOUT:g}s")
        for _ in range(200):  # up to 10 s for the session to end
            if not hub.workers():
                break
            await asyncio.sleep(0.05)
        assert hub.workers() == []


async def test_a_frame_that_breaks_the_protocol_still_closes_with_its_reason() -> None:
    hub = Hub()
    async with _gateway(hub) as port:
        ws = await _ready(port)
        await ws.send(_message(pb.WORKER_REPLY, pb.SDKResponse(
            request_id="01M90W3Q9S82EK4PVH1C9AB6KF").SerializeToString()))
        code, reason = await _closed(ws, 20)
        assert code == 1008
        assert "does not hold" in reason
