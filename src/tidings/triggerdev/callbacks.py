"""Tasks that wait for a callback: ``io.waitForEvent`` and ``invokeAndWaitForCompletion``.

The SDK creates such a task with ``callback: {enabled, timeoutInSeconds}``; Tidings answers it
``WAITING`` with a callback URL naming the run and the task (``tasks.CALLBACK_PATH``), and the
SDK hands that URL back to Tidings, never to anyone else:

- ``POST /api/v1/event-dispatchers/ephemeral`` (``waitForEvent``): the run gets a pause
  waiting for the event (the task is its step; one per name when it names several, the first
  to match ending the wait), with the dispatcher's name, ``source``,
  ``filter``, ``contextFilter`` and ``accountId`` as an event-filter condition
  (``functions/filters.py``), until the task's timeout;
- ``POST /api/v1/jobs/{id}/invoke`` with ``options.callbackUrl``: the child run is started
  with the task as its parent step, and the parent gets a pause on the child.

``io.waitForRequest``'s task is a pause of its run from the start (``wait_for_request``); its
callback URL (the path above and a secret) is for anyone the job gives it to: a POST of JSON
to it completes the task with that body (``request_came``).

Both are written while the job still executes (the SDK then answers ``RESUME_WITH_TASK`` and
the run parks on the pause). The pause's result — the event, the child's end, or nothing by
the timeout — completes the task when the run is called next (``settle_callbacks``): with the
event as v2 gives it (``id``, ``name``, ``source``, ``payload``, ``timestamp``, ``context``,
``accountId``), with the child's run notification (``ok``, ``status``, ``output`` or
``error``), or as v2's "Remote callback timeout" error, which the SDK throws into the job.
"""

from __future__ import annotations

import hmac
import re
from typing import Any
from urllib.parse import urlsplit

from tidings.errors import RequestRejected
from tidings.events.model import iso
from tidings.functions.filters import filter_condition
from tidings.ids import floor_id
from tidings.router.route import look_back
from tidings.runs import journal, store
from tidings.runs.model import CANCELLED, COMPLETED, TERMINAL, Run, StepRow
from tidings.storage.tx import Tx
from tidings.triggerdev import tasks
from tidings.triggerdev.wire import TRIGGER_QUEUE, run_status

ULID = r"[0-9A-HJKMNP-TV-Z]{26}"
CALLBACK_RE = re.compile(tasks.CALLBACK_PATH.format(run=f"(?P<run>{ULID})",
                                                    task=f"(?P<task>{ULID})"))
V2_DEFAULT_SOURCE = "trigger.dev"


def callback_of(url: Any, field: str) -> tuple[str, str]:
    """The run and task ids of a callback URL Tidings gave out (a 400 naming ``field``
    otherwise)."""
    found = CALLBACK_RE.fullmatch(urlsplit(url).path) if isinstance(url, str) else None
    if found is None:
        raise RequestRejected(f"{field}: the callback URL of a waiting task, as Tidings gave "
                              f"it (…{tasks.CALLBACK_PATH.format(run='RUN', task='TASK')})")
    return found["run"], found["task"]


def waiting_task(tx: Tx, env_id: str, run_id: str, task_id: str, field: str) -> tuple[Run,
                                                                                     tasks.Task]:
    """The v2 run of the environment and its task waiting for a callback; 404 when either is
    not found (or the task is another run's), 409 when the run ended or the task waits no more."""
    run = store.get_run(tx, run_id)
    if run is None or run.env_id != env_id or run.queue != TRIGGER_QUEUE:
        raise RequestRejected(f"{field}: run {run_id} not found", status=404)
    task = tasks.by_id(tx, task_id)
    if task is None or task.run_id != run.id:
        raise RequestRejected(f"{field}: task {task_id} not found in run {run_id}", status=404)
    if task.callback_until is None:
        raise RequestRejected(f"{field}: task {task_id} does not wait for a callback",
                              status=409)
    if run.status in TERMINAL:
        raise RequestRejected(f"{field}: run {run_id} has ended ({run.status})", status=409)
    return run, task


def wait_for_event(tx: Tx, *, env_id: str, url: str, names: list[str], spec: dict[str, Any],
                   now: int) -> str:
    """Register ``waitForEvent``'s dispatcher: the run's pause on the event (once: the SDK
    registers again when the job is replayed before the event came). Its id: the task's.
    Waiting on several names, the run has a pause per name, any of which ends the wait
    (``journal.ANY_OF``)."""
    run_id, task_id = callback_of(url, "url")
    run, task = waiting_task(tx, env_id, run_id, task_id, "url")
    if task.status != tasks.WAITING:
        return task.id  # the event came already
    source = spec.get("source")
    if source == V2_DEFAULT_SOURCE:
        spec = {**spec, "source": "tidings"}
    condition = filter_condition(spec)
    step_name = task.display_key or task.name
    assert task.callback_until is not None
    if not _paused(tx, run.id, task.id) and not _resolved(tx, run.id, task.id):
        since = floor_id(now)
        steps = ([task.id] if len(names) == 1 else
                 [f"{task.id}{journal.ANY_OF}{i}" for i in range(len(names))])
        for step, name in zip(steps, names, strict=True):
            journal.pause(tx, run, step=step, name=step_name, kind="wait",
                          until=task.callback_until, event_name=name, condition=condition,
                          since_id=since)
        for step, name in zip(steps, names, strict=True):
            look_back(tx, env_id, run.id, step, step_name, name, condition, {}, since, now)
    return task.id


def _paused(tx: Tx, run_id: str, step: str) -> bool:
    """Whether the run has a pause for the step (or one of its group)."""
    return any(row[0] == step or row[0].startswith(step + journal.ANY_OF)
               for row in tx.all("pauses_of_run", (run_id,)))


def wait_for_request(tx: Tx, run: Run, task: tasks.Task) -> None:
    """``io.waitForRequest``: the run pauses on the task until its callback URL is POSTed to
    (``request_came``) or its timeout passes (once: the SDK creates the task again on replay)."""
    if task.status != tasks.WAITING or task.callback_until is None or run.status in TERMINAL:
        return
    if _resolved(tx, run.id, task.id):
        return
    journal.pause(tx, run, step=task.id, name=task.display_key or task.name, kind="wait",
                  until=task.callback_until)


def request_came(tx: Tx, *, run_id: str, task_id: str, secret: str, body: Any,
                 now: int) -> None:
    """A POST to a ``waitForRequest`` callback URL: its JSON body completes the task when the
    run is called next. 404 unless the run, the task and the secret are as Tidings gave them
    out; 409 when the run ended or the task waits no more."""
    run = store.get_run(tx, run_id)
    task = tasks.by_id(tx, task_id)
    if (run is None or run.queue != TRIGGER_QUEUE or task is None or task.run_id != run.id
            or task.callback_secret is None
            or not hmac.compare_digest(task.callback_secret.encode(), secret.encode())):
        raise RequestRejected("callback URL not found", status=404)
    if run.status in TERMINAL:
        raise RequestRejected(f"run {run_id} has ended ({run.status})", status=409)
    if task.status != tasks.WAITING or not journal.resolve_pause(
            tx, run.id, task.id, task.display_key or task.name, body, now, kind="wait",
            env_id=run.env_id):
        raise RequestRejected(f"task {task_id} waits for no request any more (it came, or "
                              "its timeout passed)", status=409)
    store.notify(tx, TRIGGER_QUEUE)


def _resolved(tx: Tx, run_id: str, step: str) -> bool:
    return any(s.step == step for s in journal.steps_of(tx, run_id))


def wait_for_child(tx: Tx, parent: Run, task: tasks.Task, child_id: str, now: int) -> None:
    """``invokeAndWaitForCompletion``: the parent pauses on its child (already started, with the
    task as its parent step); a child that ended already settles the pause at once."""
    assert task.callback_until is not None
    if _resolved(tx, parent.id, task.id):
        return
    journal.pause(tx, parent, step=task.id, name=task.display_key or task.name, kind="invoke",
                  until=task.callback_until, correlation=child_id)
    child = store.get_run(tx, child_id)
    if child is not None and child.status in TERMINAL:
        journal.settle_parent(tx, child.id, child.status, child.output, child.error, now)


def settle_callbacks(tx: Tx, run: Run, recorded: list[StepRow], notify: Any,
                     now: int) -> None:
    """Complete the run's tasks whose callback came (their pause's step is recorded), and fail
    those whose timeout passed. ``notify(child run) -> dict``: an invoked run's notification."""
    steps = {s.step: s for s in recorded}
    for task in tasks.of_run(tx, run.id):
        if not task.waits_for_callback:
            continue
        step = steps.get(task.id)
        if step is None:
            assert task.callback_until is not None
            if task.callback_until <= now and not _paused(tx, run.id, task.id):
                # never registered, and too late now
                tasks.timed_out(tx, task.id, now, env_id=run.env_id)
            continue
        if step.kind == "invoke":
            if step.output == journal.INVOKE_TIMEOUT:
                tasks.timed_out(tx, task.id, now, env_id=run.env_id)
                continue
            child_id = journal.invoked_runs(tx, run.id).get(task.id)
            child = store.get_run(tx, child_id) if child_id else None
            if child is None:
                tasks.timed_out(tx, task.id, now, env_id=run.env_id)
                continue
            tasks.complete(tx, task.id, notify(tx, child), now, env_id=run.env_id)
        elif step.output is None:
            tasks.timed_out(tx, task.id, now, env_id=run.env_id)
        elif task.callback_secret is not None:  # io.waitForRequest: the request's body
            tasks.complete(tx, task.id, step.output, now, env_id=run.env_id)
        else:
            tasks.complete(tx, task.id, event_as_v2(step.output), now, env_id=run.env_id)


def event_as_v2(event: dict[str, Any]) -> dict[str, Any]:
    """The event a wait ended with, as ``waitForEvent`` returns it."""
    source = event.get("source")
    found: dict[str, Any] = {
        "id": event.get("id"), "name": event.get("name"),
        "source": V2_DEFAULT_SOURCE if source in (None, "tidings") else source,
        "payload": event.get("data"), "timestamp": iso(event.get("ts")),
        "context": event.get("context"),
    }
    if event.get("account_id") is not None:
        found["accountId"] = event["account_id"]
    return found


def run_notification(child: Run, *, job: dict[str, Any], environment: dict[str, Any],
                     organization: dict[str, Any], project: dict[str, Any],
                     invocation: dict[str, Any],
                     statuses: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``invokeAndWaitForCompletion`` returns: the child run's end, v2's notification."""
    ended = child.ended_at or child.progress_at
    began = child.started_at or child.created_at
    common: dict[str, Any] = {
        "id": child.id, "statuses": statuses, "startedAt": iso(began), "updatedAt": iso(ended),
        "completedAt": iso(ended), "isTest": False,
        "executionDurationInMs": max(0, ended - began), "executionCount": 1,
        "job": job, "environment": environment, "organization": organization,
        "project": project, "invocation": invocation,
    }
    if child.status == COMPLETED:
        return {**common, "ok": True, "status": "SUCCESS", "output": child.output}
    status = "CANCELED" if child.status == CANCELLED else run_status(child)
    if status not in ("CANCELED", "INVALID_PAYLOAD"):
        status = "FAILURE"
    return {**common, "ok": False, "status": status, "error": child.error}
