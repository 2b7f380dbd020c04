"""The routing service of a process: routes what this process ingests as soon as it is
committed, and sweeps for everything else that is due (delayed events, events another process
stored and did not route, leftovers of a crash)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from functools import partial

from tidings.functions.registry import Registry
from tidings.ids import floor_id, now_ms
from tidings.outage import unavailable
from tidings.router.route import Routed, route
from tidings.storage.base import Storage
from tidings.storage.tx import Tx
from tidings.supervision import Supervisor

BATCH = 500
GRACE_MS = 2000  # the storing process routes its own events; others wait this long


class RouterService:
    def __init__(self, storage: Storage, registry: Registry, on_routed: Callable[[Routed], None],
                 *, supervisor: Supervisor, clock: Callable[[], int] = now_ms,
                 sweep_ms: int = 1000) -> None:
        self._storage = storage
        self._supervisor = supervisor
        self._registry = registry
        self._on_routed = on_routed
        self._clock = clock
        self._sweep_ms = sweep_ms
        self._pending: deque[str] = deque()
        self._ready = asyncio.Event()
        self._sweep_now = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def submit(self, event_ids: list[str]) -> None:
        """Route these committed events soon (now, or when they come due)."""
        if event_ids:
            self._pending.extend(event_ids)
            self._ready.set()

    def delayed(self) -> None:
        """A delayed event was stored: look again at when the next delivery is due."""
        self._sweep_now.set()

    async def start(self) -> None:
        self._tasks = [self._supervisor.start("tidings-router", self._loop),
                       self._supervisor.start("tidings-sweeper", self._sweeper)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def flush(self) -> int:
        """Route everything submitted and everything due now (tests, drain mode)."""
        delivered = 0
        while self._pending:
            delivered += await self._route(self._take())
        while True:
            now = self._clock()
            due = await self._storage.read(partial(_due, now=now, grace_ms=0))
            if not due:
                return delivered
            delivered += await self._route(due)

    def _take(self) -> list[str]:
        pending = self._pending
        batch = [pending.popleft() for _ in range(min(BATCH, len(pending)))]
        if not pending:
            self._ready.clear()
        return batch

    async def _route(self, event_ids: list[str]) -> int:
        now = self._clock()
        routed = await self._storage.write(lambda tx: route(tx, self._registry, event_ids, now))
        self._on_routed(routed)
        return routed.delivered

    async def _loop(self, ok: Callable[[], None]) -> None:
        """Route what this process stored. When the database is away the batch is kept, to
        be routed first once it is back (the loop's supervisor starts it again); a batch
        whose routing fails otherwise is left to the sweeper (its events stay undelivered)."""
        while True:
            await self._ready.wait()
            batch = self._take()
            try:
                await self._route(batch)
            except Exception as exc:
                if unavailable(exc):
                    self._pending.extendleft(reversed(batch))
                    self._ready.set()
                raise
            ok()

    async def _sweeper(self, ok: Callable[[], None]) -> None:
        while True:
            now = self._clock()
            due = await self._storage.read(partial(_due, now=now))
            if due:
                await self._route(due)
                ok()
                continue
            following = await self._storage.read(_next_delivery)
            ok()
            wait = self._sweep_ms / 1000
            if following is not None:
                wait = max(0.0, min(wait, (following - self._clock()) / 1000))
            self._sweep_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sweep_now.wait(), wait)


def _due(tx: Tx, *, now: int, grace_ms: int = GRACE_MS) -> list[str]:
    """Undelivered events that are due: those never delayed first, once the process that stored
    them had ``grace_ms`` to route them itself (it stopped, or it does not route), then delayed
    ones whose time has come."""
    ids = [row[0] for row in tx.all("undelivered_now", (floor_id(now - grace_ms + 1), BATCH))]
    if len(ids) < BATCH:
        ids += [row[0] for row in tx.all("undelivered_due", (now, BATCH - len(ids)))]
    return ids


def _next_delivery(tx: Tx) -> int | None:
    row = tx.one("next_delivery")
    return int(row[0]) if row and row[0] is not None else None
