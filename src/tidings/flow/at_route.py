"""Flow control decided when an event creates a run, in the routing transaction.

In order: a **rate limit** or **idempotency** key that is used up skips the run (the skip is
recorded on the event); **batching** adds the event to the open batch of its key (a queued run
whose ``event_ids`` grow until ``maxSize`` or ``timeout``); **debounce** moves the open
debounce's run to the latest event and pushes its start back; otherwise a run is created, after
**singleton** (skip the new run or cancel the active one) and **priority** (the run's due time
moves earlier by the seconds ``priority.run`` gives, later when negative). The run's
``cancel_on`` entries are recorded with it.

Open batches and debounces are rows of ``flow_pending``; the run they point to takes events
only while it has not started (the update checks it), so an event that arrives as the run is
claimed starts the next batch or debounce instead of being lost.
"""

from __future__ import annotations

from typing import Any, Protocol

from tidings.flow.at_claim import short
from tidings.flow.cancel import cancel_run, watch
from tidings.flow.limits import window
from tidings.functions.expressions import matches
from tidings.functions.flow_config import IDEMPOTENCY_MS, FlowControl, key_value, priority_seconds
from tidings.functions.model import FunctionRow, dumps, loads
from tidings.functions.registry import Registry
from tidings.observe import metrics
from tidings.runs import store
from tidings.runs.model import TERMINAL, QueuedRun
from tidings.storage.base import EventRow
from tidings.storage.tx import Tx

RATE_LIMITED, IDEMPOTENT, SINGLETON = "rate_limited", "idempotency", "singleton"
DEBOUNCE, BATCH = "debounce", "batch"


class RunSink(Protocol):
    """Where routing notes the runs it created (``Routed``)."""

    runs: list[QueuedRun]


def start(tx: Tx, registry: Registry, fn: FunctionRow, event_id: str, event: dict[str, Any],
          now: int, routed: RunSink) -> str | None:
    """Start (or skip, batch, debounce) ``fn``'s run for a routed event; the run's id when
    one was created or extended."""
    flow = fn.flow
    assert flow is not None
    if flow.rate_limit is not None:
        rate = flow.rate_limit
        key = f"r:{fn.id}:{short(key_value(rate.key, event, fn.slug))}"
        if not _take(tx, key, now, rate.limit, rate.period_ms):
            _skip(tx, event_id, fn, RATE_LIMITED, now)
            return None
    if flow.idempotency is not None:
        key = f"i:{fn.id}:{short(key_value(flow.idempotency, event, fn.slug))}"
        if not _take(tx, key, now, 1, IDEMPOTENCY_MS):
            _skip(tx, event_id, fn, IDEMPOTENT, now)
            return None
    if flow.batch is not None and matches(flow.batch.condition, {"event": event},
                                          f"function {fn.slug}"):
        return _batch(tx, registry, fn, flow, event_id, event, now, routed)
    if flow.debounce is not None:
        return _debounce(tx, registry, fn, flow, event_id, event, now, routed)
    ts = int(event["ts"])
    return create(tx, registry, fn, flow, event_id, event, ts if ts > now else now, now, routed)


def refuses_invoke(tx: Tx, fn: FunctionRow, row: EventRow, parent_run_id: str, step: str,
                   now: int) -> str | None:
    """Why ``fn`` may not be invoked now — its rate limit or idempotency key is used up —, or
    None. As in Inngest, the invoking step then fails with that reason. A call that already
    started the child (and is repeated) is never refused."""
    flow = fn.flow
    if flow is None or (flow.rate_limit is None and flow.idempotency is None):
        return None
    if store.run_for_dedup(tx, fn.id, f"invoke:{parent_run_id}:{step}") is not None:
        return None
    event = {"id": row.id, "name": row.name, "data": loads(row.data), "ts": row.ts}
    if flow.rate_limit is not None:
        rate = flow.rate_limit
        key = f"r:{fn.id}:{short(key_value(rate.key, event, fn.slug))}"
        if not _take(tx, key, now, rate.limit, rate.period_ms):
            _skip(tx, row.id, fn, RATE_LIMITED, now)
            return "invoked function is rate limited"
    if flow.idempotency is not None:
        key = f"i:{fn.id}:{short(key_value(flow.idempotency, event, fn.slug))}"
        if not _take(tx, key, now, 1, IDEMPOTENCY_MS):
            _skip(tx, row.id, fn, IDEMPOTENT, now)
            return "invoked function already ran for this idempotency key"
    return None


def create(tx: Tx, registry: Registry, fn: FunctionRow, flow: FlowControl, event_id: str,
           event: dict[str, Any], due: int, now: int, routed: RunSink,
           event_ids: list[str] | None = None) -> str | None:
    singleton = None
    if flow.singleton is not None:
        singleton = short(key_value(flow.singleton.key, event, fn.slug))
        _lock(tx, f"s:{fn.id}:{singleton}")
        active = tx.one("flow_singleton_get", (fn.id, singleton))
        if active is not None and active[1] not in TERMINAL:
            if flow.singleton.mode == "skip":
                _skip(tx, event_id, fn, SINGLETON, now)
                return None
            cancel_run(tx, registry, active[0], "singleton: a newer run replaced it", now)
    if flow.priority is not None:
        due -= priority_seconds(flow.priority, event, fn.slug) * 1000
    run_id = store.create_run(tx, fn=fn, event_id=event_id, due_at=due, now=now,
                              event_ids=event_ids)
    if run_id is None:
        return None
    metrics.scheduled(fn.app_id, fn.slug, event.get("name", ""))
    if singleton is not None:
        tx.run("flow_singleton_put", (fn.id, singleton, run_id))
    if flow.cancel:
        watch(tx, fn, flow, run_id, event_id, event, now)
    routed.runs.append(QueuedRun(fn.queue, run_id))
    return run_id


def _take(tx: Tx, key: str, now: int, limit: int, period_ms: int) -> bool:
    row = tx.one("flow_limit_lock", (key, now))
    assert row is not None
    decision = window(int(row[0]), int(row[1]), now, limit=limit, period_ms=period_ms)
    if decision.allowed:
        tx.run("flow_limit_set", (*decision.state, key))
    return decision.allowed


def _skip(tx: Tx, event_id: str, fn: FunctionRow, reason: str, now: int) -> None:
    tx.run("flow_skip", (event_id, fn.id, reason, now))


def _lock(tx: Tx, name: str) -> None:
    tx.lock(name)


def _debounce(tx: Tx, registry: Registry, fn: FunctionRow, flow: FlowControl, event_id: str,
              event: dict[str, Any], now: int, routed: RunSink) -> str | None:
    debounce = flow.debounce
    assert debounce is not None
    key = short(key_value(debounce.key, event, fn.slug))
    _lock(tx, f"d:{fn.id}:{key}")
    open_ = tx.one("flow_pending_get", (fn.id, DEBOUNCE, key))
    if open_ is not None:
        run_id, first_at, size = open_
        due = now + debounce.period_ms
        if debounce.timeout_ms is not None:
            due = min(due, int(first_at) + debounce.timeout_ms)
        if tx.run("flow_debounce_move", (event_id, due, run_id)):
            tx.run("flow_pending_size", (int(size) + 1, fn.id, DEBOUNCE, key))
            return str(run_id)
    due = now + min(debounce.period_ms, debounce.timeout_ms or debounce.period_ms)
    run_id = create(tx, registry, fn, flow, event_id, event, due, now, routed)
    if run_id is not None:
        tx.run("flow_pending_put", (fn.id, DEBOUNCE, key, run_id, now, 1))
    return run_id


def _batch(tx: Tx, registry: Registry, fn: FunctionRow, flow: FlowControl, event_id: str,
           event: dict[str, Any], now: int, routed: RunSink) -> str | None:
    batch = flow.batch
    assert batch is not None
    key = short(key_value(batch.key, event, fn.slug))
    _lock(tx, f"b:{fn.id}:{key}")
    open_ = tx.one("flow_pending_get", (fn.id, BATCH, key))
    if open_ is not None:
        run_id, first_at, _ = open_
        found = tx.one("flow_batch_events", (run_id,))
        if found is not None:
            ids = [*loads(found[0]), event_id]
            full = len(ids) >= batch.max_size
            due = now if full else int(first_at) + batch.timeout_ms
            if tx.run("flow_batch_add", (dumps(ids), due, run_id)):
                if full:
                    tx.run("flow_pending_close", (fn.id, BATCH, key))
                    routed.runs.append(QueuedRun(fn.queue, str(run_id)))
                else:
                    tx.run("flow_pending_size", (len(ids), fn.id, BATCH, key))
                return str(run_id)
    run_id = create(tx, registry, fn, flow, event_id, event, now + batch.timeout_ms, now,
                    routed, event_ids=[event_id])
    if run_id is not None:
        tx.run("flow_pending_put", (fn.id, BATCH, key, run_id, now, 1))
    return run_id
