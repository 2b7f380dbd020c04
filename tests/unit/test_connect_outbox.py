"""The gateway's hand-made frames (``connect.outbox``) are byte for byte what protobuf and
``websockets`` would have made, and a burst of messages written through the outbox arrives
whole and in order, before and after a close the gateway starts; the ``websockets`` installed is
one whose internals the outbox was checked against."""

from __future__ import annotations

import asyncio
from importlib.metadata import version

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN

from tidings.connect import wire_pb2 as pb
from tidings.connect.outbox import Outbox, envelope, ws_header

SIZES = [0, 1, 125, 126, 127, 128, 300, 16_383, 16_384, 65_535, 65_536, 200_000]


@pytest.mark.parametrize("size", SIZES)
def test_an_envelope_is_what_protobuf_serialises(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    for kind in pb.Kind.values():
        expected = pb.ConnectMessage(kind=kind, payload=payload).SerializeToString()
        assert envelope(kind, payload) == expected, (kind, size)


@pytest.mark.parametrize("size", SIZES)
def test_a_header_is_what_websockets_writes(size: int) -> None:
    data = b"x" * size
    assert ws_header(size) + data == Frame(Opcode.BINARY, data).serialize(mask=False)


async def test_a_burst_arrives_in_order_and_whole_then_the_close() -> None:
    messages = [envelope(pb.GATEWAY_EXECUTOR_REQUEST, b"%d" % i * (i * 37)) for i in range(200)]

    async def session(ws: ServerConnection) -> None:
        out = Outbox(ws)
        for data in messages[:100]:
            await out.send(data)
        await asyncio.sleep(0)
        for data in messages[100:]:
            await out.send(data)
        out.flush()
        await ws.close(1000, "done")

    async with serve(session, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", compression=None,
                           max_size=None) as client:
            got = [await asyncio.wait_for(client.recv(), 10) for _ in messages]
            assert got == messages
            await asyncio.wait_for(client.wait_closed(), 10)
            assert (client.close_code, client.close_reason) == (1000, "done")


async def test_websockets_is_a_version_whose_internals_the_outbox_reads() -> None:
    """The outbox reads ``protocol``, ``paused`` and ``transport`` of websockets' asyncio
    connection (``connect/outbox.py`` says why): checked on 15.0 to 17.x. A new major version
    fails here until they are checked again there (and pyproject's bound raised)."""
    installed = version("websockets")
    assert 15 <= int(installed.split(".")[0]) < 18, f"websockets {installed}: check the outbox"
    seen: list[tuple[object, ...]] = []

    async def session(ws: ServerConnection) -> None:
        out = Outbox(ws)
        before = (ws.protocol.state, ws.protocol.extensions, ws.paused, out._direct())
        ws.pause_writing()  # what the transport calls when its buffer is full
        paused = (ws.paused, out._direct())
        ws.resume_writing()
        seen.append((*before, *paused, ws.transport.is_closing()))

    async with serve(session, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", compression=None) as client:
            await asyncio.wait_for(client.wait_closed(), 10)
    assert seen == [(OPEN, [], False, True, True, False, False)]
