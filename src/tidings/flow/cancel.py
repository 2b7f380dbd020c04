"""Cancelling runs: by a later event (``cancel_on``), by a timeout, in bulk through the API.

A ``cancel_on`` entry is recorded with the run when it is created: the event name it waits for,
the condition (CEL over ``event`` — the run's trigger — and ``async`` — the candidate), and until
when it holds (``timeout``, default one year). Routing an event of that name evaluates the
conditions of the runs waiting for it; only events stored after the run's trigger count.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

import msgspec

from tidings.events.env_settings import sealed_json
from tidings.functions import registration
from tidings.functions.expressions import matches
from tidings.functions.flow_config import FlowControl
from tidings.functions.model import FunctionRow, dumps
from tidings.functions.registry import Registry, aliases
from tidings.ids import floor_id, new_id
from tidings.observe import metrics
from tidings.runs import store, traces
from tidings.runs.model import TERMINAL, Run
from tidings.sealing import PAUSE_AAD, opened
from tidings.storage.base import EventRow, internal_event
from tidings.storage.tx import Tx

log = logging.getLogger("tidings.flow")
CANCELLED_EVENT = "tidings/function.cancelled"
BULK_REASON = "cancelled in bulk through the API"


def cancel_run(tx: Tx, registry: Registry, run_id: str, reason: str, now: int) -> bool:
    """Cancel a run that has not ended, with ``reason``; record ``tidings/function.cancelled``
    when a function listens for it. False when the run had already ended."""
    run = store.get_run(tx, run_id)
    if run is None or run.status in TERMINAL:
        return False
    emit = _cancelled_events(tx, registry, run, reason, now)
    if not store.cancel_fenced(tx, run_id, reason, now, emit):
        return False
    fn = registry.by_id(run.function_id) or registration.function_by_id(tx, run.function_id)
    # Told once the cancellation has committed: a transaction rolled back cancelled nothing.
    tx.after_commit(partial(_told, run, fn, reason, now))
    if fn is not None:
        traces.record(tx, run, function=fn.slug, app=fn.app_id, status="Cancelled", now=now)
    return True


def _told(run: Run, fn: FunctionRow | None, reason: str, now: int) -> None:
    log.info("run %s cancelled: %s", run.id, reason, extra={"run_id": run.id})
    if fn is not None:
        metrics.finished(fn.app_id, fn.slug, "Cancelled",
                         (now - (run.started_at or run.created_at)) / 1000)


def _cancelled_events(tx: Tx, registry: Registry, run: Run, reason: str,
                      now: int) -> list[EventRow]:
    if not registry.listens(run.env_id, CANCELLED_EVENT):
        return []
    fn = registry.by_id(run.function_id) or registration.function_by_id(tx, run.function_id)
    rows = store.event_rows(tx, run.event_ids or [run.event_id])
    return [cancelled_event(run, fn.slug if fn else run.function_id, rows, reason, now)]


def cancelled_event(run: Run, slug: str, rows: Sequence[EventRow], reason: str,
                    now: int) -> EventRow:
    """``tidings/function.cancelled`` for a run of the function ``slug`` with these events.

    Its ``event`` and ``events`` leave ``user`` out: lifecycle events are stored unencrypted, and
    ``user`` must stay encrypted (and erasable) at rest. Its ``meta`` is its trigger's, so the
    run it starts is in the same sessions (inngest-js's ``CancelledEventPayload``).
    """
    events = []
    for row in rows:
        event: dict[str, Any] = {"id": row.key or row.id, "name": row.name,
                                 "data": msgspec.json.decode(row.data), "ts": row.ts}
        if row.v is not None:
            event["v"] = row.v
        if row.meta is not None:
            event["meta"] = msgspec.json.decode(row.meta)
        events.append(event)
    data = {"function_id": slug, "run_id": run.id, "event": events[0] if events else None,
            "events": events, "error": {"name": "Cancelled", "message": reason}}
    return internal_event(event_id=new_id(now), env_id=run.env_id, name=CANCELLED_EVENT,
                          data=data, ts=now, received_at=now,
                          meta=rows[0].meta if rows else None)


def watch(tx: Tx, fn: FunctionRow, flow: FlowControl, run_id: str, event_id: str,
          event: dict[str, Any], now: int) -> None:
    """Record the run's ``cancel_on`` entries (idempotent)."""
    trigger = sealed_json(tx, fn.env_id, dumps(event), PAUSE_AAD)
    for position, entry in enumerate(flow.cancel):
        tx.run("flow_cancel_add", (run_id, position, fn.env_id, entry.event, entry.condition,
                                   trigger, event_id, now + entry.timeout_ms))


def on_event(tx: Tx, registry: Registry, env_id: str, event_id: str, event: dict[str, Any],
             now: int) -> list[str]:
    """Cancel the runs this event cancels; their ids."""
    cancelled = []
    for name in aliases(event["name"]):
        for run_id, _, condition, trigger, since_id, until, status in tx.all(
                "flow_cancels_for", (env_id, name)):
            if status in TERMINAL or until < now or event_id <= since_id:
                continue
            sealed: bytes | str | None = trigger
            variables = {"event": msgspec.json.decode(opened(sealed, PAUSE_AAD) or b"{}"),
                         "async": event}
            if matches(condition, variables, f"run {run_id} (cancel)") and cancel_run(
                    tx, registry, run_id, f"cancelled by event {event['name']} ({event_id})",
                    now):
                cancelled.append(run_id)
    return cancelled


def cancel_between(tx: Tx, registry: Registry, fn: FunctionRow, since_ms: int, until_ms: int,
                   now: int, batch: int) -> int:
    """Cancel up to ``batch`` runs of ``fn`` created in ``[since_ms, until_ms)`` that have not
    ended; how many were cancelled (fewer than ``batch``: none is left)."""
    count = 0
    for row in tx.all("flow_open_runs", (fn.id, floor_id(since_ms), floor_id(until_ms),
                                         batch)):
        if cancel_run(tx, registry, row[0], BULK_REASON, now):
            count += 1
    return count
