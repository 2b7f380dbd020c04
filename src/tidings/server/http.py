"""Small ASGI helpers shared by the raw hot path and the Starlette routes."""

from __future__ import annotations

import zlib
from typing import Any

import msgspec
from starlette.types import Receive, Scope, Send

from tidings.errors import PayloadTooLarge, RequestRejected

encode = msgspec.json.encode
JSON_TYPE = (b"content-type", b"application/json")


def header_map(scope: Scope) -> dict[bytes, bytes]:
    """Every request header by (lower-case) name; of a repeated header, the first."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    return dict(reversed(headers))


async def read_body(
    scope: Scope, receive: Receive, limit: int, headers: dict[bytes, bytes] | None = None
) -> bytes:
    """The request body, decompressed when gzip-encoded; ``PayloadTooLarge`` past ``limit``.

    ``headers`` (from ``header_map``) saves scanning the headers again."""
    if headers is None:
        headers = header_map(scope)
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
    encoding = headers.get(b"content-encoding")
    if encoding is not None and encoding.strip().lower() not in (b"", b"identity"):
        body = _decompress(body, encoding.strip().lower(), limit)
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
