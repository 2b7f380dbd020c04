"""What the HTTP server tells of each request: its time in ``tidings_http_request_duration_
seconds`` (by route template, method and status: never by the raw path), with tracing on a
SERVER span (``tracing.request_began``), and with ``--access-log`` one INFO line when its answer
has gone out — method, path, status, time taken, client address.

Paths only, never query strings or headers; the event key in ``/e/{key}`` is masked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.observe import metrics, tracing

log = logging.getLogger("tidings.access")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def shown_path(path: str) -> str:
    """``path`` as the log shows it: an event key masked."""
    return "/e/***" if path.startswith("/e/") else path


class _Sending:
    """``send`` for the app inside, noting the answer's status on its way out. It hands back
    ``send``'s own awaitable: no coroutine of its own per message (a closure ``async def``
    made one for each, and itself for each request)."""

    __slots__ = ("send", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 0

    def __call__(self, message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        return self.send(message)


class RequestObserver:
    """ASGI middleware around the whole app. ``route_of(scope)`` names the route template a
    request went to, once it has been answered (``unmatched`` for none)."""

    def __init__(self, app: ASGIApp, route_of: Callable[[Scope], str], *, access_log: bool,
                 timed: bool) -> None:
        self.app = app
        self._route_of = route_of
        self._access_log = access_log
        self._timed = timed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        span = tracing.request_began(scope["headers"])
        began = time.perf_counter()
        sending = _Sending(send)
        try:
            await self.app(scope, receive, sending)
        finally:
            took = time.perf_counter() - began
            status = sending.status
            method = scope["method"] if scope["method"] in METHODS else "other"
            if self._timed or span is not None:
                route = self._route_of(scope)
                if self._timed:
                    metrics.http_request(route, method, status, took)
                if span is not None:
                    tracing.request_ended(span, route, method, status)
            if self._access_log:
                client = scope.get("client")
                path = shown_path(scope["path"])
                log.info("%s %s %d %.1f ms", method, path, status, took * 1000,
                         extra={"method": method, "path": path, "status": status,
                                "duration_ms": round(took * 1000, 3),
                                "client": client[0] if client else None})
