"""uvicorn's httptools protocol with what it lacks against slow and excess clients.

uvicorn closes a connection left idle after a response (``timeout_keep_alive``), but nothing
else: a new connection that sends nothing, headers sent a byte at a time, or a body that
trickles in are held for as long as the client likes (400 such connections were all still
held after 30 s), and the ASGI app cannot see the first two at all. Its ``limit_concurrency``
answers a plain-text 503 without ``Retry-After`` to every request while over the limit,
including those of connections that were there first.

So each connection here has a phase — idle, reading headers, reading the body, with the app —
and the time it entered it; each phase but the last has a deadline (``Load.keepalive``,
``header_timeout``, ``body_timeout``). One timer per connection checks it, re-armed for the
deadline of the phase it finds: the hot path only notes phase changes (no timer per request).
A connection past its deadline is answered ``408`` if no answer has started, and closed (our
side at once, fully ``LINGER`` seconds later, see ``_linger``); the app, if it was reading the
body, sees the client disconnect.

A connection opened while ``max_connections`` are open has its requests answered ``503`` with
``Retry-After`` (JSON, as every Tidings answer) and is closed after the answer: the newest
connections are shed, not the ones already working.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tidings.server.http import encode
from tidings.settings import Load

log = logging.getLogger("tidings.server")
IDLE, HEADERS, BODY, APP = range(4)
APP_CHECK = 1.0  # seconds between checks while the app has the request (no deadline)
LINGER = 2.0  # seconds a cut connection stays half-open, its answer sent, before it closes
TIMED_OUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
             b"connection: close\r\ncontent-length: %d\r\n\r\n%s")


def protocol_for(load: Load) -> type[asyncio.Protocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``."""
    return type("TidingsHttpProtocol", (GuardedHttpProtocol,), {"load": load})


class GuardedHttpProtocol(HttpToolsProtocol):
    load: ClassVar[Load] = Load()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        load = self.load
        self._limits = (load.keepalive, load.header_timeout, load.body_timeout, None)
        self._phase = IDLE
        self._since = self.loop.time()
        self._fire_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._shed = len(self.connections) > load.max_connections
        self._arm(load.keepalive)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    # -- phases (httptools callbacks; on every request, so kept to a few assignments) ----------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = HEADERS
        self._since = now = self.loop.time()
        limit = self.load.header_timeout
        if now + limit < self._fire_at:
            self._arm(limit)

    def on_headers_complete(self) -> None:
        self._phase = BODY
        self._since = now = self.loop.time()
        limit = self.load.body_timeout
        if now + limit < self._fire_at:
            self._arm(limit)
        if self._shed:
            self.app = self._too_many_connections
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        cycle = self.cycle
        if cycle is not None and cycle.response_complete:
            # Answered before its body was in (a refusal): idle from now on, and uvicorn's
            # keep-alive timer was cancelled by the body's arrival.
            self._phase = IDLE
            self._since = self.loop.time()
            self._arm(self.load.keepalive)
        else:
            self._phase = APP  # no deadline; once answered, uvicorn's keep-alive timer runs

    async def _too_many_connections(self, scope: Any, receive: Any, send: Any) -> None:
        retry = self.load.retry_after
        body = encode({"error": f"too many connections: retry after {retry} s", "status": 503})
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
            (b"retry-after", b"%d" % retry), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    # -- the watch -----------------------------------------------------------------------------

    def _arm(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._fire_at = self.loop.time() + delay
        self._timer = self.loop.call_at(self._fire_at, self._check)

    def _check(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        limit = self._limits[self._phase]
        if limit is None:
            self._arm(APP_CHECK)
            return
        left = self._since + limit - self.loop.time()
        if left > 0:
            self._arm(left)
            return
        self._cut()

    def _cut(self) -> None:
        phase = self._phase
        cycle = self.cycle  # while reading headers, the previous request's
        if phase == IDLE:
            self.transport.close()
            return
        if phase == BODY and cycle is not None:
            # The app, waiting for the rest of the body, hears the client is gone.
            cycle.disconnected = True
            cycle.message_event.set()
        if phase == HEADERS:
            answering = cycle is not None and not cycle.response_complete
        else:
            answering = cycle is not None and cycle.response_started
        if not answering:
            what = "headers" if phase == HEADERS else "body"
            limit = self._limits[phase]
            body = encode({"error": f"the request {what} did not arrive within {limit:g} s",
                           "status": 408})
            self.transport.write(TIMED_OUT % (len(body), body))
            log.debug("cut a connection from %s: its request %s took over %g s",
                      self.client, what, limit)
        self._linger()

    def _linger(self) -> None:
        """Close after the client has had the answer: closing a socket with unread bytes in
        it (the client is still sending) resets the connection, and the reset can destroy the
        answer before the client reads it. So: end our side (FIN after the answer), read no
        more, and close a little later."""
        transport = self.transport
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        transport.pause_reading()
        self._timer = self.loop.call_later(LINGER, transport.close)
