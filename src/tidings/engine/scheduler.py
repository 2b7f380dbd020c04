"""Cron: each function's schedule fires ``tidings/scheduled.timer`` and starts one run per tick,
once across all processes (the run's key is the tick)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ulid import ULID

from tidings.errors import ConfigError
from tidings.flow import at_route
from tidings.functions.cron import parse_cron
from tidings.functions.model import FunctionRow
from tidings.functions.registry import Registry
from tidings.ids import now_ms
from tidings.observe import metrics
from tidings.runs import store
from tidings.runs.model import QueuedRun
from tidings.storage.base import EventRow, Storage, internal_event
from tidings.storage.tx import Tx
from tidings.supervision import Supervisor

TIMER = "tidings/scheduled.timer"


def tick_id(fn: FunctionRow, tick: int) -> str:
    entropy = hashlib.sha256(f"{fn.id}:{tick}".encode()).digest()[:10]
    return str(ULID.from_bytes(tick.to_bytes(6, "big") + entropy))


@dataclass(slots=True)
class _Started:
    runs: list[QueuedRun] = field(default_factory=list)


def fire(tx: Tx, *, fn: FunctionRow, expression: str, tick: int, now: int,
         registry: Registry | None = None) -> str | None:
    row = internal_event(event_id=tick_id(fn, tick), env_id=fn.env_id, name=TIMER,
                         data={"cron": expression}, ts=tick, received_at=now)
    if registry is not None and fn.flow is not None and fn.flow.at_route:
        # Flow control (a singleton, a rate limit…) decides, once: only the process that
        # stores the tick's event goes on.
        if tx.run("insert_event", _event_params(tx, row, now)) == 0:
            return None
        event = {"id": row.id, "name": TIMER, "data": {"cron": expression}, "ts": tick}
        run_id = at_route.start(tx, registry, fn, row.id, event, now, _Started())
    else:
        store.insert_event(tx, row, delivered_at=now)
        run_id = store.create_run(tx, fn=fn, event_id=row.id, due_at=now, now=now,
                                  dedup_key=f"cron:{tick}")
    if run_id is not None:
        metrics.scheduled(fn.app_id, fn.slug, "cron")
        store.notify(tx, fn.queue)
    return run_id


def _event_params(tx: Tx, row: EventRow, now: int) -> tuple[Any, ...]:
    return (row.id, row.env_id, row.name, tx.json(row.data), None, None, None,
            row.ts, None, row.source, None, None, row.received_at, None, now, None)


class CronService:
    def __init__(self, storage: Storage, registry: Registry, on_run: Callable[[str], None], *,
                 supervisor: Supervisor, clock: Callable[[], int] = now_ms) -> None:
        self._storage = storage
        self._supervisor = supervisor
        self._registry = registry
        self._on_run = on_run
        self._clock = clock
        self._next: dict[tuple[str, str], int] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = self._supervisor.start("tidings-cron", self._loop)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def tick(self) -> list[str]:
        """Fire every schedule that is due; return the runs started here."""
        await self._storage.read(self._registry.refresh)
        now = self._clock()
        started: list[str] = []
        live = set()
        for fn, expression in self._registry.crons:
            key = (fn.id, expression)
            live.add(key)
            try:
                schedule = parse_cron(expression)
            except ConfigError:
                continue
            due = self._next.get(key)
            if due is None:
                self._next[key] = schedule.next_after(now)
                continue
            if due > now:
                continue
            run_id = await self._storage.write(partial(fire, fn=fn, expression=expression,
                                                       tick=due, now=now,
                                                       registry=self._registry))
            if run_id is not None:
                started.append(run_id)
                self._on_run(fn.queue)
            self._next[key] = schedule.next_after(now)
        for key in set(self._next) - live:
            del self._next[key]
        return started

    async def _loop(self, ok: Callable[[], None]) -> None:
        while True:
            await self.tick()
            ok()
            upcoming = min(self._next.values(), default=None)
            wait = 1.0
            if upcoming is not None:
                wait = max(0.01, min(wait, (upcoming - self._clock()) / 1000))
            await asyncio.sleep(wait)
