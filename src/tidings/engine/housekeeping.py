"""Housekeeping: expired state is deleted a chunk at a time.

Two tables keep a row per key value ever seen, and only overwrite it when the same value comes
back: events' idempotency claims (``event_idempotency``, worth nothing past their window) and
flow-control limits (``flow_limits``: a throttle whose theoretical arrival time has passed, a
rate-limit or idempotency window older than a day, the longest period either may have). With
keys that never return they would grow without end. Every ``interval`` the housekeeper walks
the next ``chunk`` rows of each table in key order, deletes the expired ones, and starts over
at the end, so one sweep never holds the writer for long. Any number of processes may sweep at
once: a delete only removes what is expired whoever removes it.

Then retention (``engine/expiry.py``): each environment's expired events and ended runs go,
``expiry_chunk`` rows per transaction until none are left, and SQLite returns the freed pages
to the file system; the chunks are spaced so that they take about 7 % of the process's CPU
(``storage/pacing.py``): ingest goes on at over nine tenths of its speed while millions of
rows go.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from tidings.engine import expiry
from tidings.events.retention import Retention
from tidings.ids import now_ms
from tidings.storage.base import Storage
from tidings.storage.pacing import PACED, Pacer
from tidings.storage.tx import Tx
from tidings.supervision import Supervisor

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    start: tuple[str, ...]  # a cursor before every key

    def expired(self, now: int) -> tuple[int, ...]:
        return (now,) if self.name == "idempotency" else (now, now - DAY_MS)


TABLES = (Table("idempotency", ("", "")), Table("flow_limits", ("",)))


def sweep(tx: Tx, table: Table, cursor: tuple[str, ...], now: int,
          chunk: int) -> tuple[tuple[str, ...], int]:
    """Delete the expired rows among the ``chunk`` after ``cursor``; the next cursor (the
    table's start once the end is reached) and how many rows went."""
    expired = table.expired(now)
    end = tx.one(f"{table.name}_after", (*cursor, chunk - 1))
    if end is None:
        return table.start, tx.run(f"{table.name}_expire_rest", (*cursor, *expired))
    last = tuple(str(v) for v in end)
    return last, tx.run(f"{table.name}_expire", (*cursor, *last, *expired))


class Housekeeper:
    def __init__(self, storage: Storage, *, supervisor: Supervisor,
                 clock: Callable[[], int] = now_ms, interval: float = 10.0,
                 chunk: int = 5000, retention: Retention | None = None,
                 expiry_chunk: int = expiry.CHUNK, pacer: Pacer = PACED) -> None:
        """``retention``: the mode's defaults (``events.retention.defaults``); None leaves
        events and runs alone."""
        self._storage = storage
        self._retention = retention
        self._expiry_chunk = expiry_chunk
        self._pacer = pacer
        self._supervisor = supervisor
        self._clock = clock
        self._interval = interval
        self._chunk = chunk
        self._cursors = {table.name: table.start for table in TABLES}
        self._task: asyncio.Task[None] | None = None

    async def once(self) -> int:
        """One step of every table; how many rows were deleted."""
        now = self._clock()

        def step(tx: Tx) -> int:
            deleted = 0
            for table in TABLES:
                cursor, count = sweep(tx, table, self._cursors[table.name], now, self._chunk)
                self._cursors[table.name] = cursor
                deleted += count
            return deleted

        return await self._storage.write(step) + await self.expire()

    async def expire(self) -> int:
        """Delete every expired event and ended run (``engine/expiry.py``) a chunk per
        transaction, paced (``storage/pacing.py``); how many rows went. The environments'
        settings are read again before each round of chunks, so a change takes effect within
        one chunk."""
        if self._retention is None:
            return 0
        now = self._clock()
        chunk = self._expiry_chunk
        total = 0
        done: set[tuple[str, int]] = set()  # (environment, sweep) with nothing left
        sweeps = (expiry.expire_events, expiry.expire_runs)
        while True:
            went = 0
            for env_id, retention in await self._storage.read(
                    partial(expiry.envs, base=self._retention)):
                for n, ttl in enumerate((retention.events_ttl_ms, retention.runs_ttl_ms)):
                    if ttl is None or (env_id, n) in done:
                        continue
                    count = await self._pacer.write(self._storage, partial(
                        sweeps[n], env_id=env_id, before_ms=now - ttl, chunk=chunk))
                    went += count
                    if count < chunk:
                        done.add((env_id, n))
            total += went
            if not went:
                break
        if total:
            while await self._pacer.write(self._storage, expiry.free_pages) > 0:
                pass
        return total

    async def start(self) -> None:
        self._task = self._supervisor.start("tidings-housekeeping", self._loop)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self, ok: Callable[[], None]) -> None:
        while True:
            await self.once()
            ok()
            await asyncio.sleep(self._interval)
