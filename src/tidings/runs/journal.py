"""What a run did and waits for, written once for both databases (functions of a ``Tx``): its
recorded steps (each step's result once, errors counted per attempt) and its pauses (sleeps,
waits, invocations), fenced by the run's lease token."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tidings.events.env_settings import sealed_json
from tidings.functions.model import dumps, loads
from tidings.runs.model import COMPLETED, TERMINAL, FailedAttempt, Run, StepRecord, StepRow
from tidings.sealing import PAUSE_AAD, STEP_AAD, opened
from tidings.storage.tx import Tx


def leased_status(tx: Tx, run_id: str, token: int) -> str | None:
    row = tx.one("run_leased", (run_id, token))
    return str(row[0]) if row else None


def steps_of(tx: Tx, run_id: str) -> list[StepRow]:
    return [StepRow.from_row(r) for r in tx.all("steps_of_run", (run_id,))]


def failed_attempts(tx: Tx, run_id: str) -> dict[str, list[FailedAttempt]]:
    """Every failed attempt of the run's steps, by step, oldest first."""
    found: dict[str, list[FailedAttempt]] = {}
    for step, attempt, started_at, ended_at, error in tx.all("failed_attempts_of_run",
                                                             (run_id,)):
        found.setdefault(step, []).append(FailedAttempt(
            attempt=attempt, started_at=started_at, ended_at=ended_at,
            error=loads(opened(error, STEP_AAD))))
    return found


def invoked_runs(tx: Tx, run_id: str) -> dict[str, str]:
    """The runs a run invoked, by the step that invoked each."""
    return {str(step): str(child) for step, child in tx.all("invoked_runs", (run_id,))}


# A pause ``<step>~<n>`` is one of several ``<step>`` waits on, any of which ends it (v2's
# ``waitForEvent`` on several event names): the first to end deletes them all and is recorded
# as ``<step>``. Tidings' and the SDKs' step ids never hold it (hex hashes, ULIDs).
ANY_OF = "~"


def _end_pause(tx: Tx, run_id: str, step: str) -> str | None:
    """Delete the pause (with its group); the step to record, or None when it was gone."""
    if tx.run("delete_pause", (run_id, step)) == 0:
        return None
    if ANY_OF in step:
        step = step.split(ANY_OF, 1)[0]
        tx.run("delete_pause_group", (run_id, step + ANY_OF + "%"))
    return step


# An invocation that timed out, as Inngest words it (``ResumeRequest.SetInvokeTimeoutError``).
INVOKE_TIMEOUT = {"error": {
    "error": "InngestInvokeTimeoutError: Timed out waiting for invoked function to complete",
    "name": "InngestInvokeTimeoutError",
    "message": "Timed out waiting for invoked function to complete"}}

def open_call(tx: Tx, run: Run, now: int) -> list[StepRow] | None:
    """Settle pauses that expired, then the run's steps; None when the lease is lost."""
    status = leased_status(tx, run.id, run.lease_token)
    if status is None or status in TERMINAL:
        return None
    position = _next_position(tx, run.id)
    for step, name, kind, until, _ in tx.all("pauses_of_run", (run.id,)):
        if until > now:
            continue
        ended = _end_pause(tx, run.id, step)
        if ended is None:
            continue  # one of a group another ended
        step = ended
        memo = INVOKE_TIMEOUT if kind == "invoke" else None
        tx.run("insert_step", (run.id, step, name, position,
                               "completed" if memo is None else "failed", dumps(memo), 0,
                               until, now, kind))
        position += 1
    return steps_of(tx, run.id)


def _next_position(tx: Tx, run_id: str) -> int:
    row = tx.one("step_count", (run_id,))
    return int(row[0]) if row else 0


def completed_steps(tx: Tx, run: Run, records: Sequence[StepRecord]) -> list[tuple[Any, ...]]:
    """``insert_step`` rows for finished steps (their outputs sealed when the run's
    environment seals: ``sealing.py``)."""
    return [(run.id, r.step, r.name, r.position, "completed",
             sealed_json(tx, run.env_id, r.output, STEP_AAD), 0, r.started_at,
             r.ended_at, r.kind) for r in records]


def record_steps(tx: Tx, run: Run, records: Sequence[StepRecord]) -> bool:
    """Record finished steps in order."""
    if leased_status(tx, run.id, run.lease_token) is None:
        return False
    if records:
        tx.many("insert_step", completed_steps(tx, run, records))
        tx.run("progress", (records[-1].ended_at, run.id))
    return True


def record_step_error(tx: Tx, run: Run, step: str, name: str, position: int,
                      error: dict[str, Any], retries: int, started_at: int,
                      now: int, kind: str = "run", attempt: int = 0) -> int | None:
    """Count the failed ``attempt`` (0 for a first try) and return how many attempts there
    have been (more than ``retries``: it was the last, and the error is now the step's result);
    None when the lease is lost."""
    if leased_status(tx, run.id, run.lease_token) is None:
        return None
    row = tx.one("step_attempts", (run.id, step))
    attempts = max(int(row[0]) if row else 0, attempt) + 1
    final = attempts > retries
    # Errors often quote what the step was given: sealed like outputs.
    tx.run("insert_step", (run.id, step, name, position, "failed" if final else "errored",
                           sealed_json(tx, run.env_id, dumps({"error": error}), STEP_AAD),
                           attempts, started_at, now, kind))
    tx.run("insert_failed_attempt", (run.id, step, attempts, started_at, now,
                                     sealed_json(tx, run.env_id, dumps(error), STEP_AAD)))
    if final:
        tx.run("progress", (now, run.id))
    return attempts


def settle_parent(tx: Tx, child_id: str, status: str, output: Any, error: Any,
                   now: int) -> None:
    parent = tx.one("pause_by_correlation", (child_id,))
    if parent is None:
        return
    memo = {"data": output} if status == COMPLETED else {"error": error}
    resolve_pause(tx, parent[0], parent[1], parent[2], memo, now, kind="invoke",
                  failed=status != COMPLETED, env_id=parent[3])


def resolve_pause(tx: Tx, run_id: str, step: str, name: str, memo: Any, now: int, *,
                  kind: str, env_id: str, failed: bool = False) -> bool:
    """Give a paused step (``kind`` sleep, wait or invoke) of a run of ``env_id`` its result
    and wake the run; False when someone else already did."""
    ended = _end_pause(tx, run_id, step)
    if ended is None:
        return False
    step = ended
    position = _next_position(tx, run_id)
    tx.run("insert_step", (run_id, step, name, position, "failed" if failed else "completed",
                           sealed_json(tx, env_id, dumps(memo), STEP_AAD), 0, None, now, kind))
    tx.run("progress", (now, run_id))
    tx.run("wake_run", (now, run_id))
    return True


def pause(tx: Tx, run: Run, *, step: str, name: str, kind: str, until: int,
          event_name: str | None = None, condition: str | None = None,
          trigger_event: str | None = None, correlation: str | None = None,
          since_id: str | None = None) -> None:
    if trigger_event is not None:  # the run's event, for the condition: sealed like it
        trigger_event = sealed_json(tx, run.env_id, trigger_event, PAUSE_AAD)
    tx.run("insert_pause", (run.id, step, name, kind, run.env_id, event_name, condition,
                            trigger_event, correlation, since_id, until))
