"""What the runs API reads (runs, steps, pauses, replays) and what its levers write (reruns,
replays, a delayed event's cancellation), written once for both databases (functions of a
``Tx``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tidings.functions.model import FunctionRow, dumps, loads
from tidings.functions.registration import function_by_id
from tidings.ids import floor_id, new_id
from tidings.observe import metrics
from tidings.runs import store
from tidings.runs.model import CANCELLED, COMPLETED, FAILED, STATUSES, Run
from tidings.storage.tx import Tx

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


def rerun(tx: Tx, source: Run, fn: FunctionRow, now: int, *,
          replay_id: str | None = None) -> str | None:
    """A new queued run of ``fn`` with the events of ``source``; None when this replay already
    reran it. Each rerun has a key of its own, so any run can be rerun any number of times."""
    key = f"replay:{replay_id}:{source.id}" if replay_id else f"rerun:{new_id(now)}"
    run_id = store.create_run(tx, fn=fn, event_id=source.event_id, event_ids=source.event_ids,
                        due_at=now, now=now, dedup_key=key, rerun_of=source.id,
                        replay_id=replay_id)
    if run_id is not None:
        metrics.scheduled(fn.app_id, fn.slug, "rerun")
        store.notify(tx, fn.queue)
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
        source = store.get_run(tx, source_id)
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

