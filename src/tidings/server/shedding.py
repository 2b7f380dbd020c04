"""Admission control: what the server takes on at once, and the ``503`` + ``Retry-After`` it
answers beyond that, at once, rather than letting requests queue until they time out.

Two things fill up under overload. Memory: every request body being read or handled is held
(and an event batch is several times its size once parsed), so bodies are counted in bytes —
the declared ``Content-Length`` when the request arrives, then what a chunked body or a gzip
body's inflation adds as it is read (``Ticket.grow``) — and in number. Time: the database
answers in order, so a request that joins a long backlog waits for all of it; requests that
write events are refused while ``Storage.backlog`` is over its bound, which keeps an accepted
request's wait short. An idle server admits any single request, however large, so a body
bigger than the whole budget is still taken when nothing else is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tidings.errors import Overloaded
from tidings.settings import Load

log = logging.getLogger("tidings.server")
QUIET_SECONDS = 10.0  # one warning per overload, not one per refused request


class Ticket:
    """One admitted request's share of the budget; ``release`` it when the request ends."""

    __slots__ = ("_shedder", "size")

    def __init__(self, shedder: Shedder, size: int) -> None:
        self._shedder = shedder
        self.size = size

    def grow(self, extra: int) -> None:
        """Count ``extra`` more bytes of this request; ``Overloaded`` when over the budget."""
        shedder = self._shedder
        if shedder.bytes + extra > shedder.load.max_inflight_bytes and shedder.bytes > self.size:
            raise shedder.refuse("request bodies being handled are over "
                                 f"{shedder.load.max_inflight_bytes} bytes")
        shedder.bytes += extra
        self.size += extra

    def release(self) -> None:
        self._shedder.bytes -= self.size
        self._shedder.requests -= 1
        self.size = 0


class Shedder:
    """Admits requests within ``load``'s bounds; counts what it refused."""

    def __init__(self, load: Load, backlog: Callable[[], int]) -> None:
        self.load = load
        self._backlog = backlog
        self.bytes = 0
        self.requests = 0
        self.refused = 0
        self._warned_at = -QUIET_SECONDS

    def admit(self, size: int, *, writes_events: bool = False) -> Ticket:
        """A ticket for a request declaring ``size`` bytes of body; ``Overloaded`` instead when
        it is over a bound (``writes_events``: also when the database is behind)."""
        load = self.load
        if self.requests >= load.max_inflight_requests:
            raise self.refuse(f"{self.requests} requests are being handled")
        if self.bytes and self.bytes + size > load.max_inflight_bytes:
            raise self.refuse(f"request bodies being handled are over "
                              f"{load.max_inflight_bytes} bytes")
        if writes_events and self._backlog() >= load.max_write_backlog:
            raise self.refuse(f"the database is {self._backlog()} rows behind")
        self.bytes += size
        self.requests += 1
        return Ticket(self, size)

    def refuse(self, why: str) -> Overloaded:
        self.refused += 1
        now = time.monotonic()
        if now - self._warned_at >= QUIET_SECONDS:
            self._warned_at = now
            log.warning("overloaded, refusing requests with 503 (%s); %d refused so far",
                        why, self.refused)
        return Overloaded(f"overloaded ({why}): retry after {self.load.retry_after} s",
                          retry_after=self.load.retry_after)
