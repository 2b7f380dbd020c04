"""Flow control decided when a worker claims runs, in the claim's own transaction.

The claim leases due runs as usual; ``admit`` then looks at the runs of functions with
claim-time flow control and gives back, still inside the transaction, the ones that may not run
now — nobody ever sees them leased:

- **timeouts**: a run that did not start within ``timeouts.start``, or has not finished
  ``timeouts.finish`` after it started, is cancelled with that reason;
- **concurrency**: each limit's key may hold ``limit`` leased runs. A slot is a row
  ``(key, run, lease token)`` that counts while the run still holds that lease, so a call's end,
  a lost lease and a cancellation all free it without bookkeeping. A run over a limit goes back
  to the queue, waiting on that key; the end of a call on the key wakes the oldest waiter;
- **throttle**: a run's first start takes a GCRA slot of its key, or goes back to the queue
  until the throttle lets it start.

Keys are locked in one sorted order (advisory locks on PostgreSQL; SQLite has one writer), so
workers claiming together neither exceed a limit nor deadlock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec

from tidings.durations import to_text
from tidings.flow.cancel import cancel_run
from tidings.flow.limits import gcra
from tidings.functions import registration
from tidings.functions.flow_config import Concurrency, FlowControl, key_value
from tidings.functions.model import FunctionRow
from tidings.functions.registry import Registry
from tidings.runs import store
from tidings.runs.model import TERMINAL, Run
from tidings.runs.slots import ended, release
from tidings.storage.base import EventRow
from tidings.storage.tx import Tx

RECHECK_MS = 60_000  # a run held back by concurrency looks again at least this often
CONCURRENCY, THROTTLED = "concurrency", "throttled"


def short(value: str) -> str:
    """A key value as stored: long values are hashed, and so are values holding NUL (an event's
    ``data`` may hold ``\\u0000``; PostgreSQL text cannot)."""
    if len(value) <= 128 and "\x00" not in value:
        return value
    return "sha1:" + hashlib.sha1(value.encode()).hexdigest()


def concurrency_key(limit: Concurrency, index: int, fn: FunctionRow,
                    event: dict[str, Any]) -> str:
    value = short(key_value(limit.key, event, fn.slug))
    if limit.scope == "account":
        return f"c:a:{value}"
    if limit.scope == "env":
        return f"c:e:{fn.env_id}:{value}"
    return f"c:f:{fn.id}:{index}:{value}"


def throttle_key(fn: FunctionRow, flow: FlowControl, event: dict[str, Any]) -> str:
    assert flow.throttle is not None
    return f"t:{fn.id}:{short(key_value(flow.throttle.key, event, fn.slug))}"


def _function(tx: Tx, registry: Registry, function_id: str) -> FunctionRow | None:
    return registry.by_id(function_id) or registration.function_by_id(tx, function_id)


def event_view(row: Any) -> dict[str, Any]:
    """An event as key expressions see it."""
    return {"id": row.key or row.id, "name": row.name, "data": msgspec.json.decode(row.data),
            "ts": row.ts}


def admit(tx: Tx, runs: list[Run], now: int, registry: Registry,
          loaded: dict[str, EventRow]) -> list[Run]:
    """The claimed runs that may run now; the others are given back (or cancelled). The event
    rows read on the way are left in ``loaded`` for the claim to reuse."""
    controlled: list[tuple[Run, FunctionRow, FlowControl]] = []
    for run in runs:
        fn = registry.by_id(run.function_id)
        if fn is None:
            fn = registration.function_by_id(tx, run.function_id)
        if fn is not None and fn.flow is not None and fn.flow.at_claim:
            controlled.append((run, fn, fn.flow))
    if not controlled:
        return runs
    for stored in store.event_rows(tx, sorted({run.event_id for run, _, _ in controlled})):
        loaded[stored.id] = stored
    plans = []
    keys: set[str] = set()
    for run, fn, flow in controlled:
        row = loaded.get(run.event_id)
        event = event_view(row) if row is not None else {
            "id": run.event_id, "name": "", "data": {}, "ts": run.created_at}
        slots = [concurrency_key(c, i, fn, event) for i, c in enumerate(flow.concurrency)]
        fresh = run.started_at == now
        throttle = throttle_key(fn, flow, event) if flow.throttle and fresh else None
        keys.update(slots)
        if throttle:
            keys.add(throttle)
        plans.append((run, fn, flow, event, slots, throttle, fresh))
    tx.lock_all(sorted(keys))
    # Slots held now, read once for every key (under the keys' locks); this claim's own
    # admissions are added as they are decided.
    used: dict[str, int] = {}
    slot_keys = sorted({key for plan in plans for key in plan[4]})
    if slot_keys:
        for key, count in tx.all("flow_slots_counts", (tx.ids(slot_keys), now)):
            used[key] = int(count)
    refused: set[str] = set()
    admitted: list[str] = []
    for run, fn, flow, event, slots, throttle, fresh in plans:
        if _admit_one(tx, run, fn, flow, event, slots, throttle, fresh, now, registry, used):
            admitted.append(run.id)
        else:
            refused.add(run.id)
    if admitted:
        tx.many("flow_slot_take", [(key, run.id, run.lease_token)
                                   for run, _, _, _, slots, _, _ in plans
                                   if run.id not in refused for key in slots])
        tx.run("flow_waits_done", (tx.ids(admitted),))
    return [run for run in runs if run.id not in refused]


def adopt(tx: Tx, fn: FunctionRow, event: dict[str, Any], now: int,
          taken: dict[str, int]) -> list[str] | None:
    """Admit a run as routing creates it, to hand it straight to a local executor: the keys
    whose slots it takes (the caller stores it leased and writes the slots, ``flow_slot_take``
    with token 1, with the transaction's other rows), or None — store it queued instead — when
    a slot is taken, the function is throttled, or another transaction holds a key (routing
    never waits for a key's lock). ``taken`` counts the slots this transaction took so far."""
    flow = fn.flow
    if flow is None or flow.throttle is not None or flow.at_route:
        return None
    keys = [concurrency_key(c, i, fn, event) for i, c in enumerate(flow.concurrency)]
    for key in keys:
        if not tx.try_lock(key):
            return None
    for key, limit in zip(keys, flow.concurrency, strict=True):
        used = tx.one("flow_slots_used", (key, now))
        if (int(used[0]) if used else 0) + taken.get(key, 0) >= limit.limit:
            return None
    for key in keys:
        taken[key] = taken.get(key, 0) + 1
    return keys


def _start_from(run: Run, flow: FlowControl, event: dict[str, Any]) -> int:
    """When the run became ready to start: its creation, a later ``ts``, or the end of its
    debounce or batch."""
    ts = int(event.get("ts") or 0)
    if flow.debounce is not None:
        return max(run.created_at, ts + flow.debounce.period_ms)
    if flow.batch is not None:
        return run.created_at + flow.batch.timeout_ms
    return max(run.created_at, ts)


def _admit_one(tx: Tx, run: Run, fn: FunctionRow, flow: FlowControl, event: dict[str, Any],
               slots: Sequence[str], throttle: str | None, fresh: bool, now: int,
               registry: Registry, used: dict[str, int]) -> bool:
    deadline: int | None = None
    if fresh and flow.start_ms:
        deadline = _start_from(run, flow, event) + flow.start_ms
        if now > deadline:
            cancel_run(tx, registry, run.id, f"timeouts.start: the run did not start within "
                       f"{to_text(flow.start_ms)}", now)
            return False
    elif flow.finish_ms and run.started_at is not None:
        deadline = run.started_at + flow.finish_ms
        if now > deadline:
            cancel_run(tx, registry, run.id, f"timeouts.finish: the run did not finish within "
                       f"{to_text(flow.finish_ms)} of starting", now)
            return False
    for key, limit in zip(slots, flow.concurrency, strict=True):
        if used.get(key, 0) >= limit.limit:
            # Waiters wake in the order they were due (priority included), not by arrival.
            _defer(tx, run, fresh, now + RECHECK_MS, deadline, CONCURRENCY, key,
                   min(now, run.due_at or now))
            return False
    if throttle is not None:
        assert flow.throttle is not None
        row = tx.one("flow_limit_lock", (throttle, now))
        assert row is not None
        decision = gcra(int(row[0]), now, limit=flow.throttle.limit,
                        period_ms=flow.throttle.period_ms, burst=flow.throttle.burst)
        if not decision.allowed:
            _defer(tx, run, fresh, decision.retry_at, deadline, THROTTLED, throttle, now)
            return False
        tx.run("flow_limit_set", (*decision.state, throttle))
    for key in slots:
        used[key] = used.get(key, 0) + 1
    return True


def _defer(tx: Tx, run: Run, fresh: bool, due: int, deadline: int | None, reason: str,
           key: str, since: int) -> None:
    if deadline is not None:
        due = min(due, deadline + 1)
    tx.run("flow_defer", (due, fresh, fresh, run.id, run.lease_token))
    tx.run("flow_wait", (run.id, key, reason, since, due))


def after_call(tx: Tx, run: Run, fn: FunctionRow, now: int) -> None:
    """In the transaction that records a call's outcome: free the run's concurrency slots and
    wake the oldest run waiting on each; when the run ended, drop what it left behind; when it
    goes on, make sure it is due again by its ``timeouts.finish``."""
    flow = fn.flow
    if flow is None:
        return
    if flow.concurrency:
        release(tx, run.id, now)
    if not flow.cancel and not flow.finish_ms:
        return
    state = tx.one("flow_run_due", (run.id,))
    if state is None:
        return
    if state[1] in TERMINAL:
        ended(tx, run.id)
    elif flow.finish_ms and run.started_at is not None:
        deadline = run.started_at + flow.finish_ms + 1
        tx.run("flow_cap_due", (deadline, run.id, deadline))
