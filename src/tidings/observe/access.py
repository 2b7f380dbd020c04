"""The access log (``--access-log``): one INFO line per HTTP request, written when its answer
has gone out: method, path, status, time taken, client address.

Paths only, never query strings or headers; the event key in ``/e/{key}`` is masked.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("tidings.access")


def shown_path(path: str) -> str:
    """``path`` as the log shows it: an event key masked."""
    return "/e/***" if path.startswith("/e/") else path


class AccessLog:
    """ASGI middleware around the whole app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            took = (time.perf_counter() - began) * 1000
            client = scope.get("client")
            path = shown_path(scope["path"])
            log.info("%s %s %d %.1f ms", scope["method"], path, status, took,
                     extra={"method": scope["method"], "path": path, "status": status,
                            "duration_ms": round(took, 3),
                            "client": client[0] if client else None})
