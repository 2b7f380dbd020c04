"""Settling a call: what a function's call ended in (an ``Outcome``) becomes state in one
transaction, with the steps the call recorded last and, for a function under flow control,
``flow.at_claim.after_call``.

The outcome decides the body: a run's end (its lifecycle events stored with it), a retry at
its backoff, a call again now, or pauses (sleeps, waits with their look-back, invocations with
their child runs). Plain completions — the common end — are written together, one statement
for every completion of an event-loop iteration, where the database commits in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from tidings.calls.error_records import lifecycle
from tidings.calls.outcomes import (
    Blocked,
    Continue,
    Invoke,
    Outcome,
    RetryStep,
    RunDone,
    RunFailed,
    Sleep,
    WaitForEvent,
)
from tidings.engine import telemetry
from tidings.engine.backoff import Backoff, clamp_retry_after
from tidings.events.parse import INTERNAL_DATA_KEY
from tidings.flow import at_claim, at_route
from tidings.functions import registration
from tidings.functions.model import FunctionRow, dumps
from tidings.functions.registry import Registry
from tidings.ids import floor_id, new_id
from tidings.observe import metrics
from tidings.router.route import look_back
from tidings.runs import journal, store
from tidings.runs.model import COMPLETED, FAILED, Run, StepRecord
from tidings.storage.base import EventRow, Storage, internal_event
from tidings.storage.tx import Tx
from tidings.vault import UserVault

Invocation = tuple[EventRow, str]  # the ``function.invoked`` event, and the target's id


@dataclass(frozen=True, slots=True, kw_only=True)
class Settled:
    """What the executor does next: route ``emitted`` events, and call its queue again now
    when ``due_now``."""

    emitted: list[str]
    due_now: bool = False


class Settler:
    def __init__(self, storage: Storage, registry: Registry, vault: UserVault, *,
                 clock: Callable[[], int], backoff: Backoff, batched: bool) -> None:
        self.storage = storage
        self.registry = registry
        self.vault = vault
        self.clock = clock
        self.backoff = backoff
        # Plain completions of this event-loop iteration, written together (``_complete``).
        self._batched = batched
        self._completing: list[store.Completion] | None = None
        self._completed: asyncio.Future[None] | None = None  # the write of that batch

    async def settle(self, run: Run, fn: FunctionRow, event: dict[str, Any],
                     events: list[dict[str, Any]], outcome: Outcome,
                     records: list[StepRecord], *, call: store.Claimed,
                     first: bool = False) -> Settled:
        """Record what a call did; ``call`` is what it began with (its event rows and the
        run's steps so far: a run's span is recorded from them when it ends). ``first``: the
        run had no steps when the call began, so it cannot have pauses (every pause it ever
        made left a step when it ended)."""
        now = self.clock()
        flowing = fn.flow is not None and fn.flow.at_claim

        async def write(body: Callable[[Tx], Any], *, steps: Sequence[StepRecord] = records
                        ) -> Any:
            return await self.storage.write(_composed(body, run, fn, now, steps, flowing))

        if isinstance(outcome, RunDone):
            if (self._batched and first and not flowing and not run.parent_run_id
                    and not self.registry.listens(run.env_id, "tidings/function.finished")):
                # The common end: nothing to emit, no pauses, no parent.
                await self._complete(store.Completion(run, outcome.output, records, now))
                telemetry.run_ended(run, fn, COMPLETED, now, call)
                return Settled(emitted=[])
            output = msgspec.json.decode(outcome.output)
            rows = self._lifecycle(run, fn, event, events, "finished", now, result=output)
            # Ends record their steps themselves (``store.finish``).
            await write(lambda tx: _end(tx, run, COMPLETED, output, None, rows, now, records,
                                        first), steps=())
            telemetry.run_ended(run, fn, COMPLETED, now, call)
            return Settled(emitted=[r.id for r in rows])
        if isinstance(outcome, RunFailed):
            if outcome.retriable and run.attempt < fn.retries:
                at = (clamp_retry_after(outcome.retry_at, now) if outcome.retry_at
                      else now + self.backoff.delay(run.attempt + 1))
                await write(lambda tx: store.reschedule(tx, run, due_at=at,
                                                        attempt=run.attempt + 1,
                                                        error=outcome.error))
                telemetry.settled(run, fn, outcome, at, now)
                return Settled(emitted=[])
            reported = lifecycle(outcome.error, outcome.reason)
            rows = [*self._lifecycle(run, fn, event, events, "failed", now, error=reported),
                    *self._lifecycle(run, fn, event, events, "finished", now, error=reported)]
            await write(lambda tx: _end(tx, run, FAILED, None, outcome.error, rows, now,
                                        records, first), steps=())
            telemetry.settled(run, fn, outcome, None, now)
            telemetry.run_ended(run, fn, FAILED, now, call)
            return Settled(emitted=[r.id for r in rows])
        if isinstance(outcome, Continue):
            await write(lambda tx: store.reschedule(tx, run, due_at=now, attempt=run.attempt))
            return Settled(emitted=[], due_now=True)
        if isinstance(outcome, RetryStep):
            at = outcome.retry_at if outcome.retry_at is not None else now
            await write(lambda tx: store.reschedule(tx, run, due_at=at, attempt=run.attempt,
                                                    error=outcome.error))
            return Settled(emitted=[])
        assert isinstance(outcome, Blocked)
        plans = [await self._plan_invoke(run, fn, b, now) if isinstance(b, Invoke) else None
                 for b in outcome.blockers]
        due_now = await write(lambda tx: _pause(tx, run, event, outcome, plans, now))
        return Settled(emitted=[p[0].id for p in plans if p is not None], due_now=bool(due_now))

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
        return [internal_event(event_id=new_id(now), env_id=run.env_id, name=name, data=data,
                               ts=now, received_at=now,
                               meta=None if meta is None else msgspec.json.encode(meta))]

    async def _plan_invoke(self, run: Run, fn: FunctionRow, blocker: Invoke,
                           now: int) -> Invocation | None:
        target = self.registry.function(run.env_id, blocker.function)
        if target is None:
            return None
        event_id = new_id(now)
        user, subject = await self.vault.seal(run.env_id, event_id, blocker.user or {})
        # What Inngest's executor puts in an invocation event (``event.InngestMetadata``);
        # Tidings has no run groups (``gid``) nor function versions (``source_fn_v``).
        data = {**blocker.data, INTERNAL_DATA_KEY: {
            "fn_id": blocker.function, "correlation_id": f"{run.id}.{blocker.step}",
            "expire": blocker.until, "gid": "", "name": blocker.name,
            "source_app_id": fn.app_id, "source_fn_id": fn.id, "source_fn_v": 0}}
        row = internal_event(
            event_id=event_id, env_id=run.env_id, name="tidings/function.invoked", data=data,
            ts=now, received_at=now, user=user, user_subject=subject,
            meta=None if blocker.meta is None else msgspec.json.encode(blocker.meta))
        return row, target.id


def _composed(body: Callable[[Tx], Any], run: Run, fn: FunctionRow, now: int,
              records: Sequence[StepRecord], flowing: bool) -> Callable[[Tx], Any]:
    """One transaction: the call's last steps (nothing else when they find the lease lost),
    the outcome's ``body``, then flow control's ``after_call``."""

    def settle(tx: Tx) -> Any:
        result = None
        if not records or journal.record_steps(tx, run, records):
            result = body(tx)
        if flowing:
            at_claim.after_call(tx, run, fn, now)
        return result

    return settle


def _without_user(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "user"}


def _end(tx: Tx, run: Run, status: str, output: Any, error: Any, rows: list[EventRow],
         now: int, records: Sequence[StepRecord] = (), first: bool = False) -> None:
    if store.finish(tx, run, status=status, output=output, error=error, now=now,
                    records=records, paused=not first):
        for row in rows:
            store.insert_event(tx, row, delivered_at=None)
        if run.parent_run_id:
            store.notify(tx, store.ALL_QUEUES)


def _pause(tx: Tx, run: Run, event: dict[str, Any], outcome: Blocked,
           plans: list[Invocation | None], now: int) -> bool:
    if journal.leased_status(tx, run.id, run.lease_token) is None:
        return False
    since = floor_id(run.progress_at)
    for blocker, plan in zip(outcome.blockers, plans, strict=True):
        if isinstance(blocker, Sleep):
            journal.pause(tx, run, step=blocker.step, name=blocker.name, kind="sleep",
                        until=blocker.until)
        elif isinstance(blocker, WaitForEvent):
            # Without ``user``, which is only ever stored sealed; the router's expressions
            # never see it either.
            trigger = _without_user(event)
            journal.pause(tx, run, step=blocker.step, name=blocker.name, kind="wait",
                        until=blocker.until, event_name=blocker.event,
                        condition=blocker.condition, trigger_event=dumps(trigger),
                        since_id=since)
            look_back(tx, run.env_id, run.id, blocker.step, blocker.name, blocker.event,
                      blocker.condition, trigger, since, now)
        elif isinstance(blocker, Invoke):
            _invoke(tx, run, blocker, plan, now)
    store.park(tx, run, now)
    again = store.get_run(tx, run.id)
    return again is not None and again.due_at is not None and again.due_at <= now


def _invoke(tx: Tx, run: Run, blocker: Invoke, plan: Invocation | None, now: int) -> None:
    if plan is None:
        journal.pause(tx, run, step=blocker.step, name=blocker.name, kind="invoke",
                    until=blocker.until)
        # Inngest's words (``runner.FindInvokedFunction``), which SDK tests match.
        journal.resolve_pause(tx, run.id, blocker.step, blocker.name, {"error": {
            "name": "Error",
            "message": f"could not find function with ID: {blocker.function}"}},
            now, kind="invoke", failed=True, env_id=run.env_id)
        return
    row, target_id = plan
    store.insert_event(tx, row, delivered_at=now)
    target = registration.function_by_id(tx, target_id)
    assert target is not None
    refused = at_route.refuses_invoke(tx, target, row, run.id, blocker.step, now)
    if refused is not None:
        journal.pause(tx, run, step=blocker.step, name=blocker.name, kind="invoke",
                    until=blocker.until)
        journal.resolve_pause(tx, run.id, blocker.step, blocker.name, {"error": {
            "name": "RateLimited", "message": refused}}, now, kind="invoke", failed=True,
            env_id=run.env_id)
        return
    key = f"invoke:{run.id}:{blocker.step}"
    child = store.create_run(tx, fn=target, event_id=row.id, due_at=now, now=now,
                             dedup_key=key, parent_run_id=run.id, parent_step=blocker.step)
    if child is None:  # started by an earlier call that did not get to record it
        child = store.run_for_dedup(tx, target.id, key)
    else:
        metrics.scheduled(target.app_id, target.slug, "invoke")
        store.notify(tx, target.queue)
    journal.pause(tx, run, step=blocker.step, name=blocker.name, kind="invoke",
                until=blocker.until, correlation=child)
