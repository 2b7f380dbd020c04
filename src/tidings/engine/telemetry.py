"""What the engine reports about runs as it drives them: a handful of calls from the executor
(``executor.py``), each logging what an operator needs to know, counting it
(``observe/metrics.py``) and, with tracing on, recording its spans (``observe/tracing.py``).

A call binds the run's ids to the task that drives it (``logs.bind``), so every line written
during the call names the run, its function and app, its event and attempt. Failed attempts
are logged with the error and when the next attempt is due; a run that fails for good at
WARNING when its retries are spent, else at INFO; a lost lease at WARNING.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from tidings.calls.outcomes import Outcome, RunFailed
from tidings.functions.model import FunctionRow
from tidings.observe import metrics, tracing
from tidings.observe.logs import bind
from tidings.runs import traces
from tidings.runs.model import Run
from tidings.runs.store import Claimed

log = logging.getLogger("tidings.engine")


def call_began(run: Run, fn: FunctionRow, *, first: bool) -> None:
    """A call of ``run`` begins, in the task that makes it; ``first``: the run's first."""
    bind(run_id=run.id, event_id=run.event_id, function=fn.slug, app=fn.app_id,
         attempt=run.attempt)
    if first and run.started_at is not None:
        metrics.started(fn.app_id, fn.slug, (run.started_at - run.created_at) / 1000)


def run_ended(run: Run, fn: FunctionRow, status: str, now: int, call: Claimed) -> None:
    """``run`` ended (Completed or Failed) at ``now``, in a call that began with ``call``:
    counted, and with tracing on its span and its pauses' spans recorded, linked to its
    events' creation context (read with the call: nothing more is read)."""
    began = run.started_at if run.started_at is not None else run.created_at
    metrics.finished(fn.app_id, fn.slug, status, (now - began) / 1000)
    if tracing.on():
        traces.ended(run, function=fn.slug, app=fn.app_id, status=status, now=now,
                     events=call.events, steps=call.steps)


def step_attempt(run: Run, *, step: str, name: str, op: str, attempt: int, began: int,
                 now: int, error: Any = None) -> None:
    """An attempt of a step ended (``error``: it failed)."""
    tracing.step_span(run.id, step=step, name=name, op=op, attempt=attempt, started_at=began,
                      ended_at=now, error=error if isinstance(error, dict) else None)


def lease_lost(run: Run) -> None:
    log.warning("run %s: its lease was lost (it ran too long without renewal, or another "
                "worker took it over): what this call did is dropped, the run goes on "
                "elsewhere", run.id)


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds"
                                                               ).replace("+00:00", "Z")


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return f"{error.get('name', 'Error')}: {error.get('message', '')}"
    return str(error)


def settled(run: Run, fn: FunctionRow, outcome: Outcome, retry_at: int | None,
            now: int) -> None:
    """The executor recorded what a call ended in, at ``now``; ``retry_at``: when the run is
    due again after a failed attempt (None when it failed for good or did not fail)."""
    if isinstance(outcome, RunFailed):
        error = _error_text(outcome.error)
        if retry_at is not None:
            log.info("run %s: attempt %d of %d failed (%s); next attempt at %s", run.id,
                     run.attempt + 1, fn.retries + 1, error, iso_ms(retry_at),
                     extra={"next_attempt_at": iso_ms(retry_at)})
        elif outcome.retriable:
            log.warning("run %s failed for good: its retries are spent (%d attempts): %s",
                        run.id, run.attempt + 1, error)
        else:
            log.info("run %s failed for good (not retriable): %s", run.id, error)


def step_failed(run: Run, fn: FunctionRow, step: str, name: str, attempts: int, error: Any,
                retry_at: int | None) -> None:
    """An attempt of a step failed: it is tried again at ``retry_at``, or (None) it failed
    for good, its retries spent, and its error is now its result."""
    if retry_at is None:
        log.warning("run %s: step %r failed for good, its retries spent (%d attempts): %s",
                    run.id, name, attempts, _error_text(error),
                    extra={"step": name, "step_id": step})
    else:
        metrics.step_retried(fn.app_id, fn.slug)
        log.info("run %s: step %r failed (attempt %d: %s); it is tried again at %s", run.id,
                 name, attempts, _error_text(error), iso_ms(retry_at),
                 extra={"step": name, "step_id": step,
                        "next_attempt_at": iso_ms(retry_at)})
