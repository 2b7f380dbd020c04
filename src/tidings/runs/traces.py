"""A run's span once it ended (``observe/tracing.py``): what the database keeps of it — its
events' creation context, its pauses — read in the transaction given, then recorded. Used by
the engine when a run completes or fails, and by the cancellations, wherever they happen."""

from __future__ import annotations

from tidings.observe import tracing
from tidings.runs import journal
from tidings.runs.model import Run, StepRow
from tidings.storage.tx import Tx


def record(tx: Tx, run: Run, *, function: str, app: str, status: str, now: int) -> None:
    """Record ``run``'s span (ended with ``status`` at ``now``) when tracing is on."""
    if not tracing.on():
        return
    began = run.started_at if run.started_at is not None else run.created_at
    event_ids = run.event_ids or [run.event_id]
    found = [tx.one("event_traceparent", (event_id,)) for event_id in event_ids]
    traceparents = [row[0] for row in found if row is not None and row[0]]
    tracing.run_span(run.id, function=function, app=app, status=status, started_at=began,
                     ended_at=now, attempt=run.attempt, event_ids=event_ids,
                     traceparents=traceparents, pauses=pauses(journal.steps_of(tx, run.id),
                                                              began))


def pauses(steps: list[StepRow], began: int) -> list[tracing.Pause]:
    """The sleeps, waits and invocations of a run, each from the end of the step before it
    (the call that reached the pause ended then, within milliseconds: the pause's own start
    is not kept) to its resumption."""
    found, last_end = [], began
    for s in sorted(steps, key=lambda s: s.position):
        if s.kind in ("sleep", "wait", "invoke") and s.ended_at is not None:
            found.append(tracing.Pause(step=s.step, name=s.name, kind=s.kind,
                                       started_at=last_end, ended_at=s.ended_at))
        if s.ended_at is not None:
            last_end = max(last_end, s.ended_at)
    return found
