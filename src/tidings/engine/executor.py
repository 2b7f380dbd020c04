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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from tidings.core import Core
from tidings.engine import telemetry
from tidings.engine.backoff import Backoff, clamp_retry_after
from tidings.engine.error_records import lifecycle
from tidings.engine.outcomes import (
    Blocked,
    Continue,
    Driver,
    Invoke,
    Outcome,
    RetryStep,
    RunDone,
    RunFailed,
    Sleep,
    WaitForEvent,
)
from tidings.errors import NonRetriableError, RequestRejected
from tidings.events.parse import INTERNAL_DATA_KEY, parse_events
from tidings.flow import admission as flow_admission
from tidings.flow import routing as flow_routing
from tidings.ids import IdSeed, floor_id, new_id, now_ms
from tidings.observe import metrics
from tidings.router.registry import Registry
from tidings.router.route import look_back
from tidings.runs import store
from tidings.runs.model import COMPLETED, FAILED, FunctionRow, Run, StepRecord, StepRow, dumps
from tidings.sdk.context import _Interrupt
from tidings.storage.base import EventRow
from tidings.storage.outage import unavailable
from tidings.storage.tx import Tx
from tidings.supervision import describe

log = logging.getLogger("tidings.engine")
OUTAGE_RETRY_MS = 1000  # a run whose call the database failed is due again no sooner


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineSettings:
    lease_ms: int = 30_000
    heartbeat_ms: int = 10_000
    concurrency: int = 100
    idle_poll_ms: int = 250
    backoff: Backoff = field(default_factory=Backoff)


def _without_user(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "user"}


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{new_id()[-6:]}"


class _Host:
    """The engine's side of one call (``StepHost`` for the SDK's step tools).

    Finished steps are buffered and written together — with the call's outcome when the call
    ends soon, else every ``FLUSH_MS`` or ``FLUSH_STEPS`` — instead of one commit per step. A
    step is then recorded at least once and, once recorded, never runs again, which is all a
    replay relies on. Where the database commits writes in the order they are made (SQLite's
    single writer) the function goes on while a flush commits; elsewhere it waits for each
    flush, so records still land in order.
    """

    FLUSH_MS = 20
    FLUSH_STEPS = 256

    def __init__(self, executor: Executor, run: Run, fn: FunctionRow, steps: list[StepRow]) -> None:
        self._executor = executor
        self._run = run
        self._fn = fn
        self._steps = [s for s in steps if s.status in ("completed", "failed")]
        self._memo = {s.step: s for s in self._steps}
        self._failures = {s.step: s.attempts for s in steps if s.status == "errored"}
        self._position = len(steps)
        self.blockers: list[Any] = []
        self.retry: RetryStep | None = None
        self.lost = False
        # Something new was recorded in this call (a step's result, a pause): the run moved
        # on, and its count of function-level failures starts again (``attempt``).
        self.progressed = False
        self._buffer: list[StepRecord] = []
        self._began: dict[str, int] = {}
        self._buffered_at = 0
        self._pending: list[asyncio.Future[bool]] = []
        self._ordered = bool(getattr(executor.storage, "ordered_writes", False))

    @property
    def recorded(self) -> list[StepRow]:
        """Steps recorded before this call, in the order they were recorded."""
        return self._steps

    @property
    def attempts(self) -> dict[str, int]:
        """Failed attempts so far of the steps that will be retried."""
        return self._failures

    @property
    def attempt(self) -> int:
        """The attempt a call starting now makes (``ctx.attempt``): the failed attempts of the
        step being retried, else the run's function-level failures since it last moved on."""
        return max(self._failures.values(), default=0 if self.progressed else self._run.attempt)

    def take_buffer(self) -> list[StepRecord]:
        buffer, self._buffer = self._buffer, []
        return buffer

    async def settled(self) -> bool:
        """Wait for step records in flight; False when one found the lease lost."""
        if self._pending:
            results = await asyncio.gather(*self._pending)
            self._pending.clear()
            if not all(results):
                self.lost = True
        return not self.lost

    async def flushed(self) -> bool:
        """Write every buffered step now and wait for all step records in flight: for a call
        whose SDK reads the run's steps back through the API (``use_api``), which must see
        them all. False when the lease was lost."""
        if self._buffer:
            self._pending.append(self._flush())
        return await self.settled()

    def memo(self, step: str) -> tuple[bool, Any]:
        row = self._memo.get(step)
        if row is None:
            self._began[step] = self.now()  # the step is new: it starts now
            return False, None
        return True, row.output

    def now(self) -> int:
        return self._executor.clock()

    def _next_position(self) -> int:
        self._position += 1
        return self._position - 1

    def _flush(self) -> asyncio.Future[bool]:
        records = self.take_buffer()
        run = self._run
        return asyncio.ensure_future(self._executor.storage.write(
            lambda tx: store.record_steps(tx, run, records)))

    async def completed(self, step: str, name: str, output: bytes,
                        began: int | None = None, *, kind: str = "run") -> None:
        attempt = self._failures.pop(step, 0)  # a step that was being retried is done
        self.progressed = True
        now = self.now()
        began = self._began.pop(step, now) if began is None else began
        self._buffer.append(StepRecord(step, name, self._next_position(), output.decode(),
                                       began, now, kind))
        telemetry.step_attempt(self._run, step=step, name=name, op=kind, attempt=attempt,
                               began=began, now=now)
        if len(self._buffer) == 1:
            self._buffered_at = now
        if now - self._buffered_at < self.FLUSH_MS and len(self._buffer) < self.FLUSH_STEPS:
            return
        if self._ordered:
            self._pending.append(self._flush())
        elif not await self._flush():
            # Without ordered commits, wait for each flush so records land in order.
            self.lost = True
            raise _Interrupt()

    async def errored(self, step: str, name: str, error: dict[str, Any],
                      began: int | None = None, *, final: bool = False,
                      kind: str = "run", attempt: int | None = None) -> bool:
        """Record a failed ``attempt`` of a step (given by a driver that knows which attempt
        its call made); True when it was the last, and its error is now its result."""
        if self._buffer:
            self._pending.append(self._flush())
        if not await self.settled():
            raise _Interrupt()
        now = self.now()
        position = self._next_position()
        retries = -1 if final else self._fn.retries
        began = self._began.pop(step, now) if began is None else began
        if attempt is None:
            # The step's own count once it is being retried; for its first try, the run's
            # count at this position (Inngest's queue item attempt).
            attempt = self._failures.get(step, 0 if self.progressed else self._run.attempt)
        failed = attempt
        failures = await self._executor.storage.write(
            lambda tx: store.record_step_error(tx, self._run, step, name, position, error,
                                               retries, began, now, kind, failed))
        if failures is None:
            self.lost = True
            raise _Interrupt()
        telemetry.step_attempt(self._run, step=step, name=name, op=kind, attempt=failed,
                               began=began, now=now, error=error)
        last = failures > retries
        if last:
            self._failures.pop(step, None)  # its error is its result: no more attempts
            self.progressed = True
            if not final:
                telemetry.step_failed(self._run, self._fn, step, name, failures, error, None)
        else:
            due = now + self._executor.settings.backoff.delay(failures)
            self.retry = RetryStep(step, due, error)
            telemetry.step_failed(self._run, self._fn, step, name, failures, error, due)
        return last

    def block(self, blocker: Any) -> None:
        self.blockers.append(blocker)
        self.progressed = True

    async def send(self, events: list[dict[str, Any]], key: str) -> list[str]:
        return await self._executor.send(self._run, events, key)


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
        self._reserved = 0
        self._reserve_lock = threading.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        # Plain completions of this event-loop iteration, written together (``_complete``).
        self._batched = bool(getattr(self.storage, "ordered_writes", False))
        self._completing: list[store.Completion] | None = None
        self._completed: asyncio.Future[None] | None = None  # the write of that batch

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

    def adopt(self, calls: list[tuple[Run, EventRow]]) -> None:
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
        """Stop claiming; let calls in flight finish for ``grace`` seconds, then hand the rest
        back (their leases are released so another worker continues them at once)."""
        self._stopping = True
        self._wake.set()
        handed_back: list[tuple[str, int]] = []
        if self._inflight:
            _, pending = await asyncio.wait(list(self._inflight.values()), timeout=grace)
            handed_back = [(run_id, self._leases[run_id])
                           for run_id, task in self._inflight.items()
                           if task in pending and run_id in self._leases]
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        leases = [*self._leases.items(), *handed_back]
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
        return flow_admission.admit(tx, runs, now, self.registry, loaded)

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

        In a database outage (``storage/outage.py``) nothing is the run's fault and nothing can
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
            with contextlib.suppress(Exception):
                await self.storage.write(lambda tx: store.hand_back(tx, run, due))
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
                await self._settle(run, fn, event, events, RunFailed(error), [])
                return
        except Exception as again:
            if unavailable(again):
                return  # the lease expires, and the next call tries again
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
        host = _Host(self, run, fn_row, call.steps)
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
                           first=not call.steps)

    async def _function_row(self, function_id: str) -> FunctionRow | None:
        known = self.registry.by_id(function_id)
        if known is not None:
            return known
        return await self.storage.read(lambda tx: store.function_by_id(tx, function_id))

    async def _events(self, run: Run, rows: list[EventRow]
                      ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        loaded = []
        for row in rows:
            stored = await self.core.events.open(row)
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
                      records: list[StepRecord], *,
                      first: bool = False) -> None:
        """Record what a call did. ``first``: the run had no steps when the call began, so it
        cannot have pauses (every pause it ever made left a step when it ended)."""
        write = self.storage.write
        if records:
            def with_records(body: Callable[[Tx], Any]) -> Awaitable[Any]:
                def both(tx: Tx) -> Any:
                    if not store.record_steps(tx, run, records):
                        return None
                    return body(tx)
                return self.storage.write(both)

            write = with_records  # type: ignore[assignment]
        now = self.clock()
        # Ends record their steps themselves (``store.finish``): only flow control wraps them.
        end_write = self.storage.write
        flowing = fn.flow is not None and fn.flow.at_claim
        if flowing:
            write = flow_admission.after(write, run, fn, now)  # type: ignore[assignment]
            end_write = flow_admission.after(end_write, run, fn, now)  # type: ignore[assignment]
        emitted: list[str] = []
        due_now = False
        if isinstance(outcome, RunDone):
            if (self._batched and first and not flowing and not run.parent_run_id
                    and not self.registry.listens(run.env_id, "tidings/function.finished")):
                # The common end: nothing to emit, no pauses, no parent.
                await self._complete(store.Completion(run, outcome.output, records, now))
                await telemetry.run_ended(self.storage, run, fn, COMPLETED, now)
                return
            output = msgspec.json.decode(outcome.output)
            rows = self._lifecycle(run, fn, event, events, "finished", now, result=output)
            await end_write(lambda tx: self._end(tx, run, COMPLETED, output, None,
                                                 rows, now, records, first))
            await telemetry.run_ended(self.storage, run, fn, COMPLETED, now)
            emitted = [r.id for r in rows]
        elif isinstance(outcome, RunFailed):
            if outcome.retriable and run.attempt < fn.retries:
                at = (clamp_retry_after(outcome.retry_at, now) if outcome.retry_at
                      else now + self.settings.backoff.delay(run.attempt + 1))
                await write(lambda tx: store.reschedule(tx, run, due_at=at,
                                                        attempt=run.attempt + 1,
                                                        error=outcome.error))
                telemetry.settled(run, fn, outcome, at, now)
            else:
                reported = lifecycle(outcome.error, outcome.reason)
                rows = [*self._lifecycle(run, fn, event, events, "failed", now,
                                         error=reported),
                        *self._lifecycle(run, fn, event, events, "finished", now,
                                         error=reported)]
                await end_write(lambda tx: self._end(tx, run, FAILED, None,
                                                     outcome.error, rows, now, records, first))
                telemetry.settled(run, fn, outcome, None, now)
                await telemetry.run_ended(self.storage, run, fn, FAILED, now)
                emitted = [r.id for r in rows]
        elif isinstance(outcome, Continue):
            await write(lambda tx: store.reschedule(tx, run, due_at=now, attempt=run.attempt))
            due_now = True
        elif isinstance(outcome, RetryStep):
            at = outcome.retry_at if outcome.retry_at is not None else now
            await write(lambda tx: store.reschedule(tx, run, due_at=at, attempt=run.attempt,
                                                    error=outcome.error))
        elif isinstance(outcome, Blocked):
            plans = [await self._plan_invoke(run, fn, b, now) if isinstance(b, Invoke) else None
                     for b in outcome.blockers]
            due_now = await write(
                lambda tx: self._pause(tx, run, fn, event, outcome, plans, now))
            emitted = [p[0].id for p in plans if p is not None]
        if emitted:
            self._on_events(emitted)
        if due_now:
            self._on_due(self.queue)
            self.wake()

    async def _complete(self, completion: store.Completion) -> None:
        """Complete a run in the next write of this loop iteration's completions: one
        statement for all of them instead of a transaction step each."""
        if self._completing is None:
            self._completing = []
            self._completed = asyncio.ensure_future(self._write_completions(self._completing))
        self._completing.append(completion)
        assert self._completed is not None
        await asyncio.shield(self._completed)

    async def _write_completions(self, batch: list[store.Completion]) -> None:
        # A task starts on the next loop iteration: the batch holds this iteration's completions.
        self._completing = None
        await self.storage.write(lambda tx: store.complete_many(tx, batch))

    def _end(self, tx: Tx, run: Run, status: str, output: Any, error: Any,
             rows: list[EventRow], now: int,
             records: Sequence[StepRecord] = (),
             first: bool = False) -> None:
        if store.finish(tx, run, status=status, output=output, error=error, now=now,
                        records=records, paused=not first):
            for row in rows:
                store.insert_event(tx, row, delivered_at=None)
            if run.parent_run_id:
                tx.one("notify", ("*",))

    def _lifecycle(self, run: Run, fn: FunctionRow, event: dict[str, Any],
                   events: list[dict[str, Any]], kind: str, now: int, *,
                   result: Any = None, error: Any = None) -> list[EventRow]:
        name = f"tidings/function.{kind}"
        if not self.registry.listens(run.env_id, name):
            return []
        # The trigger's ``user`` is left out: it is only ever stored sealed. Its ``meta`` is
        # kept, on the lifecycle event too: the runs it starts share the trigger's sessions.
        data: dict[str, Any] = {"function_id": fn.slug, "run_id": run.id,
                                "event": _without_user(event),
                                "events": [_without_user(e) for e in events]}
        if error is not None:
            data["error"] = error
        else:
            data["result"] = result
        meta = event.get("meta")
        return [EventRow(id=new_id(now), env_id=run.env_id, name=name,
                         data=msgspec.json.encode(data), user=None, user_subject=None, key=None,
                         ts=now, v=None, source="tidings", context=None, account_id=None,
                         received_at=now, deliver_at=None,
                         meta=None if meta is None else msgspec.json.encode(meta))]

    async def _plan_invoke(self, run: Run, fn: FunctionRow, blocker: Invoke,
                           now: int) -> tuple[EventRow, str] | None:
        target = self.registry.function(run.env_id, blocker.function)
        if target is None:
            return None
        event_id = new_id(now)
        user, subject = await self.core.vault.seal(run.env_id, event_id, blocker.user or {})
        # What Inngest's executor puts in an invocation event (``event.InngestMetadata``);
        # Tidings has no run groups (``gid``) nor function versions (``source_fn_v``).
        data = {**blocker.data, INTERNAL_DATA_KEY: {
            "fn_id": blocker.function, "correlation_id": f"{run.id}.{blocker.step}",
            "expire": blocker.until, "gid": "", "name": blocker.name,
            "source_app_id": fn.app_id, "source_fn_id": fn.id, "source_fn_v": 0}}
        row = EventRow(id=event_id, env_id=run.env_id, name="tidings/function.invoked",
                       data=msgspec.json.encode(data), user=user, user_subject=subject,
                       key=None, ts=now, v=None, source="tidings", context=None,
                       account_id=None, received_at=now, deliver_at=None,
                       meta=None if blocker.meta is None else msgspec.json.encode(blocker.meta))
        return row, target.id

    def _pause(self, tx: Tx, run: Run, fn: FunctionRow, event: dict[str, Any],
               outcome: Blocked, plans: list[tuple[EventRow, str] | None], now: int) -> bool:
        if store.leased_status(tx, run.id, run.lease_token) is None:
            return False
        since = floor_id(run.progress_at)
        for blocker, plan in zip(outcome.blockers, plans, strict=True):
            if isinstance(blocker, Sleep):
                store.pause(tx, run, step=blocker.step, name=blocker.name, kind="sleep",
                            until=blocker.until)
            elif isinstance(blocker, WaitForEvent):
                store.pause(tx, run, step=blocker.step, name=blocker.name, kind="wait",
                            until=blocker.until, event_name=blocker.event,
                            condition=blocker.condition, trigger_event=dumps(event),
                            since_id=since)
                look_back(tx, run.env_id, run.id, blocker.step, blocker.name, blocker.event,
                          blocker.condition, event, since, now)
            elif isinstance(blocker, Invoke):
                if plan is None:
                    store.pause(tx, run, step=blocker.step, name=blocker.name, kind="invoke",
                                until=blocker.until)
                    # Inngest's words (``runner.FindInvokedFunction``), which SDK tests match.
                    store.resolve_pause(tx, run.id, blocker.step, blocker.name, {"error": {
                        "name": "Error",
                        "message": f"could not find function with ID: {blocker.function}"}},
                        now, kind="invoke", failed=True)
                    continue
                row, target_id = plan
                store.insert_event(tx, row, delivered_at=now)
                target = store.function_by_id(tx, target_id)
                assert target is not None
                refused = flow_routing.refuses_invoke(tx, target, row, run.id, blocker.step, now)
                if refused is not None:
                    store.pause(tx, run, step=blocker.step, name=blocker.name, kind="invoke",
                                until=blocker.until)
                    store.resolve_pause(tx, run.id, blocker.step, blocker.name, {"error": {
                        "name": "RateLimited", "message": refused}}, now, kind="invoke",
                        failed=True)
                    continue
                child = store.create_run(tx, fn=target, event_id=row.id, due_at=now, now=now,
                                         dedup_key=f"invoke:{run.id}:{blocker.step}",
                                         parent_run_id=run.id, parent_step=blocker.step)
                if child is None:  # started by an earlier call that did not get to record it
                    found = tx.one("run_for_dedup", (target.id, f"invoke:{run.id}:{blocker.step}"))
                    child = found[0] if found else None
                else:
                    metrics.scheduled(target.app_id, target.slug, "invoke")
                    tx.one("notify", (target.queue,))
                store.pause(tx, run, step=blocker.step, name=blocker.name, kind="invoke",
                            until=blocker.until, correlation=child)
        store.park(tx, run, now)
        again = store.get_run(tx, run.id)
        return again is not None and again.due_at is not None and again.due_at <= now

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
