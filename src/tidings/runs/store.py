"""The run queue's transactions, written once for both databases (functions of a ``Tx``).

Every write that follows a lease checks the lease token first: a worker whose lease expired (it
was presumed dead and the run was claimed again) cannot record anything afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tidings.functions.model import FunctionRow, dumps, loads
from tidings.functions.registration import function_by_id
from tidings.ids import floor_id, new_id
from tidings.observe import metrics
from tidings.runs import slots
from tidings.runs.model import (
    CANCELLED,
    COMPLETED,
    FAILED,
    RUNNING,
    SLEEPING,
    STATUSES,
    TERMINAL,
    WAITING,
    FailedAttempt,
    Run,
    StepRecord,
    StepRow,
)
from tidings.storage.base import EventRow, event_from_row
from tidings.storage.tx import Tx


def json_param(tx: Tx, value: bytes | None) -> bytes | str | None:
    """JSON bytes as the events table of this dialect stores them."""
    if value is None:
        return None
    return value if tx.dialect == "sqlite" else value.decode()


# -- runs ------------------------------------------------------------------------------------

def id_list(tx: Tx, ids: Sequence[str]) -> str | list[str]:
    """A list of ids as one query parameter (JSON for SQLite's json_each, an array for
    PostgreSQL's ANY)."""
    return dumps(list(ids)) if tx.dialect == "sqlite" else list(ids)


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
        # A run started by this very claim has neither steps nor pauses: skip looking.
        fresh = run.started_at == now
        steps = [] if fresh else open_call(tx, run, now)
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
    return [event_from_row(r) for r in tx.all("event_rows", (id_list(tx, ids),))]


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
            attempt=attempt, started_at=started_at, ended_at=ended_at, error=loads(error)))
    return found


def invoked_runs(tx: Tx, run_id: str) -> dict[str, str]:
    """The runs a run invoked, by the step that invoked each."""
    return {str(step): str(child) for step, child in tx.all("invoked_runs", (run_id,))}


# -- one call of a run -----------------------------------------------------------------------

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
        tx.run("delete_pause", (run.id, step))
        memo = INVOKE_TIMEOUT if kind == "invoke" else None
        tx.run("insert_step", (run.id, step, name, position,
                               "completed" if memo is None else "failed", dumps(memo), 0,
                               until, now, kind))
        position += 1
    return steps_of(tx, run.id)


def _next_position(tx: Tx, run_id: str) -> int:
    row = tx.one("step_count", (run_id,))
    return int(row[0]) if row else 0


def _completed_steps(run_id: str, records: Sequence[StepRecord]) -> list[tuple[Any, ...]]:
    """``insert_step`` rows for finished steps."""
    return [(run_id, r.step, r.name, r.position, "completed", r.output, 0, r.started_at,
             r.ended_at, r.kind) for r in records]


def record_steps(tx: Tx, run: Run, records: Sequence[StepRecord]) -> bool:
    """Record finished steps in order."""
    if leased_status(tx, run.id, run.lease_token) is None:
        return False
    if records:
        tx.many("insert_step", _completed_steps(run.id, records))
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
    tx.run("insert_step", (run.id, step, name, position, "failed" if final else "errored",
                           dumps({"error": error}), attempts, started_at, now, kind))
    tx.run("insert_failed_attempt", (run.id, step, attempts, started_at, now, dumps(error)))
    if final:
        tx.run("progress", (now, run.id))
    return attempts


def reschedule(tx: Tx, run: Run, *, due_at: int, attempt: int, status: str = RUNNING,
               error: Any = None) -> bool:
    """Hand the run back to the queue, due at ``due_at``. ``error``: the attempt that just
    failed, shown on the run until its next call goes on or it ends."""
    return tx.run("reschedule_run", (status, attempt, due_at,
                                     None if error is None else dumps(error), run.id,
                                     run.lease_token)) > 0


def hand_back(tx: Tx, run: Run, due_at: int) -> bool:
    """Free the run's lease without counting an attempt; due no sooner than ``due_at``."""
    return tx.run("hand_back_run", (due_at, due_at, run.id, run.lease_token)) > 0


def finish(tx: Tx, run: Run, *, status: str, output: Any, error: Any, now: int,
           records: Sequence[StepRecord] = (), paused: bool = True) -> bool:
    """End a run (Completed or Failed) with the steps its last call finished (``records``, as
    in ``record_steps``), and settle an invoking parent; False when the lease is lost (nothing
    written). ``paused=False`` says the run cannot have pauses left to remove."""
    done = tx.run("finish_run", (status, dumps(output) if status == COMPLETED else None,
                                 dumps(error) if error is not None else None, now, run.id,
                                 run.lease_token)) > 0
    if not done:
        return False
    if records:
        tx.many("insert_step", _completed_steps(run.id, records))
    if paused:
        tx.run("delete_pauses_of_run", (run.id,))
    if run.parent_run_id:
        _settle_parent(tx, run.id, status, output, error, now)
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
        (COMPLETED, c.output.decode(), None, c.now, c.run.id, c.run.lease_token) for c in batch])
    if updated < len(batch):
        # Some leases were lost: the UPDATE left those runs alone, and the runs it did complete
        # are the ones whose lease token still matches.
        batch = [c for c in batch if leased_status(tx, c.run.id, c.run.lease_token) is not None]
    tx.many("insert_step", [row for c in batch for row in _completed_steps(c.run.id, c.records)])


def cancel(tx: Tx, run_id: str, reason: str, now: int) -> bool:
    """Cancel a run that has not ended (fenced: a call in flight cannot overwrite it)."""
    return cancel_fenced(tx, run_id, reason, now)


def _settle_parent(tx: Tx, child_id: str, status: str, output: Any, error: Any,
                   now: int) -> None:
    parent = tx.one("pause_by_correlation", (child_id,))
    if parent is None:
        return
    memo = {"data": output} if status == COMPLETED else {"error": error}
    resolve_pause(tx, parent[0], parent[1], parent[2], memo, now, kind="invoke",
                  failed=status != COMPLETED)


def resolve_pause(tx: Tx, run_id: str, step: str, name: str, memo: Any, now: int, *,
                  kind: str, failed: bool = False) -> bool:
    """Give a paused step (``kind`` sleep, wait or invoke) its result and wake the run; False
    when someone else already did."""
    if tx.run("delete_pause", (run_id, step)) == 0:
        return False
    position = _next_position(tx, run_id)
    tx.run("insert_step", (run_id, step, name, position, "failed" if failed else "completed",
                           dumps(memo), 0, None, now, kind))
    tx.run("progress", (now, run_id))
    tx.run("wake_run", (now, run_id))
    return True


def pause(tx: Tx, run: Run, *, step: str, name: str, kind: str, until: int,
          event_name: str | None = None, condition: str | None = None,
          trigger_event: str | None = None, correlation: str | None = None,
          since_id: str | None = None) -> None:
    tx.run("insert_pause", (run.id, step, name, kind, run.env_id, event_name, condition,
                            trigger_event, correlation, since_id, until))


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
    tx.run("insert_event", (
        row.id, row.env_id, row.name, json_param(tx, row.data), row.user, row.user_subject,
        row.key, row.ts, row.v, row.source, json_param(tx, row.context), row.account_id,
        row.received_at, row.deliver_at, delivered_at, json_param(tx, row.meta)))


# -- the runs API: reads and operator actions ------------------------------------------------

# Below and above every ULID, whatever the database's collation (ids are digits and capitals).
ID_MIN, ID_MAX = "0" * 26, "Z" * 27
REPLAYABLE = (COMPLETED, FAILED, CANCELLED)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunQuery:
    """A page of an environment's runs, newest first. Bounds are run ids (ULIDs sort by the
    time the run was created); ``max_id`` and ``before_id`` are exclusive."""

    env_id: str
    function_id: str | None = None
    statuses: Sequence[str] = STATUSES
    min_id: str | None = None
    max_id: str | None = None
    before_id: str | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class PauseRow:
    """What a paused run waits for: a sleep, an event or an invoked run, until ``until``."""

    step: str
    name: str
    kind: str  # sleep | wait | invoke
    event_name: str | None
    condition: str | None
    correlation: str | None
    until: int

    @classmethod
    def from_row(cls, r: tuple[Any, ...]) -> PauseRow:
        return cls(step=r[0], name=r[1], kind=r[2], event_name=r[3], condition=r[4],
                   correlation=r[5], until=r[6])


@dataclass(frozen=True, slots=True, kw_only=True)
class Replay:
    """A bulk rerun: every run of a function created in ``[since_ms, until_ms)`` whose status
    was one of ``statuses`` when the replay started (``total``), ``created`` of them so far."""

    id: str
    env_id: str
    function_id: str
    function: str
    since_ms: int
    until_ms: int
    statuses: list[str]
    total: int
    created: int
    created_at: int

    @classmethod
    def from_row(cls, r: tuple[Any, ...]) -> Replay:
        return cls(id=r[0], env_id=r[1], function_id=r[2], function=r[3], since_ms=r[4],
                   until_ms=r[5], statuses=loads(r[6]), total=r[7], created=r[8],
                   created_at=r[9])

    @property
    def done(self) -> bool:
        return self.created >= self.total


def _statuses(statuses: Sequence[str], size: int) -> list[str | None]:
    """A status filter as ``size`` parameters (``status IN (?, ...)``), padded with NULL."""
    chosen = [*dict.fromkeys(statuses)][:size]
    return [*chosen, *[None] * (size - len(chosen))]


def _named(rows: list[tuple[Any, ...]]) -> list[tuple[Run, str]]:
    return [(Run.from_row(r), str(r[22])) for r in rows]


def list_runs(tx: Tx, query: RunQuery) -> list[tuple[Run, str]]:
    """``(run, function slug)`` of a page of runs."""
    low = query.min_id or ID_MIN
    high = min(query.max_id or ID_MAX, query.before_id or ID_MAX)
    statuses = _statuses(query.statuses, len(STATUSES))
    if query.function_id is None:
        return _named(tx.all("list_runs", (query.env_id, low, high, *statuses, query.limit)))
    return _named(tx.all("list_runs_of_function",
                         (query.function_id, low, high, *statuses, query.limit)))


def run_with_slug(tx: Tx, run_id: str) -> tuple[Run, str] | None:
    found = _named(tx.all("listed_run", (run_id,)))
    return found[0] if found else None


def runs_started_by(tx: Tx, env_id: str, event_id: str) -> list[tuple[Run, str]]:
    return _named(tx.all("listed_runs_of_event", (env_id, event_id)))


def pauses_of(tx: Tx, run_id: str) -> list[PauseRow]:
    return [PauseRow.from_row(r) for r in tx.all("pause_details", (run_id,))]


def cancel_fenced(tx: Tx, run_id: str, reason: str, now: int,
                  emit: Sequence[EventRow] = ()) -> bool:
    """Cancel a run that has not ended and store ``emit`` (its lifecycle events) with it; False
    when it had already ended.

    Unlike ``cancel``, the run's lease token moves on: a call in flight when the run is cancelled
    cannot record its steps, its end or its retry afterwards (which would bring the run back).
    """
    run = get_run(tx, run_id)
    error = {"name": "Cancelled", "message": reason}
    if run is None or tx.run("cancel_run_fenced", (dumps(error), now, run_id)) == 0:
        return False
    tx.run("delete_pauses_of_run", (run_id,))
    # Flow control: free its concurrency slots at once (waking a waiter), drop the rest.
    slots.release(tx, run_id, now)
    slots.ended(tx, run_id)
    _settle_parent(tx, run_id, CANCELLED, None, error, now)
    for row in emit:
        insert_event(tx, row, delivered_at=None)
    if run.parent_run_id:
        notify(tx, ALL_QUEUES)
    return True


def rerun(tx: Tx, source: Run, fn: FunctionRow, now: int, *,
          replay_id: str | None = None) -> str | None:
    """A new queued run of ``fn`` with the events of ``source``; None when this replay already
    reran it. Each rerun has a key of its own, so any run can be rerun any number of times."""
    key = f"replay:{replay_id}:{source.id}" if replay_id else f"rerun:{new_id(now)}"
    run_id = create_run(tx, fn=fn, event_id=source.event_id, event_ids=source.event_ids,
                        due_at=now, now=now, dedup_key=key, rerun_of=source.id,
                        replay_id=replay_id)
    if run_id is not None:
        metrics.scheduled(fn.app_id, fn.slug, "rerun")
        notify(tx, fn.queue)
    return run_id


def start_replay(tx: Tx, *, fn: FunctionRow, since_ms: int, until_ms: int,
                 statuses: Sequence[str], now: int, batch: int) -> tuple[Replay, bool]:
    """Record a replay of the runs that match now and rerun the first ``batch`` of them; the
    replay, and whether runs are left for ``continue_replay``.

    The runs to rerun are written down with the replay (``replay_sources``), so a replay that
    a stopped process left unfinished is continued by the next one to start."""
    replay_id = new_id(now)
    total = tx.run("insert_replay_sources", (replay_id, fn.id, floor_id(since_ms),
                                             floor_id(until_ms), *_statuses(statuses, 3)))
    tx.run("insert_replay", (replay_id, fn.env_id, fn.id, since_ms, until_ms,
                             dumps(list(statuses)), total, now))
    more = continue_replay(tx, replay_id=replay_id, fn=fn, now=now, batch=batch)
    replay = get_replay(tx, replay_id)
    assert replay is not None
    return replay, more


def continue_replay(tx: Tx, *, replay_id: str, fn: FunctionRow, now: int, batch: int) -> bool:
    """Rerun the replay's next ``batch`` runs; whether runs are left after them."""
    sources = [str(r[0]) for r in tx.all("next_replay_sources", (replay_id, batch + 1))]
    done = sources[:batch]
    if done:
        replay_batch(tx, replay_id, fn, done, now)
        tx.run("drop_replay_sources", (replay_id, done[-1]))
    return len(sources) > batch


def unfinished_replays(tx: Tx) -> list[tuple[str, FunctionRow]]:
    """Replays with runs left to rerun, with their functions (a deleted function's replay has
    nothing left to run: its sources go)."""
    found = []
    for replay_id, function_id in tx.all("unfinished_replays", ()):
        fn = function_by_id(tx, function_id)
        if fn is None:
            tx.run("drop_replay_sources", (replay_id, ID_MAX))
            continue
        found.append((str(replay_id), fn))
    return found


def replay_batch(tx: Tx, replay_id: str, fn: FunctionRow, source_ids: Sequence[str],
                 now: int) -> None:
    """Rerun these runs for the replay: once each, however often a batch is repeated, and only
    the reruns created here count towards the replay's progress."""
    created = 0
    for source_id in source_ids:
        source = get_run(tx, source_id)
        if source is not None and rerun(tx, source, fn, now, replay_id=replay_id) is not None:
            created += 1
    if created:
        tx.run("replay_progress", (created, replay_id))


def get_replay(tx: Tx, replay_id: str) -> Replay | None:
    row = tx.one("replay_by_id", (replay_id,))
    return Replay.from_row(row) if row else None


def cancel_delivery(tx: Tx, env_id: str, event_id: str, now: int) -> str | None:
    """Stop a stored event from being delivered; None when done, else why it was not:
    ``"missing"``, ``"delivered"`` or ``"cancelled"`` (already)."""
    if tx.run("cancel_event", (now, env_id, event_id)) > 0:
        return None
    state = tx.one("event_state", (env_id, event_id))
    if state is None:
        return "missing"
    return "delivered" if state[0] is not None else "cancelled"


__all__ = ["CANCELLED", "COMPLETED", "FAILED"]
