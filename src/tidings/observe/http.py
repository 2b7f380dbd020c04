"""What the HTTP server tells of each request: its time in ``tidings_http_request_duration_
seconds`` (by route template, method and status: never by the raw path), with tracing on a
SERVER span (``tracing.request_began``), and with ``--access-log`` one INFO line when its answer
has gone out — method, path, status, time taken, client address.

Paths only, never query strings or headers; the event key in ``/e/{key}`` is masked.

``RequestObserver.wrap`` is the ASGI middleware that does it for any app. The Event API
(``POST /e/{key}``, raw ASGI, the hot path) is not wrapped: it calls
``tracing.request_began`` and ``RequestObserver.ended`` itself, with the status it answered.
There the wrapper cost more than what it observes — a coroutine more in every await chain, a
call per message to note the status, calls through ``__call__``, a call to find the route:
about 12,000 CPU instructions per request, on a request of some 180,000 (``bench/README.md``,
"Metrics on P1, counted in instructions").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.observe import metrics, tracing
from tidings.observe.tracing import Request

log = logging.getLogger("tidings.access")


def shown_path(path: str) -> str:
    """``path`` as the log shows it: an event key masked."""
    return "/e/***" if path.startswith("/e/") else path


class RequestObserver:
    """Times, traces and logs HTTP requests as the settings say: ``timed`` (metrics on),
    ``access_log``; a SERVER span whenever tracing is on. ``route_of(scope)`` names the
    route template a request went to once it has been answered (``unmatched`` for none)."""

    def __init__(self, route_of: Callable[[Scope], str], *, access_log: bool,
                 timed: bool) -> None:
        self._route_of = route_of
        self._access_log = access_log
        self._timed = timed

    def ended(self, scope: Scope, route: str, status: int, took_s: float,
              span: Request | None) -> None:
        """The request to ``route`` was answered ``status`` after ``took_s`` seconds; ``span``
        is its SERVER span, ``tracing.request_began``'s (None when tracing is off)."""
        if self._timed:
            metrics.http_request(route, scope["method"], status, took_s)
        if span is not None or self._access_log:
            method = scope["method"] if scope["method"] in metrics.METHODS else metrics.OTHER
            if span is not None:
                tracing.request_ended(span, route, method, status)
            if self._access_log:
                client = scope.get("client")
                path = shown_path(scope["path"])
                log.info("%s %s %d %.1f ms", method, path, status, took_s * 1000,
                         extra={"method": method, "path": path, "status": status,
                                "duration_ms": round(took_s * 1000, 3),
                                "client": client[0] if client else None})

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` with each of its HTTP requests observed (the status noted from its
        answer's start)."""

        async def observed(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            span = tracing.request_began(scope["headers"])
            status = 0

            def noting(message: Message) -> Awaitable[None]:
                # ``send``'s own awaitable back: no coroutine of its own per message
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                return send(message)

            began = time.perf_counter()
            try:
                await app(scope, receive, noting)
            finally:
                self.ended(scope, self._route_of(scope), status, time.perf_counter() - began,
                           span)

        return observed
