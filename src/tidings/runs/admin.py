"""What the runs API reads (runs, steps, pauses, replays) and what its levers write (reruns,
replays, a delayed event's cancellation), written once for both databases (functions of a
``Tx``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from tidings.events.env_settings import sealed_json
from tidings.functions.model import FunctionRow, dumps, loads
from tidings.functions.registration import function_by_id
from tidings.ids import floor_id, new_id
from tidings.observe import metrics
from tidings.runs import journal, store
from tidings.runs.model import CANCELLED, COMPLETED, FAILED, STATUSES, Run
from tidings.sealing import STEP_AAD
from tidings.storage.base import EventRow
from tidings.storage.tx import Tx

# Below and above every ULID, whatever the database's collation (ids are digits and capitals).
ID_MIN, ID_MAX = "0" * 26, "Z" * 27
REPLAYABLE = (COMPLETED, FAILED, CANCELLED)
TIMES = ("queued", "started", "ended")  # which time of a run a list's range applies to
SCAN = 2_000  # the runs one page of a filter on status, app, event or started/ended time looks at


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
    # The filters a page of ``find_runs`` may add: the functions of an app, the event that
    # started the run, and a range of the time it started or ended (``time``; ``queued`` is the
    # id range above).
    function_ids: tuple[str, ...] | None = None
    event_id: str | None = None
    time: str = "queued"
    time_since: int | None = None
    time_until: int | None = None

    @property
    def by_id_alone(self) -> bool:
        """Whether the id range and the function alone choose the runs the filters look at
        (one exact index range), whatever the statuses."""
        return self.function_ids is None and self.event_id is None and self.time == "queued"

    @property
    def every_status(self) -> bool:
        return set(STATUSES) <= set(self.statuses)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPage:
    """A page of runs, newest first, and where the next page starts (exclusive), if any."""

    runs: list[tuple[Run, str]]
    cursor: str | None


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


def find_runs(tx: Tx, query: RunQuery) -> RunPage:
    """A page of runs matching every filter of ``query``, ``query.limit`` at most.

    The id range and a function are one exact index range (``list_runs``). A filter on a
    status, an app, an event, or the time runs started or ended looks at the newest ``SCAN``
    runs of the narrowest index that holds them (``runs_event`` for an event, ``runs_function``
    for a function or each function of an app, else ``runs_env``), reading a few columns of
    each, and reads only the matching runs in full. A page can then hold fewer runs than asked,
    even none, with a cursor to look further: no page costs more than ``SCAN`` index entries,
    however rare its matches are among a million runs (runs_function_status holds the status
    but not the order of ids across statuses; the bulk previews count along it)."""
    if query.by_id_alone and query.every_status:
        rows = list_runs(tx, replace(query, limit=query.limit + 1))
        page = rows[:query.limit]
        return RunPage(runs=page, cursor=page[-1][0].id if len(rows) > query.limit else None)
    marks, full = _marks(tx, query, SCAN)
    return _page_of(tx, query, marks, full)


def find_runs_counted(tx: Tx, query: RunQuery, window: int) -> tuple[RunPage, dict[str, int]]:
    """``find_runs`` and ``count_statuses`` in one read. Where both look at the same runs (the
    first page of a filter read run by run, counted over as many runs as it looks at), those
    runs are read once."""
    if query.before_id is None and window == SCAN and not (query.by_id_alone
                                                           and query.every_status):
        marks, full = _marks(tx, query, SCAN)
        return _page_of(tx, query, marks, full), _counted(marks, query)
    return find_runs(tx, query), count_statuses(tx, query, window)


def _page_of(tx: Tx, query: RunQuery, marks: list[tuple[Any, ...]], full: bool) -> RunPage:
    chosen = [mark[0] for mark in marks if _matches(mark, query)]
    page_ids = chosen[:query.limit]
    if len(chosen) > query.limit:
        cursor: str | None = page_ids[-1]
    else:
        cursor = str(marks[-1][0]) if full else None
    runs = _named(tx.all("listed_runs_by_ids", (tx.ids(page_ids),))) if page_ids else []
    return RunPage(runs=runs, cursor=cursor)


def count_statuses(tx: Tx, query: RunQuery, window: int) -> dict[str, int]:
    """Runs by status among the newest ``window`` runs the filters (but the statuses) look at,
    from the first page on."""
    query = replace(query, before_id=None)
    if query.by_id_alone:
        low, high = query.min_id or ID_MIN, query.max_id or ID_MAX
        if query.function_id is None:
            rows = tx.all("statuses_of_newest_runs", (query.env_id, low, high, window))
        else:
            rows = tx.all("statuses_of_newest_function_runs",
                          (query.function_id, low, high, window))
        found = {str(status): int(count) for status, count in rows}
    else:
        return _counted(_marks(tx, query, window)[0], query)
    return {status: found.get(status, 0) for status in STATUSES}


def _counted(marks: list[tuple[Any, ...]], query: RunQuery) -> dict[str, int]:
    """Runs by status among ``marks`` that match the filters of ``query`` but its statuses."""
    everything = replace(query, statuses=STATUSES)
    found: dict[str, int] = {}
    for mark in marks:
        if _matches(mark, everything):
            found[mark[2]] = found.get(mark[2], 0) + 1
    return {status: found.get(status, 0) for status in STATUSES}


def _marks(tx: Tx, query: RunQuery, size: int) -> tuple[list[tuple[Any, ...]], bool]:
    """The newest ``size`` runs of the narrowest index the filters allow, as ``(id,
    function_id, status, event_id, started_at, ended_at)``; and whether there may be more."""
    low = query.min_id or ID_MIN
    high = min(query.max_id or ID_MAX, query.before_id or ID_MAX)
    if query.event_id is not None:
        marks = tx.all("run_marks_of_event", (query.env_id, query.event_id, low, high, size))
    elif query.function_id is not None:
        marks = tx.all("run_marks_of_function", (query.function_id, low, high, size))
    elif query.function_ids is not None:
        # Each function's newest ``size / n`` runs; the window is where all of them are known:
        # at or after the oldest run read of each function that had more.
        each = max(size // max(len(query.function_ids), 1), 1)
        merged, bound, full = [], "", False
        for found in _marks_of_functions(tx, query.function_ids, low, high, each):
            merged.extend(found)
            if len(found) >= each:
                full, bound = True, max(bound, min(str(mark[0]) for mark in found))
        marks = sorted((mark for mark in merged if str(mark[0]) >= bound),
                       key=lambda mark: str(mark[0]), reverse=True)
        return marks, full
    else:
        marks = tx.all("run_marks_of_env", (query.env_id, low, high, size))
    return marks, len(marks) >= size


def _marks_of_functions(tx: Tx, function_ids: Sequence[str], low: str, high: str, each: int
                       ) -> list[list[tuple[Any, ...]]]:
    """The newest ``each`` runs of every function, one list per function. PostgreSQL reads
    them in one statement (a round trip and a plan per function cost more than their rows);
    SQLite, in process, one function at a time."""
    if tx.dialect != "postgres":
        return [tx.all("run_marks_of_function", (function_id, low, high, each))
                for function_id in function_ids]
    groups: dict[str, list[tuple[Any, ...]]] = {function_id: [] for function_id in function_ids}
    for mark in tx.all("run_marks_of_functions", (list(function_ids), low, high, each)):
        groups[str(mark[1])].append(mark)
    return list(groups.values())


def _matches(mark: tuple[Any, ...], query: RunQuery) -> bool:
    _, function_id, status, event_id, started_at, ended_at = mark
    if status not in query.statuses:
        return False
    if query.function_id is not None and function_id != query.function_id:
        return False
    if query.function_ids is not None and function_id not in query.function_ids:
        return False
    if query.event_id is not None and event_id != query.event_id:
        return False
    if query.time == "queued":
        return True
    moment = started_at if query.time == "started" else ended_at
    if moment is None:
        return False
    return ((query.time_since is None or moment >= query.time_since)
            and (query.time_until is None or moment < query.time_until))


def functions_of_app(tx: Tx, env_id: str, app_id: str) -> tuple[str, ...]:
    """The ids of every function the app has had in the environment (archived ones too)."""
    return tuple(str(row[0]) for row in tx.all("functions_of_app", (env_id, app_id)))


def run_with_slug(tx: Tx, run_id: str) -> tuple[Run, str] | None:
    found = _named(tx.all("listed_run", (run_id,)))
    return found[0] if found else None


def runs_started_by(tx: Tx, env_id: str, event_id: str) -> list[tuple[Run, str]]:
    return _named(tx.all("listed_runs_of_event", (env_id, event_id)))


def pauses_of(tx: Tx, run_id: str) -> list[PauseRow]:
    return [PauseRow.from_row(r) for r in tx.all("pause_details", (run_id,))]


def rerun(tx: Tx, source: Run, fn: FunctionRow, now: int, *,
          replay_id: str | None = None, from_step: str | None = None) -> str | None:
    """A new queued run of ``fn`` with the events of ``source``; None when this replay already
    reran it. Each rerun has a key of its own, so any run can be rerun any number of times.

    From a step (``from_step``): the new run starts with the results ``source`` recorded
    before that step (completed, or failed for good), in their order, so its function gets them
    memoized, as a resumed run would, and runs that step and the ones after it again."""
    key = f"replay:{replay_id}:{source.id}" if replay_id else f"rerun:{new_id(now)}"
    run_id = store.create_run(tx, fn=fn, event_id=source.event_id, event_ids=source.event_ids,
                        due_at=now, now=now, dedup_key=key, rerun_of=source.id,
                        replay_id=replay_id)
    if run_id is not None and from_step is not None:
        steps = journal.steps_of(tx, source.id)
        chosen = next(step for step in steps if step.step == from_step)
        kept = [step for step in steps
                if step.position < chosen.position and step.status in ("completed", "failed")]
        tx.many("insert_step", [
            (run_id, step.step, step.name, position, step.status,
             None if step.output is None
             else sealed_json(tx, fn.env_id, dumps(step.output), STEP_AAD),
             step.attempts, step.started_at, step.ended_at, step.kind)
            for position, step in enumerate(kept)])
    if run_id is not None:
        metrics.scheduled(fn.app_id, fn.slug, "rerun")
        store.notify(tx, fn.queue)
    return run_id


def invoke(tx: Tx, *, fn: FunctionRow, event: EventRow, now: int) -> str:
    """A new queued run of ``fn`` with ``event`` (a ``tidings/function.invoked`` event stored
    here as delivered, so it starts no other function); the run's id."""
    store.insert_event(tx, event, delivered_at=now)
    run_id = store.create_run(tx, fn=fn, event_id=event.id, due_at=now, now=now,
                              dedup_key=f"invoke:{event.id}")
    assert run_id is not None  # the event is new: so is the key
    metrics.scheduled(fn.app_id, fn.slug, event.name)
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

