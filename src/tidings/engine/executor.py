"""The executor: leases due runs of one queue and drives each forward by one call.

A call replays the run's recorded steps, runs what is new, and ends in an ``Outcome`` that the
executor turns into state in one transaction: the run's end, its retry time, or its pauses.
Leases are renewed while calls are in flight; a worker that dies stops renewing, its leases
expire, and another worker picks the runs up where their recorded steps end.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from tidings.calls.outcomes import Driver, Outcome, RunFailed
from tidings.core import Core
from tidings.engine import telemetry
from tidings.engine.backoff import Backoff
from tidings.engine.host import CallHost
from tidings.engine.settle import Settler
from tidings.errors import NonRetriableError, RequestRejected
from tidings.events.parse import parse_events
from tidings.flow import at_claim
from tidings.functions import registration
from tidings.functions.model import FunctionRow
from tidings.functions.registry import Registry
from tidings.ids import IdSeed, new_id, now_ms
from tidings.observe import metrics
from tidings.outage import unavailable
from tidings.router.route import Adopted
from tidings.runs import store
from tidings.runs.model import FAILED, Run, StepRecord
from tidings.storage.base import EventRow
from tidings.storage.tx import Tx
from tidings.supervision import describe
from tidings.vault import Lookups

log = logging.getLogger("tidings.engine")
OUTAGE_RETRY_MS = 1000  # a run whose call the database failed is due again no sooner


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineSettings:
    lease_ms: int = 30_000
    heartbeat_ms: int = 10_000
    concurrency: int = 100
    idle_poll_ms: int = 250
    backoff: Backoff = field(default_factory=Backoff)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{new_id()[-6:]}"


class Executor:
    def __init__(self, core: Core, registry: Registry, driver: Driver, *,
                 queue: str, settings: EngineSettings | None = None,
                 clock: Callable[[], int] = now_ms,
                 on_events: Callable[[list[str]], None] | None = None,
                 on_due: Callable[[str], None] | None = None) -> None:
        self.core = core
        self.storage = core.storage
        self.registry = registry
        self.queue = queue
        self.settings = settings or EngineSettings()
        self.clock = clock
        self.owner = worker_id()
        self._on_events = on_events or (lambda ids: None)
        self._on_due = on_due or (lambda queue: None)
        self._driver = driver
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._leases: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._saturated = False
        self._orphans = False  # a run was left leased to this executor: free it (the loop)
        self._reserved = 0
        self._reserve_lock = threading.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        # Writes commit in the order they are made (SQLite's one writer): a call's steps are
        # recorded while it goes on, and plain completions are written together.
        self._ordered = self.storage.ordered_writes
        self._settler = Settler(self.storage, registry, core.vault, clock=clock,
                                backoff=self.settings.backoff, batched=self._ordered)

    # -- lifecycle -----------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    # -- runs handed over by the router (no claim) -----------------------------------------------

    @property
    def lease_ms(self) -> int:
        return self.settings.lease_ms

    def reserve(self) -> bool:
        """Take a slot for a run the router is about to hand over (called in the routing
        transaction, possibly from the writer thread)."""
        with self._reserve_lock:
            if self._stopping or (len(self._inflight) + self._reserved
                                  >= self.settings.concurrency):
                return False
            self._reserved += 1
            return True

    def unreserve(self, count: int) -> None:
        with self._reserve_lock:
            self._reserved -= count

    def adopt(self, calls: list[Adopted]) -> None:
        """Drive runs the router leased to this executor in the transaction that stored their
        events (after that transaction committed)."""
        self.unreserve(len(calls))
        for run, row in calls:
            self._leases[run.id] = run.lease_token
            self._track(run.id, asyncio.create_task(self._drive(store.Claimed(run, [], [row]))))

    async def start(self) -> None:
        supervisor = self.core.supervisor
        self._tasks = [supervisor.start(f"tidings-executor[{self.queue}]", self._loop),
                       supervisor.start(f"tidings-heartbeat[{self.queue}]", self._heartbeat)]

    async def stop(self, grace: float = 30.0) -> None:
        """Stop claiming; let calls in flight finish for ``grace`` seconds, then abandon the
        rest and hand back every other lease this executor holds (released, so another worker
        continues those runs at once).

        The leases of calls cut off at the grace are not handed back: cancelling the call does
        not stop its code (a synchronous function's thread, an SDK app serving the request),
        which may still be running a step, and a worker taking the run at once would run that
        step beside it. They lapse instead (``lease_ms`` after their last renewal), as a dead
        worker's do."""
        self._stopping = True
        self._wake.set()
        if self._inflight:
            _, pending = await asyncio.wait(list(self._inflight.values()), timeout=grace)
            # (a call's lease leaves ``_leases`` as its task ends)
            cut_off = [run_id for run_id, task in self._inflight.items() if task in pending]
            for run_id in cut_off:
                log.warning("run %s: still in its call after the %.0f s grace; abandoned, its "
                            "lease left to lapse so that no other worker runs a step beside "
                            "one that may still be running here", run_id, grace,
                            extra={"run_id": run_id})
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        leases = list(self._leases.items())
        if leases:

            def release_all(tx: Tx) -> None:
                for run_id, token in leases:
                    store.release(tx, run_id, token)

            try:
                await self.storage.write(release_all)
            except Exception as exc:
                log.warning("%d leases could not be handed back (%s): they expire within %d s",
                            len(leases), describe(exc), self.settings.lease_ms // 1000)
        self._driver.close()

    async def drain(self, *, max_rounds: int = 10_000) -> int:
        """Run everything due now, and what that makes due, until nothing is left (tests)."""
        total = 0
        for _ in range(max_rounds):
            claimed = await self._claim(self.settings.concurrency)
            if not claimed:
                break
            total += len(claimed)
            await asyncio.gather(*(self._drive(call) for call in claimed))
        return total

    # -- the loop ------------------------------------------------------------------------------

    async def _loop(self, ok: Callable[[], None]) -> None:
        """Claim and drive due runs; a failure (the database away) ends it, and its supervisor
        starts it again with backoff."""
        await self._release_orphans()
        while not self._stopping:
            if self._orphans:
                self._orphans = False
                await self._release_orphans()
            room = self.settings.concurrency - len(self._inflight) - self._reserved
            if room <= 0:
                self._saturated = True
                await self._idle(poll=False)
                continue
            claimed = await self._claim(room)
            ok()
            for call in claimed:
                self._track(call.run.id, asyncio.create_task(self._drive(call)))
            if len(claimed) == room:
                # Probably more is due: claim again as soon as calls finish.
                self._saturated = True
                await asyncio.sleep(0)
                continue
            await self._idle()

    async def _release_orphans(self) -> None:
        """Free the leases this executor holds on runs it is not driving: claims that committed
        although their answer was lost with the connection, calls whose hand-back failed. Only
        leases taken before now, so a run being handed over meanwhile is not touched; after an
        outage the runs are due again at once instead of when their leases expire."""
        before = self.clock() + self.settings.lease_ms
        driving = set(self._leases)
        freed = await self.storage.write(lambda tx: store.release_orphans(
            tx, self.queue, self.owner, before, driving))
        if freed:
            log.info("%d runs leased to this worker before a failure are free again", freed)

    def _orphaned(self) -> None:
        """A run this executor drove is left leased to it, its hand-back written by no one
        (the database away). The loop frees it once the database answers again: woken now, its
        next claim either fails (the loop starts again, freeing orphans first) or succeeds and
        frees them. Left to its lease, the run would wait for it to expire (30 s by
        default)."""
        self._orphans = True
        self._wake.set()

    def _track(self, run_id: str, task: asyncio.Task[None]) -> None:
        self._inflight[run_id] = task
        task.add_done_callback(lambda done: self._forget(run_id, done))

    def _forget(self, run_id: str, task: asyncio.Task[None]) -> None:
        if self._inflight.get(run_id) is task:
            del self._inflight[run_id]
        if self._saturated:
            self._saturated = False
            self._wake.set()

    async def _idle(self, *, poll: bool = True) -> None:
        """Wait for a wake-up, or until the next run is due (bounded by the idle poll)."""
        if self._wake.is_set():
            self._wake.clear()
            return
        wait = self.settings.idle_poll_ms / 1000
        if poll:
            due = await self.storage.read(lambda tx: store.next_due(tx, self.queue))
            if due is not None:
                wait = max(0.0, min(wait, (due - self.clock()) / 1000))
        if wait > 0 and not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
        self._wake.clear()

    async def _claim(self, limit: int) -> list[store.Claimed]:
        if limit <= 0:
            return []
        now = self.clock()
        calls = await self.storage.write(lambda tx: store.claim_calls(
            tx, self.queue, self.owner, now, self.settings.lease_ms, limit, self._admit))
        for call in calls:
            self._leases[call.run.id] = call.run.lease_token
        return calls

    def _admit(self, tx: Tx, runs: list[Run], now: int,
               loaded: dict[str, EventRow]) -> list[Run]:
        return at_claim.admit(tx, runs, now, self.registry, loaded)

    async def _heartbeat(self, ok: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_ms / 1000)
            if self._leases:
                await self._renew(list(self._leases.items()))
            ok()

    async def _renew(self, leases: list[tuple[str, int]]) -> None:
        until = self.clock() + self.settings.lease_ms
        await self.storage.write(lambda tx: store.renew(tx, leases, until))

    # -- one call ------------------------------------------------------------------------------

    async def _drive(self, call: store.Claimed) -> None:
        try:
            await self._call(call)
        except Exception as exc:
            await self._failed_inside(call, exc)
        finally:
            self._leases.pop(call.run.id, None)

    async def _failed_inside(self, call: store.Claimed, exc: Exception) -> None:
        """A call failed inside the engine rather than in the function.

        In a database outage (``outage.py``) nothing is the run's fault and nothing can
        be recorded: the run is handed back, due again in ``OUTAGE_RETRY_MS`` (when even that
        cannot be written, its lease expires). Any other failure — a bug, an answer the engine
        could not take in — is an attempt of the run, as if the function had raised: its error
        is recorded on the run and the run is due again after the backoff, or fails once the
        function's retries are spent. So a run whose calls keep failing inside the engine
        still ends."""
        run = call.run
        if unavailable(exc):
            log.warning("run %s: the database failed during the call (%s); the run is taken "
                        "up again once it is back", run.id, describe(exc))
            due = self.clock() + OUTAGE_RETRY_MS
            try:
                await self.storage.write(lambda tx: store.hand_back(tx, run, due))
            except Exception:
                self._orphaned()
            return
        error = {"name": "EngineError",
                 "message": f"the call failed inside Tidings: {describe(exc)}"}
        log.error("run %s: the call failed inside the engine; it counts as attempt %d of the "
                  "run", run.id, run.attempt + 1, exc_info=exc)
        fn = self.registry.by_id(run.function_id)
        try:
            fn = fn or await self._function_row(run.function_id)
            if fn is not None:
                event, events = await self._events(run, call.events)
                await self._settle(run, fn, event, events, RunFailed(error), [], call=call)
                return
        except Exception as again:
            if unavailable(again):
                self._orphaned()
                return
            log.exception("run %s: recording the failed attempt failed too; recording it alone",
                          run.id)
        # The plainest record of the attempt, without the function's settings or events.
        now = self.clock()
        final = run.attempt >= (fn.retries if fn is not None else 0)
        due = now + self.settings.backoff.delay(run.attempt + 1)
        try:
            await self.storage.write(
                lambda tx: store.finish(tx, run, status=FAILED, output=None, error=error,
                                        now=now) if final else
                store.reschedule(tx, run, due_at=due, attempt=run.attempt + 1, error=error))
        except Exception:
            log.exception("run %s: the failed attempt could not be recorded; the run is taken "
                          "up again when its lease expires", run.id)

    async def _call(self, call: store.Claimed) -> None:
        run = call.run
        fn_row = await self._function_row(run.function_id)
        if fn_row is None or not self._driver.serves(fn_row):
            log.warning("run %s: function %s is not served by this worker", run.id,
                        fn_row.slug if fn_row else run.function_id)
            await self.storage.write(lambda tx: store.release(tx, run.id, run.lease_token))
            return
        telemetry.call_began(run, fn_row, first=not call.steps and run.attempt == 0)
        event, events = await self._events(run, call.events)
        host = CallHost(storage=self.storage, clock=self.clock, backoff=self.settings.backoff,
                        send=self.send, ordered=self._ordered, run=run, fn=fn_row,
                        steps=call.steps)
        outcome = await self._driver.call(fn_row, host, run=run, event=event, events=events)
        if not await host.settled() or outcome is None:
            if host.lost:
                telemetry.lease_lost(run)
            return
        if host.progressed:
            # Retries count per position, as Inngest's queue items do: a function-level
            # failure after the run moved on starts a count of its own.
            run = replace(run, attempt=0)
        await self._settle(run, fn_row, event, events, outcome, host.take_buffer(),
                           call=call, first=not call.steps)

    async def _function_row(self, function_id: str) -> FunctionRow | None:
        known = self.registry.by_id(function_id)
        if known is not None:
            return known
        return await self.storage.read(lambda tx: registration.function_by_id(tx, function_id))

    async def _events(self, run: Run, rows: list[EventRow]
                      ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        loaded = []
        lookups: Lookups = {}
        for row in rows:
            stored = await self.core.events.open(row, lookups)
            if stored.user_erased:
                # A rerun or replay of an erased person's run, or a run of an event stored
                # before the erasure: it goes on, without the person.
                log.info("run %s: the person of event %s was erased; the run sees event.user "
                         "= {}", run.id, row.id)
            data: dict[str, Any] = {"id": stored.key or stored.id, "name": stored.name,
                                    "data": stored.data, "user": stored.user, "ts": stored.ts,
                                    "source": stored.source}
            if stored.v is not None:
                data["v"] = stored.v
            if stored.meta is not None:
                data["meta"] = stored.meta
            if stored.context is not None:
                data["context"] = stored.context
            loaded.append(data)
        if not loaded:
            loaded = [{"id": run.event_id, "name": "tidings/missing", "data": {}, "ts": 0}]
        return loaded[0], loaded

    # -- outcomes ------------------------------------------------------------------------------

    async def _settle(self, run: Run, fn: FunctionRow, event: dict[str, Any],
                      events: list[dict[str, Any]], outcome: Outcome,
                      records: list[StepRecord], *, call: store.Claimed,
                      first: bool = False) -> None:
        """Record what a call did (``settle.py``), then route the events it emitted and call
        the run again now if it is due."""
        settled = await self._settler.settle(run, fn, event, events, outcome, records,
                                             call=call, first=first)
        if settled.emitted:
            self._on_events(settled.emitted)
        if settled.due_now:
            self._on_due(self.queue)
            self.wake()

    # -- sending from inside a run -------------------------------------------------------------

    async def send(self, run: Run, events: list[dict[str, Any]], key: str) -> list[str]:
        """Store events sent from a step. Their ids derive from the run and step, so a step that
        runs again (its process died before recording it) stores nothing twice."""
        env_id = run.env_id
        now = self.clock()
        try:
            parsed = parse_events(msgspec.json.encode(events), self.core.settings.limits, now)
        except RequestRejected as exc:
            raise NonRetriableError(f"send_event: {exc.message}") from None
        digest = hashlib.sha256(f"{run.id}:{key}".encode()).digest()
        seed = IdSeed(run.created_at, digest[:10])
        ids = await self.core.ingest.append(env_id, parsed, seed, received_at=now)
        metrics.received("run", "accepted", len(ids))
        self._on_events(ids)
        return ids
