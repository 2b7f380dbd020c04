"""Small ASGI helpers shared by the raw hot path and the Starlette routes."""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.types import Receive, Scope, Send

from tidings.errors import PayloadTooLarge, RequestRejected

if TYPE_CHECKING:
    from tidings.server.shedding import Ticket

TICKET = "tidings.ticket"  # the scope key of a request's admission ``Ticket``
encode = msgspec.json.encode
JSON_TYPE = (b"content-type", b"application/json")


def header_map(scope: Scope) -> dict[bytes, bytes]:
    """Every request header by (lower-case) name; of a repeated header, the first."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    return dict(reversed(headers))


def declared_length(headers: dict[bytes, bytes]) -> int:
    """The ``Content-Length`` of a request, 0 when absent or not a number."""
    declared = headers.get(b"content-length")
    return int(declared) if declared is not None and declared.isdigit() else 0


async def read_body(
    scope: Scope, receive: Receive, limit: int, headers: dict[bytes, bytes] | None = None,
    ticket: Ticket | None = None,
) -> bytes:
    """The request body, decompressed when gzip-encoded; ``PayloadTooLarge`` past ``limit``.

    ``headers`` (from ``header_map``) saves scanning the headers again. What the body holds
    beyond its declared length (chunks, inflation) is added to the request's admission
    ``ticket`` (given, or the scope's), which may refuse it (``Overloaded``)."""
    if headers is None:
        headers = header_map(scope)
    if ticket is None:
        ticket = scope.get(TICKET)
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {int(declared)} bytes, over the limit of "
                              f"{limit} bytes")
    message = await receive()
    if message["type"] == "http.disconnect":
        raise RequestRejected("client disconnected", status=400)
    body: bytes = message.get("body", b"")
    if len(body) > limit:
        raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
    if message.get("more_body", False):
        body = await _rest_of_body(receive, body, limit)
    if ticket is not None and len(body) > ticket.size:
        ticket.grow(len(body) - ticket.size)
    encoding = headers.get(b"content-encoding")
    if encoding is not None and encoding.strip().lower() not in (b"", b"identity"):
        body = _decompress(body, encoding.strip().lower(), limit)
        if ticket is not None:
            ticket.grow(len(body))  # the inflated copy, beside the wire bytes
    return body


async def _rest_of_body(receive: Receive, first: bytes, limit: int) -> bytes:
    chunks = [first]
    size = len(first)
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestRejected("client disconnected", status=400)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _decompress(body: bytes, encoding: bytes, limit: int) -> bytes:
    if encoding not in (b"gzip", b"x-gzip", b"deflate"):
        raise RequestRejected(f"content-encoding {encoding.decode(errors='replace')!r} is not "
                              "supported: send gzip, deflate or identity", status=415)
    wbits = 16 + zlib.MAX_WBITS if encoding != b"deflate" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise RequestRejected(f"request body is not valid {encoding.decode()}: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed request body is over the limit of {limit} bytes")
    if not inflater.eof:
        raise RequestRejected(f"request body is truncated {encoding.decode()} data")
    return out


async def send_json(
    send: Send, status: int, payload: Any, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = encode(payload)
    headers = [JSON_TYPE, (b"content-length", b"%d" % len(body))]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
