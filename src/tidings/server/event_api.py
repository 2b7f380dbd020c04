"""``POST /e/{key}``: the Inngest-compatible Event API, written against raw ASGI because it is
the hot path (no routing, no request objects: parse, authenticate, validate, store, answer).

Answers are always JSON, also on errors, because the official SDKs parse every reply:
``{"ids": [...], "status": 200}`` only after the events are committed, otherwise
``{"ids": [], "status": N, "error": "..."}`` and nothing of the request stored.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import Receive, Scope, Send

from tidings.core import Core
from tidings.errors import EventsInvalid, Overloaded, RequestRejected
from tidings.events.parse import parse_events
from tidings.ids import IdSeed, now_ms
from tidings.observe import metrics
from tidings.server.http import declared_length, header_map, read_body, send_json
from tidings.server.shedding import Shedder, Ticket

log = logging.getLogger("tidings.server")
BRANCH_NOT_UTF8 = "x-inngest-env: a branch name must be UTF-8 text"


def cors_headers(origin: bytes | None) -> list[tuple[bytes, bytes]]:
    if origin is None:
        return []
    return [
        (b"access-control-allow-origin", origin),
        (b"access-control-expose-headers", b"Link, Mcp-Session-Id"),
        (b"vary", b"Origin"),
    ]


def rejection(exc: RequestRejected) -> dict[str, Any]:
    body: dict[str, Any] = {"ids": [], "status": exc.status, "error": exc.message}
    if isinstance(exc, EventsInvalid):
        body["errors"] = [
            {"index": e.index, "field": e.field, "message": e.message} for e in exc.errors
        ]
    return body


class EventAPI:
    def __init__(self, core: Core, server_kind: bytes, shedder: Shedder) -> None:
        self.core = core
        self.kind = (b"x-inngest-server-kind", server_kind)
        self.shedder = shedder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = header_map(scope)
        origin = headers.get(b"origin")
        extra = [self.kind] if origin is None else [self.kind, *cors_headers(origin)]
        core = self.core
        limits = core.settings.limits
        ticket: Ticket | None = None
        try:
            # Before anything else, so that an overloaded server refuses at once and cheaply.
            ticket = self.shedder.admit(min(declared_length(headers), limits.max_body_bytes),
                                        writes_events=True)
            key = scope["path"][3:].rstrip("/")
            branch = headers.get(b"x-inngest-env")
            env = await core.gate.env_for(key, "event", _branch(branch) if branch else None)
            body = await read_body(scope, receive, limits.max_body_bytes, headers, ticket)
            now = now_ms()
            events = parse_events(body, limits, now)
            ticket.parsed(len(events))
            seed_header = headers.get(b"x-inngest-event-id-seed")
            seed = IdSeed.parse(seed_header.decode(errors="replace")) if seed_header else None
            ids = await core.ingest.append(env.id, events, seed, received_at=now)
        except RequestRejected as exc:
            if isinstance(exc, Overloaded):
                extra = [*extra, *exc.headers]
            metrics.received("event_api", _outcome(exc))
            await send_json(send, exc.status, rejection(exc), extra)
            return
        except Exception:
            metrics.received("event_api", "failed")
            log.exception("event ingest failed")
            await send_json(send, 500, {"ids": [], "status": 500,
                                        "error": "internal error: the events were not stored"},
                            extra)
            return
        finally:
            if ticket is not None:
                ticket.release()
        metrics.received("event_api", "accepted", len(ids))
        await send_json(send, 200, {"ids": ids, "status": 200}, extra)


def _outcome(exc: RequestRejected) -> str:
    return "overloaded" if isinstance(exc, Overloaded) else "rejected"


def _branch(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise RequestRejected(BRANCH_NOT_UTF8) from None
