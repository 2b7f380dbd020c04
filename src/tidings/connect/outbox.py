"""What the gateway sends down one worker's socket, framed by hand and written once per turn of
the event loop.

Every call costs the gateway four frames (the request and the reply's acknowledgement out, the
worker's acknowledgement and reply in), and ``websockets``' own ``send`` — an async context
manager, a ``Frame`` checked and serialised through a ``BytesIO``, one ``write`` (one system
call) per frame — was the largest share of the gateway's own CPU per call (P7 Connect,
profiled). Here a frame is a header and a payload, ``ConnectMessage``'s two fields are encoded
by hand, and the frames of one turn of the loop go out in one ``writelines`` after it.

The short cut is taken only while ``websockets`` would write the frame at once itself: the
socket open, no extension (the gateway offers none), the transport not asking to slow down.
Otherwise (and for whatever follows a frame sent the long way) ``send`` falls back on
``websockets``, which waits for the transport or raises ``ConnectionClosed``. Frames still
waiting when the socket is closed by the gateway are written first (``flush``); a close from
the worker's side drops them, as ``websockets`` would: calls not acknowledged go elsewhere.

Why not ``websockets``' public API (checked on 17.4): it has no way to hand it several messages
for one write, and both of its ways to send one serialise a ``Frame`` through a ``BytesIO`` and
write it alone. ``Connection.send`` adds the context manager and a ``drain``; ``broadcast([ws],
data)`` skips both but also skips a socket that is not open without a word (a call written into
a closing socket would be lost rather than raise ``ConnectionClosed``) and never slows down.
CPU per 120-byte message, two per loop turn, on one loopback socket: this outbox 5.0 us,
``broadcast`` 7.9 us (1.56x), ``send`` 10.1 us (2.0x). So this reads four internals of the
asyncio ``Connection``: ``protocol`` (its state and extensions), ``paused`` and ``transport``,
the same from ``websockets`` 15.0 to 17.x; pyproject keeps it below 18 and
``tests/unit/test_connect_outbox.py`` fails on a version outside that range or without them.
"""

from __future__ import annotations

import asyncio

from websockets.asyncio.server import ServerConnection
from websockets.protocol import OPEN

_BINARY_FIN = 0x82


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def envelope(kind: int, payload: bytes = b"") -> bytes:
    """A serialised ``ConnectMessage``: ``kind`` (field 1, a varint, left out when 0, as
    protobuf leaves out a default) and ``payload`` (field 2, length-delimited, left out when
    empty). Byte for byte what ``SerializeToString`` gives."""
    head = b"\x08" + varint(kind) if kind else b""
    if not payload:
        return head
    return head + b"\x12" + varint(len(payload)) + payload


def ws_header(size: int) -> bytes:
    """The header of an unmasked final binary frame of ``size`` bytes (RFC 6455 5.2)."""
    if size < 126:
        return bytes((_BINARY_FIN, size))
    if size < 65536:
        return bytes((_BINARY_FIN, 126)) + size.to_bytes(2, "big")
    return bytes((_BINARY_FIN, 127)) + size.to_bytes(8, "big")


class Outbox:
    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self._pending: list[bytes] = []

    def _direct(self) -> bool:
        ws = self.ws
        return (ws.protocol.state is OPEN and not ws.paused and not ws.protocol.extensions
                and not ws.transport.is_closing())

    async def send(self, data: bytes) -> None:
        """Send one binary message (raises ``ConnectionClosed`` as ``websockets`` does)."""
        if self._direct():
            if not self._pending:
                asyncio.get_running_loop().call_soon(self._write)
            self._pending += (ws_header(len(data)), data)
            return
        self._write()
        await self.ws.send(data)

    def _write(self) -> None:
        pending, self._pending = self._pending, []
        if pending and self._direct():
            self.ws.transport.writelines(pending)

    def flush(self) -> None:
        """Write what waits now (before the gateway closes the socket)."""
        self._write()
