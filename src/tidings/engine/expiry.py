"""Retention (``events/retention.py``) carried out: expired events and ended runs deleted a
chunk per transaction, so a sweep never holds the writer long.

An expired event is kept while something needs it: the trigger of a run that has not ended, a
delayed event not delivered yet, and every event from the first one of a batch that has not
ended (a batch run lists its events, and the oldest bounds them all). A run is deleted, with
its steps (and a v2 Job's tasks and statuses), once it ended longer ago than ``runs_ttl``
(and no replay still has to rerun it).
"""

from __future__ import annotations

from tidings.events.retention import Retention
from tidings.ids import floor_id
from tidings.storage.tx import Tx

CHUNK = 1000  # rows per transaction


def envs(tx: Tx, base: Retention) -> list[tuple[str, Retention]]:
    """Every environment with the retention in effect for it."""
    found = []
    for env_id, events_ttl, runs_ttl in tx.all("retention_envs", ()):
        own_events = base.events_ttl_ms if events_ttl is None else (events_ttl or None)
        own_runs = base.runs_ttl_ms if runs_ttl is None else (runs_ttl or None)
        found.append((str(env_id), Retention(events_ttl_ms=own_events, runs_ttl_ms=own_runs,
                                             dedup_window_ms=base.dedup_window_ms)))
    return found


def expire_events(tx: Tx, env_id: str, before_ms: int, chunk: int = CHUNK) -> int:
    """Delete up to ``chunk`` events of the environment received before ``before_ms`` that
    nothing needs; how many went."""
    before = floor_id(before_ms)
    batched = tx.one("retention_batched_floor", ())
    if batched is not None and batched[0] is not None:
        before = min(before, str(batched[0]))
    rows = tx.all("retention_expired_events", (env_id, before, chunk))
    if not rows:
        return 0
    for event_id, event_key in rows:
        if event_key is not None:
            tx.run("retention_delete_claim", (env_id, event_key, event_id))
    tx.run("retention_delete_expired_events", (env_id, rows[-1][0]))  # the same rows
    tx.run("retention_delete_orphan_skips", (rows[0][0], rows[-1][0]))
    return len(rows)


def expire_runs(tx: Tx, env_id: str, before_ms: int, chunk: int = CHUNK) -> int:
    """Delete up to ``chunk`` runs of the environment that ended before ``before_ms``, with
    their steps; how many went."""
    rows = tx.all("retention_expired_runs", (env_id, floor_id(before_ms), before_ms, chunk))
    for (run_id,) in rows:
        tx.run("retention_delete_steps", (run_id,))
        tx.run("retention_delete_trigger_tasks", (run_id,))  # a v2 Job's tasks and statuses
        tx.run("retention_delete_trigger_statuses", (run_id,))
        tx.run("retention_delete_erased_run", (run_id,))
        tx.run("retention_delete_run", (run_id,))
    return len(rows)


def free_pages(tx: Tx, limit: int = 4000) -> int:
    """SQLite in incremental auto-vacuum mode (every database created since it exists, and any
    after ``tidings vacuum``): give up to ``limit`` pages that deleted rows freed back to the
    file system; how many. PostgreSQL: nothing (autovacuum makes the space reusable)."""
    if tx.dialect != "sqlite":
        return 0
    row = tx.one("retention_freelist", ())
    free = min(int(row[0]) if row else 0, limit)
    for _ in range(free):
        tx.run("retention_free_page", ())
    return free
