"""``client.invokeJob`` / ``job.invoke()``: a run of a Job started directly, with a payload,
without an event subscription (``POST /api/v1/jobs/{id}/invoke``).

The payload is stored as an event named after the Job's first trigger (``invoke`` for an
``invokeTrigger`` Job, as v2 named it), already delivered, so that it starts no other
function; the run is unique per ``Idempotency-Key`` (an ``io``-level invoke sends the task's
key), so an invocation repeated after a crash starts nothing twice.
With a callback URL (``invokeAndWaitForCompletion``) the run is the child of the waiting task
of its parent run, which pauses on it (``callbacks.py``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from tidings.errors import RequestRejected
from tidings.functions.model import FunctionRow
from tidings.functions.registration import live_functions
from tidings.ids import new_id
from tidings.runs import store
from tidings.runs.model import Run
from tidings.storage.base import EventRow
from tidings.storage.tx import Tx
from tidings.triggerdev import callbacks
from tidings.triggerdev.tasks import Task
from tidings.triggerdev.wire import TRIGGER_QUEUE

INVOKED = "invoke"  # the event of an invokeTrigger Job's run


def job_functions(tx: Tx, env_id: str, job_id: str) -> list[FunctionRow]:
    """The live functions of the environment that are the v2 Job ``job_id``."""
    return [fn for fn in live_functions(tx)
            if fn.env_id == env_id and fn.queue == TRIGGER_QUEUE
            and fn.config.get("job", {}).get("id") == job_id]


def one_job(tx: Tx, env_id: str, job_id: str, *, several: str = "") -> FunctionRow:
    """The one live function that is the v2 Job ``job_id``: a 404 when none is, a 409 when
    several apps have it (``several`` tells the caller what to do then)."""
    found = job_functions(tx, env_id, job_id)
    if len(found) != 1:
        shown = job_id if len(job_id) <= 100 else job_id[:100] + "…"
        problem = "not found" if not found else "is a job of several apps" + several
        raise RequestRejected(f"job {shown!r} {problem}", status=404 if not found else 409)
    return found[0]


def invoke(tx: Tx, *, fn: FunctionRow, payload: dict[str, Any], context: Any,
           account_id: str | None, key: str | None, now: int,
           callback: str | None = None) -> str:
    """The id of the run the invocation started (or had started, for a repeated key)."""
    parent: tuple[Run, Task] | None = None
    if callback is not None:
        run_id, task_id = callbacks.callback_of(callback, "options.callbackUrl")
        parent = callbacks.waiting_task(tx, fn.env_id, run_id, task_id, "options.callbackUrl")
    event_id = new_id(now)
    dedup = f"v2-invoke:{key}" if key else f"v2-invoke:{event_id}"
    found = tx.one("run_for_dedup", (fn.id, dedup))
    if found is not None:
        if parent is not None:
            callbacks.wait_for_child(tx, parent[0], parent[1], str(found[0]), now)
        return str(found[0])
    triggers = fn.config.get("triggers") or [{"event": INVOKED}]  # invokeTrigger: none
    name = str(triggers[0].get("event", "trigger.scheduled"))
    row = EventRow(id=event_id, env_id=fn.env_id, name=name, data=msgspec.json.encode(payload),
                   user=None, user_subject=None, key=None, ts=now, v=None, source="tidings",
                   context=None if context is None else msgspec.json.encode(context),
                   account_id=account_id, received_at=now, deliver_at=None, meta=None)
    store.insert_event(tx, row, delivered_at=now)
    started = store.create_run(tx, fn=fn, event_id=event_id, due_at=now, now=now,
                               dedup_key=dedup,
                               parent_run_id=parent[0].id if parent else None,
                               parent_step=parent[1].id if parent else None)
    assert started is not None
    run_id = started
    if parent is not None:
        callbacks.wait_for_child(tx, parent[0], parent[1], run_id, now)
    tx.one("notify", (fn.queue,))
    return run_id
