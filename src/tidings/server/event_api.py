"""``POST /e/{key}``: the Inngest-compatible Event API, written against raw ASGI because it is
the hot path (no routing, no request objects: parse, authenticate, validate, store, answer).

Answers are always JSON, also on errors, because the official SDKs parse every reply:
``{"ids": [...], "status": 200}`` only after the events are committed, otherwise
``{"ids": [], "status": N, "error": "..."}`` and nothing of the request stored.
"""

from __future__ import annotations

import logging
import time

from starlette.types import Receive, Scope, Send

from tidings.core import Core
from tidings.errors import Overloaded, RequestRejected
from tidings.observe import metrics, tracing
from tidings.observe.http import RequestObserver
from tidings.server.accept import accept_events, rejection
from tidings.server.http import declared_length, header_map, read_body, send_json
from tidings.server.requests import decode_branch
from tidings.server.shedding import Shedder, Ticket

log = logging.getLogger("tidings.server")


def cors_headers(origin: bytes | None) -> list[tuple[bytes, bytes]]:
    if origin is None:
        return []
    return [
        (b"access-control-allow-origin", origin),
        (b"access-control-expose-headers", b"Link, Mcp-Session-Id"),
        (b"vary", b"Origin"),
    ]


class EventAPI:
    """``observer`` (when the server observes requests) is told of each request here: the
    Event API is not wrapped in its middleware (``observe/http.py`` says why)."""

    ROUTE = "/e/{key}"

    def __init__(self, core: Core, server_kind: bytes, shedder: Shedder,
                 observer: RequestObserver | None = None) -> None:
        self.core = core
        self.kind = (b"x-inngest-server-kind", server_kind)
        self.shedder = shedder
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        observer = self.observer
        headers = header_map(scope)
        span = None if observer is None else tracing.ingest_began(headers.get(b"traceparent"))
        began = time.perf_counter()
        status = 500
        try:
            origin = headers.get(b"origin")
            extra = [self.kind] if origin is None else [self.kind, *cors_headers(origin)]
            ticket: Ticket | None = None
            try:
                # Before anything else, so that an overloaded server refuses at once and
                # cheaply.
                ticket = self.shedder.admit(declared_length(headers), writes_events=True)
                admitted = ticket
                branch = headers.get(b"x-inngest-env")
                seed = headers.get(b"x-inngest-event-id-seed")
                _, ids = await accept_events(
                    self.core, key=scope["path"][3:].rstrip("/"),
                    branch=decode_branch(branch) if branch else None,
                    read_body=lambda limit: read_body(scope, receive, limit, headers,
                                                      admitted),
                    seed=seed.decode(errors="replace") if seed else None, ticket=admitted,
                    request=span)
            except RequestRejected as exc:
                if isinstance(exc, Overloaded):
                    extra = [*extra, *exc.headers]
                metrics.received("event_api",
                                 "overloaded" if exc.status == 503 else "rejected")
                status = exc.status
                await send_json(send, status, rejection(exc), extra)
                return
            except Exception:
                metrics.received("event_api", "failed")
                log.exception("event ingest failed")
                await send_json(send, 500, {"ids": [], "status": 500, "error":
                                            "internal error: the events were not stored"},
                                extra)
                return
            finally:
                if ticket is not None:
                    ticket.release()
            metrics.received("event_api", "accepted", len(ids))
            status = 200
            await send_json(send, 200, {"ids": ids, "status": 200}, extra)
        finally:
            if observer is not None:
                observer.ended(scope, self.ROUTE, status, time.perf_counter() - began, span)
