"""The tasks of a v2 run: what ``io.runTask`` (and every ``io`` call built on it) creates,
completes and fails through ``/api/v1/runs/{id}/tasks`` while the job executes.

A task is found again by its idempotency key (the SDK derives it from the run, the parent task
and the cache key), so a replay of the job gets the same task back: completed ones come with
the job's next ``EXECUTE_JOB`` as cached tasks and are not run again. A task starts

- ``WAITING`` when it has a ``delayUntil`` (``io.wait``): the run sleeps until then;
- ``WAITING`` with a ``callback_until`` when it waits for a callback (``io.waitForEvent``,
  ``invokeAndWaitForCompletion``): its callback URL names the run and the task; what the SDK
  registers with it (``callbacks.py``) becomes a pause of the run, whose result completes the
  task; at ``callback_until`` it fails as v2's did;
- ``WAITING`` for a request (``io.waitForRequest``): its callback URL also carries a secret,
  and whoever POSTs JSON to it completes the task with that body (``callbacks.py``);
- ``COMPLETED`` when it is a no-op (``io.logger``): nothing to run;
- ``RUNNING`` with an ``operation`` for a background fetch, which Tidings performs
  (``operations.py``): each attempt that does not settle it counts one more, and its
  ``delay_until`` is when the next may start;
- ``RUNNING`` otherwise, attempt 1. After ``RETRY_WITH_TASK`` it is marked ``retrying``, and the
  SDK's next ``runTask`` for it starts attempt 2 (the SDK computes its own retry times from the
  task's ``attempts``).

A task's ``params``, ``output`` and ``error`` are sealed when the run's environment seals its
data (``encrypt_data``, ``sealing.py``), each under its own associated data (the column and the
task id), and opened where the row becomes a ``Task``; rows stored in clear read as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from tidings.events.env_settings import sealed_json, sealed_text
from tidings.events.model import iso
from tidings.ids import new_id
from tidings.sealing import opened, opened_text, task_aad
from tidings.storage.tx import Tx

RUNNING, WAITING, COMPLETED, ERRORED = "RUNNING", "WAITING", "COMPLETED", "ERRORED"
# The callback URL of a waiting task: the SDK hands it back to Tidings (an event dispatcher, an
# invocation), which reads the run and the task from it (``callbacks.py``).
CALLBACK_PATH = "/api/v1/runs/{run}/tasks/{task}/callback"
# What a callback task's output is when none came in time (v2's words).
CALLBACK_TIMEOUT = "Remote callback timeout - no requests received"


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    id: str
    run_id: str
    idempotency_key: str
    name: str
    display_key: str | None
    status: str
    noop: bool
    attempts: int
    retrying: bool
    parent_id: str | None
    delay_until: int | None
    params: Any
    output: Any
    error: str | None
    started_at: int
    completed_at: int | None
    callback_until: int | None = None
    operation: str | None = None  # a background fetch (``operations.py``)
    callback_secret: str | None = None  # io.waitForRequest's: in its callback URL

    @classmethod
    def from_row(cls, r: tuple[Any, ...]) -> Task:
        return cls(id=r[0], run_id=r[1], idempotency_key=r[2], name=r[3], display_key=r[4],
                   status=r[5], noop=bool(r[6]), attempts=r[7], retrying=bool(r[8]),
                   parent_id=r[9], delay_until=r[10],
                   params=_loads(opened(r[11], task_aad("params", r[0]))),
                   output=_loads(opened(r[12], task_aad("output", r[0]))),
                   error=opened_text(r[13], task_aad("error", r[0])),
                   started_at=r[14], completed_at=r[15],
                   callback_until=r[16], operation=r[17], callback_secret=r[18])

    @property
    def waits_for_callback(self) -> bool:
        return self.status == WAITING and self.callback_until is not None

    def server_json(self, base_url: str = "") -> dict[str, Any]:
        """``ServerTaskSchema``: what the task endpoints answer (``base_url``: the server's, for
        the callback URL of a task that waits for one)."""
        callback = None
        if self.waits_for_callback:
            path = CALLBACK_PATH.format(run=self.run_id, task=self.id)
            if self.callback_secret is not None:
                path += f"/{self.callback_secret}"
            callback = f"{base_url.rstrip('/')}{path}"
        return {
            "id": self.id, "name": self.name, "icon": None, "noop": self.noop,
            "startedAt": iso(self.started_at), "completedAt": iso(self.completed_at),
            "delayUntil": iso(self.delay_until), "status": self.status,
            "description": None, "properties": None, "outputProperties": None,
            "params": self.params, "output": self.output, "context": None,
            "error": self.error, "parentId": self.parent_id, "style": None,
            "operation": self.operation, "callbackUrl": callback, "childExecutionMode": None,
            "idempotencyKey": self.idempotency_key, "attempts": self.attempts,
            "forceYield": False,
        }

    def cached_json(self) -> dict[str, Any]:
        """``CachedTaskSchema``: a completed task as ``EXECUTE_JOB`` hands it to the SDK."""
        return {"id": self.id, "idempotencyKey": self.idempotency_key, "status": self.status,
                "noop": self.noop, "output": self.output, "parentId": self.parent_id}


def _loads(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)


def _dumps(value: Any) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()


def _sealed(tx: Tx, env_id: str, column: str, task_id: str, value: Any) -> str | None:
    """``value`` as JSON, as the task's ``column`` stores it."""
    text = _dumps(value)
    return None if text is None else sealed_json(tx, env_id, text, task_aad(column, task_id))


def _sealed_error(tx: Tx, env_id: str, task_id: str, message: str | None) -> str | None:
    return None if message is None else sealed_text(tx, env_id, message,
                                                    task_aad("error", task_id))


@dataclass(frozen=True, slots=True, kw_only=True)
class NewTask:
    """What a ``runTask`` call asks for (``RunTaskBodyOutputSchema``, the parts kept)."""

    idempotency_key: str
    name: str
    display_key: str | None
    noop: bool
    delay_until: int | None
    parent_id: str | None
    params: Any
    callback_until: int | None = None
    operation: str | None = None
    callback_secret: str | None = None


def of_run(tx: Tx, run_id: str) -> list[Task]:
    return [Task.from_row(r) for r in tx.all("trigger_tasks_of_run", (run_id,))]


def by_id(tx: Tx, task_id: str) -> Task | None:
    row = tx.one("trigger_task_by_id", (task_id,))
    return Task.from_row(row) if row else None


def start(tx: Tx, run_id: str, new: NewTask, now: int, *, env_id: str) -> Task:
    """The task for this key: created now, or found again (a retried one starting its next
    attempt). ``env_id``: the run's environment (its data is sealed for it)."""
    found = tx.one("trigger_task_by_key", (run_id, new.idempotency_key))
    if found is not None:
        task = Task.from_row(found)
        if task.retrying and tx.run("trigger_task_attempt", (task.id,)):
            task = by_id(tx, task.id) or task
        return task
    waits = new.delay_until is not None and new.delay_until > now
    if new.callback_until is not None or waits:
        status, completed = WAITING, None
    elif new.noop:
        status, completed = COMPLETED, now
    else:
        status, completed = RUNNING, None
    task_id = new_id(now)
    params = _sealed(tx, env_id, "params", task_id, new.params)
    tx.run("trigger_task_insert", (task_id, run_id, new.idempotency_key, new.name,
                                   new.display_key, status, int(new.noop), new.parent_id,
                                   new.delay_until, params, None, now, completed,
                                   new.callback_until, new.operation,
                                   new.callback_secret))
    again = tx.one("trigger_task_by_key", (run_id, new.idempotency_key))
    assert again is not None
    return Task.from_row(again)


def complete(tx: Tx, task_id: str, output: Any, now: int, *, env_id: str,
             run_id: str | None = None) -> Task | None:
    """Complete the task with ``output`` (unless it has ended); the task. ``run_id``: complete
    it only if it is that run's (a task named by the job, not found in the run's)."""
    sealed = _sealed(tx, env_id, "output", task_id, output)
    if run_id is None:
        tx.run("trigger_task_complete", (sealed, now, task_id))
    else:
        tx.run("trigger_task_complete_of_run", (sealed, now, task_id, run_id))
    return by_id(tx, task_id)


def fail(tx: Tx, task_id: str, error: dict[str, Any], now: int, *, env_id: str) -> Task | None:
    message = _sealed_error(tx, env_id, task_id, str(error.get("message", "")))
    tx.run("trigger_task_fail", (message, _sealed(tx, env_id, "output", task_id, error), now,
                                 task_id))
    return by_id(tx, task_id)


def later(tx: Tx, task_id: str, at: int, why: str, *, env_id: str) -> None:
    """A background fetch's attempt did not settle it: the next one, not before ``at``."""
    tx.run("trigger_task_later", (at, _sealed_error(tx, env_id, task_id, why),
                                  task_id))


def retry(tx: Tx, task_id: str, error: Any, *, env_id: str) -> None:
    """``RETRY_WITH_TASK``: the task's attempt failed; the next ``runTask`` starts another."""
    text = _dumps(error)
    message = _sealed_error(tx, env_id, task_id, text)
    tx.run("trigger_task_retry", (message, task_id))


def waited(tx: Tx, run_id: str, now: int) -> None:
    """Complete the run's waits whose time has come (``io.wait``): the run is called again
    because its sleep ended."""
    for task in of_run(tx, run_id):
        if (task.status == WAITING and task.callback_until is None
                and task.delay_until is not None and task.delay_until <= now):
            tx.run("trigger_task_complete", (None, now, task.id))


def timed_out(tx: Tx, task_id: str, now: int, *, env_id: str) -> None:
    """A callback that did not come before its timeout: the task errs with v2's words, which
    the SDK throws when the job runs again."""
    tx.run("trigger_callback_fail", (_sealed_error(tx, env_id, task_id, CALLBACK_TIMEOUT),
                                     _sealed(tx, env_id, "output", task_id, CALLBACK_TIMEOUT),
                                     now, task_id))
