"""The engine's side of one call: what the SDK's step tools and the HTTP driver ask of it
(memoized steps, recording a step's result or error, blocking on sleeps, waits and
invocations, sending events).

Finished steps are buffered and written together rather than committed one by one: see
``CallHost``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from tidings.calls.host import Interrupt
from tidings.calls.outcomes import RetryStep
from tidings.engine import telemetry
from tidings.engine.backoff import Backoff
from tidings.functions.model import FunctionRow
from tidings.runs import journal
from tidings.runs.model import Run, StepRecord, StepRow
from tidings.storage.base import Storage

# Store events sent from a step of the run (``Executor.send``): their ids.
Send = Callable[[Run, list[dict[str, Any]], str], Awaitable[list[str]]]


class CallHost:
    """The engine's side of one call: the ``calls.host.Host`` of the SDK's step tools and the
    drivers.

    Finished steps are buffered and written together — with the call's outcome when the call
    ends soon, else every ``FLUSH_MS`` or ``FLUSH_STEPS`` — instead of one commit per step. A
    step is then recorded at least once and, once recorded, never runs again, which is all a
    replay relies on. Where the database commits writes in the order they are made (SQLite's
    single writer) the function goes on while a flush commits; elsewhere it waits for each
    flush, so records still land in order.
    """

    FLUSH_MS = 20
    FLUSH_STEPS = 256

    def __init__(self, *, storage: Storage, clock: Callable[[], int], backoff: Backoff,
                 send: Send, ordered: bool, run: Run, fn: FunctionRow,
                 steps: list[StepRow]) -> None:
        self._storage = storage
        self._clock = clock
        self._backoff = backoff
        self._send = send
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
        self._ordered = ordered
        self._timer: asyncio.TimerHandle | None = None

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
        if self._timer is not None:
            self._timer.cancel()  # whoever settles writes (or takes) the buffer itself
            self._timer = None
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

    def flush_soon(self) -> None:
        """Write the buffered steps within ``FLUSH_MS`` even if no other step ends meanwhile.
        A driver calls this before a request that may run long (the next step of an SDK
        app): steps its app reported are then recorded while that request runs, and a
        process killed during it does not lose them (their steps would run again)."""
        if self._buffer and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.FLUSH_MS / 1000,
                                                                self._flush_due)

    def _flush_due(self) -> None:
        self._timer = None
        if self._buffer and not self.lost:
            self._pending.append(self._flush())

    def memo(self, step: str) -> tuple[bool, Any]:
        row = self._memo.get(step)
        if row is None:
            self._began[step] = self.now()  # the step is new: it starts now
            return False, None
        return True, row.output

    def now(self) -> int:
        return self._clock()

    def _next_position(self) -> int:
        self._position += 1
        return self._position - 1

    def _flush(self) -> asyncio.Future[bool]:
        records = self.take_buffer()
        run = self._run
        return asyncio.ensure_future(self._storage.write(
            lambda tx: journal.record_steps(tx, run, records)))

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
        elif not await self.settled() or not await self._flush():
            # Without ordered commits, wait for each flush so records land in order.
            self.lost = True
            raise Interrupt()

    async def errored(self, step: str, name: str, error: dict[str, Any],
                      began: int | None = None, *, final: bool = False,
                      kind: str = "run", attempt: int | None = None) -> bool:
        """Record a failed ``attempt`` of a step (given by a driver that knows which attempt
        its call made); True when it was the last, and its error is now its result."""
        if self._buffer:
            self._pending.append(self._flush())
        if not await self.settled():
            raise Interrupt()
        now = self.now()
        position = self._next_position()
        retries = -1 if final else self._fn.retries
        began = self._began.pop(step, now) if began is None else began
        if attempt is None:
            # The step's own count once it is being retried; for its first try, the run's
            # count at this position (Inngest's queue item attempt).
            attempt = self._failures.get(step, 0 if self.progressed else self._run.attempt)
        failed = attempt
        failures = await self._storage.write(
            lambda tx: journal.record_step_error(tx, self._run, step, name, position, error,
                                               retries, began, now, kind, failed))
        if failures is None:
            self.lost = True
            raise Interrupt()
        telemetry.step_attempt(self._run, step=step, name=name, op=kind, attempt=failed,
                               began=began, now=now, error=error)
        last = failures > retries
        if last:
            self._failures.pop(step, None)  # its error is its result: no more attempts
            self.progressed = True
            if not final:
                telemetry.step_failed(self._run, self._fn, step, name, failures, error, None)
        else:
            due = now + self._backoff.delay(failures)
            # The failed attempt's error shows on the run until the step is tried again.
            self.retry = RetryStep(step, due, error)
            telemetry.step_failed(self._run, self._fn, step, name, failures, error, due)
        return last

    def block(self, blocker: Any) -> None:
        self.blockers.append(blocker)
        self.progressed = True

    async def send(self, events: list[dict[str, Any]], key: str) -> list[str]:
        return await self._send(self._run, events, key)
