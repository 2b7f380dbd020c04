"""A run's span once it ended (``observe/tracing.py``): its events' creation context and its
pauses. Recorded by the engine when a run completes or fails, from what its last call had
(``ended``), and by the cancellations, wherever they happen, from what the cancelling
transaction reads (``record``), once it has committed."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from tidings.observe import tracing
from tidings.runs import journal
from tidings.runs.model import Run, StepRow
from tidings.storage.base import EventRow
from tidings.storage.tx import Tx

PAUSES = ("sleep", "wait", "invoke")


def record(tx: Tx, run: Run, *, function: str, app: str, status: str, now: int) -> None:
    """Record ``run``'s span (ended with ``status`` at ``now``) once ``tx`` commits, when
    tracing is on; what it needs is read in ``tx``."""
    if not tracing.on():
        return
    event_ids = run.event_ids or [run.event_id]
    found = [tx.one("event_traceparent", (event_id,)) for event_id in event_ids]
    tx.after_commit(partial(_record, run, function, app, status, now,
                            [row[0] for row in found if row is not None and row[0]],
                            journal.steps_of(tx, run.id)))


def ended(run: Run, *, function: str, app: str, status: str, now: int,
          events: Sequence[EventRow], steps: Sequence[StepRow]) -> None:
    """Record ``run``'s span (ended with ``status`` at ``now``) from its events and the steps
    its last call began with (a pause ends before the call that resumes it)."""
    if tracing.on():
        _record(run, function, app, status, now,
                [e.traceparent for e in events if e.traceparent], steps)


def _record(run: Run, function: str, app: str, status: str, now: int,
            traceparents: list[str], steps: Sequence[StepRow]) -> None:
    began = run.started_at if run.started_at is not None else run.created_at
    tracing.run_span(run.id, function=function, app=app, status=status, started_at=began,
                     ended_at=now, attempt=run.attempt, event_ids=run.event_ids or [run.event_id],
                     traceparents=traceparents, pauses=pauses(steps, began))


def pauses(steps: Sequence[StepRow], began: int) -> list[tracing.Pause]:
    """The sleeps, waits and invocations of a run, each from the end of the step before it
    (the call that reached the pause ended then, within milliseconds: the pause's own start
    is not kept) to its resumption."""
    for s in steps:
        if s.kind in PAUSES:
            break
    else:
        return []  # most runs: no pause, nothing to sort
    found, last_end = [], began
    for s in sorted(steps, key=lambda s: s.position):
        if s.kind in PAUSES and s.ended_at is not None:
            found.append(tracing.Pause(step=s.step, name=s.name, kind=s.kind,
                                       started_at=last_end, ended_at=s.ended_at))
        if s.ended_at is not None:
            last_end = max(last_end, s.ended_at)
    return found
