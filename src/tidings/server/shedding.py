"""Admission control: what the server takes on at once, and the ``503`` + ``Retry-After`` it
answers beyond that, at once, rather than letting requests queue until they time out.

Two things fill up under overload. Memory: every request body being read or handled is held
(and an event batch is several times its size once parsed), so bodies are counted in bytes —
the declared ``Content-Length`` when the request arrives, then what a chunked body or a gzip
body's inflation adds as it is read (``Ticket.grow``) — and in number. An idle server admits
any single request, however large, so a body bigger than the whole budget is still taken when
nothing else is.

Time: the database answers in order, so a request that joins a long backlog waits for all of
it. Requests that write events are refused when the rows ahead of them would take longer than
``max_write_wait`` to store, at the rate events were stored over the last second (never fewer
than ``MIN_WRITE_BACKLOG`` rows, so that a burst after a quiet spell is taken; never more than
``max_write_backlog``). The rows ahead are those the database has not answered yet
(``Storage.backlog``) plus those of the requests admitted but not parsed yet. Those are not
known before parsing, so each is estimated from its size and the bytes per event of the
requests parsed so far, and replaced by the real count once parsed (``Ticket.parsed``).
Deciding on arrival, rather than after parsing, keeps the server from spending its time parsing
batches it then refuses.

A request to store events whose body is declared over the body limit is not admitted at all
(``admit`` gives no ticket): it can never be stored, so no retry would help, and its route
answers ``413`` when it reads the body rather than a ``503`` inviting a retry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tidings.errors import Overloaded
from tidings.settings import Load

log = logging.getLogger("tidings.server")
QUIET_SECONDS = 10.0  # one warning per overload, not one per refused request
FIRST_BYTES_PER_ROW = 128.0  # until requests have been parsed: a small event's size
LEARNING = 0.2  # weight of the newest request in the bytes-per-event average
MIN_WRITE_BACKLOG = 10_000  # rows always allowed ahead (up to max_write_backlog)
RATE_WINDOW = 1.0  # seconds over which the rate of storing events is measured


class Ticket:
    """One admitted request's share of the budget; ``release`` it when the request ends."""

    __slots__ = ("_shedder", "handed", "rows", "size")

    def __init__(self, shedder: Shedder, size: int, rows: int) -> None:
        self._shedder = shedder
        self.size = size
        self.rows = rows  # estimated events not yet handed to the database
        self.handed = 0  # events handed to the database
    def grow(self, extra: int) -> None:
        """Count ``extra`` more bytes of this request; ``Overloaded`` when over the budget."""
        shedder = self._shedder
        if shedder.bytes + extra > shedder.load.max_inflight_bytes and shedder.bytes > self.size:
            raise shedder.refuse("request bodies being handled are over "
                                 f"{shedder.load.max_inflight_bytes} bytes")
        shedder.bytes += extra
        self.size += extra

    def parsed(self, rows: int) -> None:
        """The request holds ``rows`` events, about to be handed to the database (which counts
        them from then on): its estimate is dropped, and teaches the next ones."""
        shedder = self._shedder
        shedder.pending_rows -= self.rows
        self.rows = 0
        self.handed = rows
        if rows and self.size:
            shedder.bytes_per_row += LEARNING * (self.size / rows - shedder.bytes_per_row)

    def release(self) -> None:
        shedder = self._shedder
        shedder.bytes -= self.size
        shedder.requests -= 1
        shedder.pending_rows -= self.rows
        shedder.stored_rows += self.handed
        self.size = self.rows = self.handed = 0


class Shedder:
    """Admits requests within ``load``'s bounds; counts what it refused."""

    def __init__(self, load: Load, backlog: Callable[[], int], *, body_limit: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.load = load
        self.body_limit = body_limit  # bodies of events over this size are never stored
        self._backlog = backlog
        self._clock = clock
        self.bytes = 0
        self.requests = 0
        self.pending_rows = 0  # estimated events of admitted requests not parsed yet
        self.bytes_per_row = FIRST_BYTES_PER_ROW
        self.refused = 0
        self._warned_at = -QUIET_SECONDS
        self.stored_rows = 0  # events stored (or failed to be) since the start
        self.rate = 0.0  # events stored per second, over the last full window
        self._window = (clock(), 0)  # when the window began, stored_rows then
        # Below this many rows ahead nothing is refused, whatever the rate: no need to know it.
        self._floor = min(load.max_write_backlog, MIN_WRITE_BACKLOG)

    def admit(self, size: int, *, writes_events: bool = False) -> Ticket | None:
        """A ticket for a request declaring ``size`` bytes of body; ``Overloaded`` instead when
        it is over a bound (``writes_events``: also when the rows ahead of it would be). None,
        counting nothing, for events in a body over ``body_limit``: they are refused with 413
        when the body is read."""
        if writes_events and self.body_limit is not None and size > self.body_limit:
            return None
        load = self.load
        if self.requests >= load.max_inflight_requests:
            raise self.refuse(f"{self.requests} requests are being handled")
        if self.bytes and self.bytes + size > load.max_inflight_bytes:
            raise self.refuse(f"request bodies being handled are over "
                              f"{load.max_inflight_bytes} bytes")
        rows = 0
        if writes_events:
            rows = int(size / self.bytes_per_row) + 1
            ahead = self._backlog() + self.pending_rows
            if ahead and ahead + rows > self._floor and ahead + rows > self.write_bound():
                raise self.refuse(f"{ahead} events are waiting to be stored")
            self.pending_rows += rows
        self.bytes += size
        self.requests += 1
        return Ticket(self, size, rows)

    def write_bound(self) -> int:
        """How many rows may wait to be stored now (measuring the rate when a window is
        over: only asked when the rows ahead are over the floor)."""
        load = self.load
        now = self._clock()
        began, rows = self._window
        if now - began >= RATE_WINDOW:
            self.rate = (self.stored_rows - rows) / (now - began)
            self._window = (now, self.stored_rows)
        timely = int(self.rate * load.max_write_wait)
        return min(load.max_write_backlog, max(MIN_WRITE_BACKLOG, timely))

    def stored(self, rows: int) -> None:
        """``rows`` events were stored (or failed to be): what the rate is measured from."""
        self.stored_rows += rows

    def refuse(self, why: str) -> Overloaded:
        self.refused += 1
        now = self._clock()
        if now - self._warned_at >= QUIET_SECONDS:
            self._warned_at = now
            log.warning("overloaded, refusing requests with 503 (%s); %d refused so far",
                        why, self.refused)
        return Overloaded(f"overloaded ({why}): retry after {self.load.retry_after} s",
                          retry_after=self.load.retry_after)
