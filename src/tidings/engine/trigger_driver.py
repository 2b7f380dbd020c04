"""The v2 driver: runs Jobs of Trigger.dev v2 apps on the executor of queue ``trigger``.

One call ``POST``s ``x-trigger-action: EXECUTE_JOB`` to the app with the run's event and its
completed tasks (``tasks.py``); while the job runs, the SDK creates and completes tasks through
the run API. The job's answer becomes the outcome:

- ``SUCCESS`` → the run completes with the output; ``ERROR`` → it fails (v2 retries tasks, not
  jobs); ``INVALID_PAYLOAD`` → it fails as ``InvalidPayload`` with the schema's reasons;
- ``RESUME_WITH_TASK`` on an ``io.wait`` → the run sleeps until the task's ``delayUntil``; on a
  task waiting for a callback → the run parks on the pause its callback put there
  (``triggerdev/callbacks.py``), whose result completes the task before the next execution;
- ``RETRY_WITH_TASK`` → the task is marked for its next attempt, the run is due at ``retryAt``;
- ``RESUME_WITH_TASK`` on a background fetch (``io.backgroundFetch``…) → Tidings makes the
  request (``triggerdev/operations.py``) and executes the job again once it settled, or the
  run is due when the next attempt may start;
- ``RESUME_WITH_PARALLEL_TASK`` (``io.parallel``) → each unfinished child as if it had been
  answered alone, the run waiting for all of them side by side;
- ``YIELD_EXECUTION``, ``AUTO_YIELD_*`` → the job is executed again at once (the completed task
  of ``AUTO_YIELD_EXECUTION_WITH_COMPLETED_TASK`` recorded first);
- ``CANCELED`` → the run was cancelled meanwhile: nothing more to record.

Anything else (another status, an answer that is not JSON, a 4xx) fails the run saying what
came back; a transport failure or a 5xx is retried with the function's retries. Every task the
run has finished is mirrored as one of its steps, so the runs API shows tasks as steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from functools import partial
from typing import Any, Literal

import httpx
import msgspec

from tidings.calls.host import Host
from tidings.calls.outcomes import Blocked, Outcome, RetryStep, RunDone, RunFailed, Sleep
from tidings.core import Core
from tidings.engine.http_client import AppCaller, CallFailed, HttpxClient
from tidings.engine.scheduler import TIMER
from tidings.events.model import iso
from tidings.functions import registration
from tidings.functions.model import FunctionRow
from tidings.ids import now_ms
from tidings.keys import get_env
from tidings.netguard import Policy
from tidings.netguard import transport as guarded_transport
from tidings.runs.model import Run, StepRow
from tidings.sealing import context_aad, event_aad, opened
from tidings.storage.tx import Tx
from tidings.triggerdev import callbacks, operations, statuses, tasks
from tidings.triggerdev.keys import TriggerKeys
from tidings.triggerdev.wire import INVALID_PAYLOAD, LAZY_LOADED_CACHED_TASKS, TRIGGER_QUEUE

log = logging.getLogger("tidings.engine.trigger")
SCHEDULED = "trigger.scheduled"  # what v2 names it
MAX_CHUNKS = 50  # executions of one call (yields); then the run is due again
MAX_REASON = 300
ORGANIZATION = {"id": "tidings", "title": "Tidings", "slug": "tidings"}


def _failed(name: str, message: str, *, retriable: bool = False) -> RunFailed:
    return RunFailed({"name": name, "message": message[:MAX_REASON * 4]}, retriable=retriable)


def _notification(tx: Tx, child: Run, *, environment: dict[str, Any]) -> dict[str, Any]:
    """An invoked Job's run, as ``invokeAndWaitForCompletion`` gives it to its parent."""
    fn = registration.function_by_id(tx, child.function_id)
    config = fn.config if fn is not None else {}
    app = fn.app_id if fn is not None else ""
    row = tx.one("event_for_routing", (child.event_id,))
    payload = _json(opened(row[3], event_aad(row[0]))) if row else None
    context = _json(opened(row[8], context_aad(row[0]))) if row and row[8] is not None else None
    invocation = {"id": child.event_id, "context": context, "timestamp": iso(row[5] if row else
                                                                             child.created_at),
                  "payload": payload}
    return callbacks.run_notification(
        child, job={"id": config.get("job", {}).get("id"),
                    "version": config.get("job", {}).get("version")},
        environment=environment, organization=ORGANIZATION,
        project={"id": app, "name": app, "slug": app}, invocation=invocation,
        statuses=statuses.of_run(tx, child.id))


def _settles(task: tasks.Task, now: int) -> bool:
    """Whether a task changes before the job executes (``_prepare``): a wait that ended, or a
    task waiting for a callback (which may have come)."""
    if task.waits_for_callback:
        return True
    return (task.status == tasks.WAITING and task.delay_until is not None
            and task.delay_until <= now)


async def _close(client: AppCaller | None, fetcher: httpx.AsyncClient | None) -> None:
    if client is not None:
        await client.aclose()
    if fetcher is not None:
        with contextlib.suppress(Exception):
            await fetcher.aclose()


def _resumed(found: tasks.Task) -> Sleep | Literal[True] | RunFailed | None:
    """What ``RESUME_WITH_TASK`` on ``found`` waits for: its sleep (``io.wait``); None for a
    callback, whose pause was written when the SDK registered it (``callbacks.py``); True when
    the task finished meanwhile (execute again)."""
    if found.waits_for_callback:
        return None
    if found.status == tasks.WAITING and found.delay_until is not None:
        return Sleep(step=found.id, name=found.display_key or found.name,
                     until=found.delay_until)
    if found.status == tasks.COMPLETED:
        return True
    return _failed("ProtocolError", f"RESUME_WITH_TASK on task {found.id} ({found.status}), "
                   "which does not wait")


def _json(value: Any) -> Any:
    return msgspec.json.decode(value) if isinstance(value, (str, bytes)) else value


def _millis(text: Any) -> int | None:
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return int(moment.timestamp() * 1000) if moment.tzinfo is not None else None


class TriggerDriver:
    def __init__(self, core: Core, keys: TriggerKeys, *,
                 client: AppCaller | None = None, timeout: float = 300.0) -> None:
        self._core = core
        self._keys = keys
        self._client = client
        self._timeout = timeout
        self._envs: dict[str, tuple[str, str]] = {}
        self._closing: asyncio.Task[None] | None = None
        self._fetcher: httpx.AsyncClient | None = None

    @property
    def http(self) -> AppCaller:
        """httpx, guarded as the settings say (the HTTP driver's own ``AppClient`` stalled
        runs under P11's load: left for later)."""
        if self._client is None:
            guard = Policy.from_settings(self._core.settings)
            self._client = HttpxClient(timeout=self._timeout, guard=guard)
        return self._client

    @property
    def fetcher(self) -> httpx.AsyncClient:
        """What background fetches go through (``io.backgroundFetch``), guarded as app calls
        are."""
        if self._fetcher is None:
            guard = Policy.from_settings(self._core.settings)
            self._fetcher = httpx.AsyncClient(transport=guarded_transport(guard))
        return self._fetcher

    def serves(self, fn: FunctionRow) -> bool:
        return fn.queue == TRIGGER_QUEUE

    def close(self) -> None:
        client, self._client = self._client, None
        fetcher, self._fetcher = self._fetcher, None
        if client is not None or fetcher is not None:
            with contextlib.suppress(RuntimeError):  # no loop: nothing is open
                self._closing = asyncio.get_running_loop().create_task(
                    _close(client, fetcher))

    async def call(self, fn: FunctionRow, host: Host, *, run: Run, event: dict[str, Any],
                   events: list[dict[str, Any]]) -> Outcome | None:
        storage = self._core.storage
        slug, kind = await self._env(run.env_id)
        environment = {"id": run.env_id, "slug": slug, "type": kind}
        known = await storage.read(partial(tasks.of_run, run_id=run.id))
        now = host.now()
        if any(_settles(task, now) for task in known):
            known = await storage.write(partial(self._prepare, run=run, recorded=host.recorded,
                                                environment=environment, now=now))
        key = await self._keys.secret_for(run.env_id, fn.config.get("key_id"))
        if key is None or fn.url is None:
            return _failed("NoTriggerKey", "the environment has no trigger key to present to "
                           "the app (tidings keys create --kind trigger)")
        yielded: list[str] = []
        outcome: Outcome | None = None
        for chunk in range(MAX_CHUNKS):
            if chunk:
                known = await storage.read(partial(tasks.of_run, run_id=run.id))
            body = await self._body(fn, run, event, known, yielded)
            outcome, again = await self._execute(fn, run, key, body, yielded)
            if not again:
                break
        else:
            outcome = RetryStep(step="yield", retry_at=host.now())
        await self._mirror(host, run)
        return outcome

    @staticmethod
    def _prepare(tx: Tx, *, run: Run, recorded: list[StepRow], environment: dict[str, Any],
                 now: int) -> list[tasks.Task]:
        """Before the job executes: its waits that ended complete, and so do its tasks whose
        callback came (or fail, when it did not come in time); the run's tasks then."""
        tasks.waited(tx, run.id, now)
        callbacks.settle_callbacks(tx, run, recorded, partial(
            _notification, environment=environment), now)
        return tasks.of_run(tx, run.id)

    async def _execute(self, fn: FunctionRow, run: Run, key: str, body: bytes,
                       yielded: list[str]) -> tuple[Outcome | None, bool]:
        """One ``EXECUTE_JOB``: the outcome, or True to execute again at once."""
        assert fn.url is not None
        headers = {"content-type": "application/json", "x-trigger-api-key": key,
                   "x-trigger-action": "EXECUTE_JOB",
                   "x-trigger-version": LAZY_LOADED_CACHED_TASKS}
        try:
            reply = await self.http.post(fn.url, body, headers)
        except CallFailed as exc:
            log.warning("run %s: cannot reach the app at %s: %s", run.id, fn.url, exc)
            return _failed("AppUnreachable", f"cannot reach the app: {exc}",
                           retriable=True), False
        try:
            answer = msgspec.json.decode(reply.body)
        except msgspec.DecodeError:
            answer = None
        if reply.status != 200 or not isinstance(answer, dict):
            message = answer.get("message") if isinstance(answer, dict) else None
            text = f"the app answered {reply.status}" + (f": {message}" if message else "")
            if reply.status == 200:
                text = "the app's answer to EXECUTE_JOB is not a JSON object"
            log.warning("run %s: %s", run.id, text)
            return _failed("AppError", text, retriable=reply.status >= 500), False
        return await self._answered(run, answer, yielded)

    async def _answered(self, run: Run, answer: dict[str, Any],
                        yielded: list[str]) -> tuple[Outcome | None, bool]:
        status = answer.get("status")
        storage = self._core.storage
        if status == "SUCCESS":
            return RunDone(msgspec.json.encode(answer.get("output"))), False
        if status == "ERROR":
            error = answer.get("error")
            if not isinstance(error, dict) or not isinstance(error.get("message"), str):
                error = {"name": "Error", "message": str(error)}
            return RunFailed(error, retriable=False), False
        if status == "INVALID_PAYLOAD":
            reasons = "; ".join(f"{'.'.join(map(str, e.get('path', [])))}: {e.get('message')}"
                                for e in answer.get("errors", []) if isinstance(e, dict))
            return RunFailed({"name": INVALID_PAYLOAD, "message": f"invalid payload: {reasons}"},
                             retriable=False, reason=f"invalid payload: {reasons}"), False
        if status in ("YIELD_EXECUTION", "AUTO_YIELD_EXECUTION"):
            if status == "YIELD_EXECUTION":
                yielded.append(str(answer.get("key")))
            return None, True
        if status == "AUTO_YIELD_EXECUTION_WITH_COMPLETED_TASK":
            output = answer.get("output")
            value = msgspec.json.decode(output) if isinstance(output, str) else None
            task_id = str(answer.get("id", ""))
            done = await storage.write(partial(tasks.complete, task_id=task_id, output=value,
                                               now=self._now(), env_id=run.env_id,
                                               run_id=run.id))
            if done is None or done.run_id != run.id:
                return _failed("ProtocolError", f"{status} names a task this run does not "
                               f"have: {task_id!r}"), False
            return None, True
        if status == "CANCELED":
            log.info("run %s: the job stopped: the run is cancelled", run.id)
            return None, False
        if status not in ("RESUME_WITH_TASK", "RETRY_WITH_TASK", "RESUME_WITH_PARALLEL_TASK"):
            if status == "UNRESOLVED_AUTH_ERROR":
                return _failed("Unsupported", "integrations are not supported by Tidings"), False
            shown = repr(status)[:100]
            log.warning("run %s: the job answered an unknown status %s", run.id, shown)
            return _failed("ProtocolError", f"the job answered an unknown status {shown}"), False
        found = await self._task_of(run, answer, status)
        if isinstance(found, RunFailed):
            return found, False
        if status == "RESUME_WITH_PARALLEL_TASK":
            return await self._parallel(run, answer.get("childErrors"))
        if status == "RETRY_WITH_TASK":
            at = await self._retry(run, found, answer)
            return RetryStep(step=found.id, retry_at=at), False
        if found.operation is not None and found.status == tasks.RUNNING:
            next_at = await self._operate(run, found)
            if next_at is None:
                return None, True
            return RetryStep(step=found.id, retry_at=next_at), False
        resumed = _resumed(found)
        if isinstance(resumed, RunFailed):
            return resumed, False
        if resumed is True:
            return None, True
        return Blocked(() if resumed is None else (resumed,)), False

    async def _task_of(self, run: Run, answer: dict[str, Any],
                       status: str) -> tasks.Task | RunFailed:
        """The task an answer names, which must be one of the run's."""
        named = answer.get("task")
        task_id = str(named.get("id", "")) if isinstance(named, dict) else ""
        found = (await self._core.storage.read(partial(tasks.by_id, task_id=task_id))
                 if task_id else None)
        if found is None or found.run_id != run.id:
            return _failed("ProtocolError", f"{status} names a task this run does not "
                           f"have: {task_id!r}")
        return found

    async def _retry(self, run: Run, found: tasks.Task, answer: dict[str, Any]) -> int:
        """``RETRY_WITH_TASK``: the task is marked for its next attempt, due at ``retryAt``."""
        await self._core.storage.write(partial(tasks.retry, task_id=found.id,
                                               error=answer.get("error"), env_id=run.env_id))
        return _millis(answer.get("retryAt")) or self._now()

    async def _operate(self, run: Run, found: tasks.Task) -> int | None:
        """A background fetch the job waits for (``triggerdev/operations.py``): one attempt,
        unless its next may not start yet. None when the task settled (the job executes again
        and reads it from its cache); otherwise when to try again."""
        now = self._now()
        if found.delay_until is not None and found.delay_until > now:
            return found.delay_until
        assert found.operation is not None
        result = await operations.attempt(self.fetcher, found.operation, found.params,
                                          found.attempts - 1, found.started_at, now)
        storage = self._core.storage
        if isinstance(result, operations.Later):
            log.info("run %s: background fetch task %s: %s; next attempt at %s", run.id,
                     found.id, result.why, iso(result.at))
            await storage.write(partial(tasks.later, task_id=found.id, at=result.at,
                                        why=result.why, env_id=run.env_id))
            return result.at
        if result.error is not None:
            log.warning("run %s: background fetch task %s failed: %s", run.id, found.id,
                        result.error["message"])
            await storage.write(partial(tasks.fail, task_id=found.id, error=result.error,
                                        now=self._now(), env_id=run.env_id))
        else:
            await storage.write(partial(tasks.complete, task_id=found.id,
                                        output=result.output, now=self._now(),
                                        env_id=run.env_id))
        return None

    async def _parallel(self, run: Run, children: Any) -> tuple[Outcome | None, bool]:
        """``RESUME_WITH_PARALLEL_TASK`` (``io.parallel``, ``batchInvokeAndWaitForCompletion``):
        the children that did not finish, each answered as it would have been alone. The run
        waits for all of them side by side: its sleeps and callbacks are pauses (the first to
        end calls the job again, which answers again for those left); a retried child makes
        the run due at its ``retryAt`` (or sooner, when a sleep ends first); a yield executes
        the job again at once. A cancelled run stops; a child's error fails the run."""
        if not isinstance(children, list) or not children or not all(
                isinstance(child, dict) for child in children):
            return _failed("ProtocolError", "RESUME_WITH_PARALLEL_TASK: childErrors must be "
                           "a list of the children's answers"), False
        sleeps: list[Sleep] = []
        retries: list[tuple[str, int]] = []
        again = False
        for child in children:
            status = child.get("status")
            if status == "CANCELED":
                return None, False
            if status in ("YIELD_EXECUTION", "AUTO_YIELD_EXECUTION"):
                again = True
                continue
            if status == "ERROR":
                error = child.get("error")
                if not isinstance(error, dict) or not isinstance(error.get("message"), str):
                    error = {"name": "Error", "message": str(error)}
                return RunFailed(error, retriable=False), False
            if status not in ("RESUME_WITH_TASK", "RETRY_WITH_TASK"):
                shown = repr(status)[:100]
                log.warning("run %s: io.parallel answered an unknown child status %s", run.id,
                            shown)
                return _failed("ProtocolError", "RESUME_WITH_PARALLEL_TASK: a child answered "
                               f"an unknown status {shown}"), False
            found = await self._task_of(run, child, status)
            if isinstance(found, RunFailed):
                return found, False
            if status == "RETRY_WITH_TASK":
                retries.append((found.id, await self._retry(run, found, child)))
                continue
            if found.operation is not None and found.status == tasks.RUNNING:
                next_at = await self._operate(run, found)
                if next_at is None:
                    again = True
                else:
                    retries.append((found.id, next_at))
                continue
            resumed = _resumed(found)
            if isinstance(resumed, RunFailed):
                return resumed, False
            if resumed is True:
                again = True
            elif resumed is not None:
                sleeps.append(resumed)
        if retries:
            step, at = min(retries, key=lambda retry: retry[1])
            return RetryStep(step=step, retry_at=min([at, *(s.until for s in sleeps)])), False
        if again:
            return None, True
        return Blocked(tuple(sleeps)), False

    def _now(self) -> int:
        return now_ms()

    async def _body(self, fn: FunctionRow, run: Run, event: dict[str, Any],
                    known: list[tasks.Task], yielded: list[str]) -> bytes:
        slug, kind = await self._env(run.env_id)
        config = fn.config
        name, payload = event.get("name"), event.get("data", {})
        if config.get("scheduled") and name == TIMER:  # a cronTrigger / intervalTrigger tick
            name, payload = SCHEDULED, {"ts": iso(event.get("ts") or run.created_at)}
        body = {
            "event": {"id": event.get("id"), "name": name,
                      "payload": payload, "context": event.get("context"),
                      "timestamp": iso(event.get("ts") or run.created_at),
                      "deliverAt": None, "deliveredAt": None, "cancelledAt": None},
            "job": {"id": config.get("job", {}).get("id"),
                    "version": config.get("job", {}).get("version")},
            "run": {"id": run.id, "isTest": False, "isRetry": False,
                    "startedAt": iso(run.started_at or run.created_at)},
            "environment": {"id": run.env_id, "slug": slug, "type": kind},
            "organization": ORGANIZATION,
            "project": {"id": fn.app_id, "name": fn.app_id, "slug": fn.app_id},
            "tasks": [t.cached_json() for t in known if t.status == tasks.COMPLETED],
            "yieldedExecutions": yielded,
        }
        return msgspec.json.encode(body)

    async def _env(self, env_id: str) -> tuple[str, str]:
        found = self._envs.get(env_id)
        if found is None:
            env = await self._core.storage.read(lambda tx: get_env(tx, env_id))
            name = env.name if env is not None else env_id
            kind = "DEVELOPMENT" if self._core.settings.dev else (
                "STAGING" if "stag" in name else "PRODUCTION")
            found = self._envs[env_id] = (name, kind)
        return found

    async def _mirror(self, host: Host, run: Run) -> None:
        """The run's finished tasks not yet among its steps become steps."""
        known = await self._core.storage.read(partial(tasks.of_run, run_id=run.id))
        recorded = {step.step for step in host.recorded}
        for task in known:
            if task.id in recorded:
                continue
            name = task.display_key or task.name
            kind = "sleep" if task.delay_until is not None and not task.operation else "run"
            if task.status == tasks.COMPLETED:
                await host.completed(task.id, name, msgspec.json.encode({"data": task.output}),
                                     task.started_at, kind=kind)
