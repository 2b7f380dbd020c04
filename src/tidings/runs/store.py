"""The run queue's transactions, written once for both databases (functions of a ``Tx``):
creating runs, claiming and leasing them, handing them back, ending them.

Every write that follows a lease checks the lease token first: a worker whose lease expired (it
was presumed dead and the run was claimed again) cannot record anything afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from tidings.events.env_settings import ENV_SETTINGS, sealed_json
from tidings.functions.model import FunctionRow, dumps, loads
from tidings.ids import new_id
from tidings.runs import journal, slots
from tidings.runs.model import (
    CANCELLED,
    COMPLETED,
    RUNNING,
    SLEEPING,
    WAITING,
    Run,
    StepRecord,
    StepRow,
)
from tidings.sealing import RUN_AAD, SEALS, context_aad, event_aad, meta_aad
from tidings.storage.base import EventRow, event_from_row
from tidings.storage.tx import Tx

# -- runs ------------------------------------------------------------------------------------

def run_params(*, fn: FunctionRow, event_id: str, due_at: int, now: int,
               event_ids: list[str] | None = None, dedup_key: str | None = None,
               parent_run_id: str | None = None, parent_step: str | None = None,
               rerun_of: str | None = None, replay_id: str | None = None,
               run_id: str | None = None) -> tuple[Any, ...]:
    return (run_id or new_id(now), fn.env_id, fn.id, fn.queue, event_id,
            dumps(event_ids) if event_ids is not None else None, dedup_key or event_id, due_at,
            now, now, parent_run_id, parent_step, rerun_of, replay_id)


def adopted_run(params: tuple[Any, ...], owner: str, lease_until: int, now: int) -> Run:
    """The run ``insert_run_leased`` stores for ``run_params``, as a value."""
    (run_id, env_id, function_id, queue, event_id, event_ids, _, due_at, created_at,
     progress_at, parent_run_id, parent_step, rerun_of, replay_id) = params
    return Run(id=run_id, env_id=env_id, function_id=function_id, queue=queue,
               event_id=event_id, event_ids=None if event_ids is None else loads(event_ids),
               status=RUNNING, attempt=0, due_at=due_at, lease_owner=owner,
               lease_until=lease_until, lease_token=1, created_at=created_at, started_at=now,
               ended_at=None, progress_at=progress_at, output=None, error=None,
               parent_run_id=parent_run_id, parent_step=parent_step, rerun_of=rerun_of,
               replay_id=replay_id)


def create_run(tx: Tx, *, fn: FunctionRow, event_id: str, due_at: int, now: int,
               event_ids: list[str] | None = None, dedup_key: str | None = None,
               parent_run_id: str | None = None, parent_step: str | None = None,
               rerun_of: str | None = None, replay_id: str | None = None) -> str | None:
    """A new queued run, or None when this function already has a run for that key."""
    run_id = new_id(now)
    created = tx.run("insert_run", (
        run_id, fn.env_id, fn.id, fn.queue, event_id,
        dumps(event_ids) if event_ids is not None else None, dedup_key or event_id, due_at,
        now, now, parent_run_id, parent_step, rerun_of, replay_id))
    return run_id if created else None


def get_run(tx: Tx, run_id: str) -> Run | None:
    row = tx.one("run_by_id", (run_id,))
    return Run.from_row(row) if row else None


def claim(tx: Tx, queue: str, owner: str, now: int, lease_ms: int, limit: int) -> list[Run]:
    rows = tx.all("claim_runs", (owner, now + lease_ms, now, queue, now, now, limit))
    return [Run.from_row(r) for r in rows]


@dataclass(frozen=True, slots=True)
class Claimed:
    """A leased run with what its next call needs: recorded steps and trigger events."""

    run: Run
    steps: list[StepRow]
    events: list[EventRow]


Admit = Callable[[Tx, list[Run], int, dict[str, EventRow]], list[Run]]


def claim_calls(tx: Tx, queue: str, owner: str, now: int, lease_ms: int,
                limit: int, admit: Admit | None = None) -> list[Claimed]:
    """Lease due runs and open their calls in the same transaction. ``admit`` (flow control)
    may give some back before anyone sees them leased (and leaves the events it read)."""
    claimed = []
    runs = claim(tx, queue, owner, now, lease_ms, limit)
    loaded: dict[str, EventRow] = {}
    if admit is not None and runs:
        runs = admit(tx, runs, now, loaded)
    for run in runs:
        # A run started by this very claim has neither steps nor pauses: skip looking. A rerun
        # may have steps already (rerun from a step: ``admin.rerun``), so it looks.
        fresh = run.started_at == now and run.rerun_of is None
        steps = [] if fresh else journal.open_call(tx, run, now)
        if steps is None:
            continue
        claimed.append(Claimed(run, steps, []))
    wanted = {i for c in claimed for i in (c.run.event_ids or [c.run.event_id])}
    wanted.difference_update(loaded)
    rows = {r.id: r for r in event_rows(tx, sorted(wanted))} if wanted else {}
    rows.update(loaded)
    return [Claimed(c.run, c.steps, [rows[i] for i in (c.run.event_ids or [c.run.event_id])
                                     if i in rows]) for c in claimed]


def event_rows(tx: Tx, ids: Sequence[str]) -> list[EventRow]:
    return [event_from_row(r) for r in tx.all("event_rows", (tx.ids(ids),))]


def event_row(tx: Tx, event_id: str) -> EventRow | None:
    r = tx.one("event_row", (event_id,))
    return None if r is None else event_from_row(r)


ALL_QUEUES = "*"  # what ``notify`` names to wake the executors of every queue


def notify(tx: Tx, queue: str) -> None:
    """Tell the executors of ``queue`` (of every process: ``NOTIFY`` on PostgreSQL, at commit)
    that runs are due; ``ALL_QUEUES`` tells every executor."""
    tx.one("notify", (queue,))


def run_for_dedup(tx: Tx, function_id: str, dedup_key: str) -> str | None:
    """The id of the run of that function created with that key, if any."""
    row = tx.one("run_for_dedup", (function_id, dedup_key))
    return str(row[0]) if row else None


def next_due(tx: Tx, queue: str) -> int | None:
    row = tx.one("next_due", (queue,))
    return int(row[0]) if row and row[0] is not None else None


def renew(tx: Tx, leases: Sequence[tuple[str, int]], until: int) -> None:
    tx.many("renew_lease", [(until, run_id, token) for run_id, token in leases])


def release(tx: Tx, run_id: str, token: int) -> None:
    tx.run("release_lease", (run_id, token))


def release_orphans(tx: Tx, queue: str, owner: str, before: int, driving: set[str]) -> int:
    """Free the leases ``owner`` took on ``queue`` that expire before ``before``, except on the
    runs it is ``driving``; how many were freed."""
    freed = 0
    for run_id, token in tx.all("leases_of_owner", (queue, owner, before)):
        if run_id not in driving:
            freed += tx.run("release_lease", (run_id, token))
    return freed


def reschedule(tx: Tx, run: Run, *, due_at: int, attempt: int, status: str = RUNNING,
               error: Any = None) -> bool:
    """Hand the run back to the queue, due at ``due_at``. ``error``: the attempt that just
    failed, shown on the run until its next call goes on or it ends."""
    return tx.run("reschedule_run", (status, attempt, due_at,
                                     sealed_error(tx, run.env_id, error), run.id,
                                     run.lease_token)) > 0


def hand_back(tx: Tx, run: Run, due_at: int) -> bool:
    """Free the run's lease without counting an attempt; due no sooner than ``due_at``."""
    return tx.run("hand_back_run", (due_at, due_at, run.id, run.lease_token)) > 0


def sealed_error(tx: Tx, env_id: str, error: Any) -> str | None:
    """A run's error as its ``error`` column stores it: sealed when ``env_id`` seals (errors
    often quote what the run was given)."""
    return None if error is None else sealed_json(tx, env_id, dumps(error), RUN_AAD)


def finish(tx: Tx, run: Run, *, status: str, output: Any, error: Any, now: int,
           records: Sequence[StepRecord] = (), paused: bool = True) -> bool:
    """End a run (Completed or Failed) with the steps its last call finished (``records``, as
    in ``record_steps``), and settle an invoking parent; False when the lease is lost (nothing
    written). ``paused=False`` says the run cannot have pauses left to remove."""
    done = tx.run("finish_run", (status, sealed_json(tx, run.env_id, dumps(output), RUN_AAD)
                                 if status == COMPLETED else None,
                                 sealed_error(tx, run.env_id, error), now, run.id,
                                 run.lease_token)) > 0
    if not done:
        return False
    if records:
        tx.many("insert_step", journal.completed_steps(tx, run, records))
    if paused:
        tx.run("delete_pauses_of_run", (run.id,))
    if run.parent_run_id:
        journal.settle_parent(tx, run.id, status, output, error, now)
    return True


@dataclass(frozen=True, slots=True)
class Completion:
    """A run that completed in its first call: no pauses, no parent, nothing to emit."""

    run: Run
    output: bytes  # JSON
    records: Sequence[StepRecord]
    now: int


def complete_many(tx: Tx, batch: Sequence[Completion]) -> None:
    """Complete runs with one ``finish_run`` and one ``insert_step`` statement for the lot
    (``finish`` for each, without pauses or a parent to settle); a run whose lease was lost is
    left as it is, its steps unrecorded."""
    updated = tx.many_count("finish_run", [
        (COMPLETED, sealed_json(tx, c.run.env_id, c.output.decode(), RUN_AAD), None, c.now,
         c.run.id, c.run.lease_token) for c in batch])
    if updated < len(batch):
        # Some leases were lost: the UPDATE left those runs alone, and the runs it did complete
        # are the ones whose lease token still matches.
        batch = [c for c in batch
                 if journal.leased_status(tx, c.run.id, c.run.lease_token) is not None]
    tx.many("insert_step",
            [row for c in batch for row in journal.completed_steps(tx, c.run, c.records)])


def cancel(tx: Tx, run_id: str, reason: str, now: int) -> bool:
    """Cancel a run that has not ended (fenced: a call in flight cannot overwrite it)."""
    return cancel_fenced(tx, run_id, reason, now)


def park(tx: Tx, run: Run, now: int) -> bool:
    """After pauses are recorded: sleep until the earliest one ends (or run now if one was
    already resolved)."""
    row = tx.one("min_pause_until", (run.id,))
    earliest = row[0] if row else None
    kinds = {r[2] for r in tx.all("pauses_of_run", (run.id,))}
    if earliest is None:
        return reschedule(tx, run, due_at=now, attempt=run.attempt)
    status = SLEEPING if kinds == {"sleep"} else WAITING
    return reschedule(tx, run, due_at=int(earliest), attempt=run.attempt, status=status)


def insert_event(tx: Tx, row: EventRow, *, delivered_at: int | None) -> None:
    """Store an event made here (a lifecycle event, an invocation's): its data sealed when its
    environment seals (``sealing.py``)."""
    data, context, meta = row.data, row.context, row.meta
    generation = ENV_SETTINGS.generation(tx, row.env_id)
    if generation is not None:
        seal = partial(SEALS.seal_json, row.env_id, generation, tx=tx)
        data = seal(data, event_aad(row.id))
        if context is not None:
            context = seal(context, context_aad(row.id))
        if meta is not None:
            meta = seal(meta, meta_aad(row.id))
    tx.run("insert_event", (
        row.id, row.env_id, row.name, tx.json(data), row.user, row.user_subject,
        row.key, row.ts, row.v, row.source, tx.json(context), row.account_id,
        row.received_at, row.deliver_at, delivered_at, tx.json(meta)))


def cancel_fenced(tx: Tx, run_id: str, reason: str, now: int,
                  emit: Sequence[EventRow] = ()) -> bool:
    """Cancel a run that has not ended and store ``emit`` (its lifecycle events) with it; False
    when it had already ended.

    Unlike ``cancel``, the run's lease token moves on: a call in flight when the run is cancelled
    cannot record its steps, its end or its retry afterwards (which would bring the run back).
    """
    run = get_run(tx, run_id)
    error = {"name": "Cancelled", "message": reason}
    if run is None or tx.run("cancel_run_fenced", (sealed_error(tx, run.env_id, error), now,
                                                   run_id)) == 0:
        return False
    tx.run("delete_pauses_of_run", (run_id,))
    # Flow control: free its concurrency slots at once (waking a waiter), drop the rest.
    slots.release(tx, run_id, now)
    slots.ended(tx, run_id)
    journal.settle_parent(tx, run_id, CANCELLED, None, error, now)
    for row in emit:
        insert_event(tx, row, delivered_at=None)
    if run.parent_run_id:
        notify(tx, ALL_QUEUES)
    return True
