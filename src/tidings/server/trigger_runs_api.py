"""What a v2 app calls while its job executes: the tasks of the run
(``/api/v1/runs/{id}/tasks``, ``…/complete``, ``…/fail``) and the key-value store
(``/api/v1/store/{key}``), ``waitForEvent``'s event dispatchers and ``invokeJob`` (with a
callback: ``triggerdev/callbacks.py``), with the same ``tr_`` keys as the event API
(``trigger_api.py``).

A run is answered only to its own environment's keys, and a task only under its own run. A
call about a cancelled run gets its task back ``CANCELED``: the SDK then stops the job.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from functools import partial
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.apps.config import is_http_url
from tidings.apps.sync import AppSync
from tidings.core import Core
from tidings.errors import ConfigError, RequestRejected
from tidings.events.env_settings import sealed_text
from tidings.events.parse import SEAL_MARK
from tidings.functions.filters import check_filter
from tidings.ids import new_id, now_ms
from tidings.json_input import decode_json
from tidings.runs import store
from tidings.runs.model import CANCELLED, Run
from tidings.sealing import opened_text, store_aad
from tidings.server.http import read_body
from tidings.server.requests import ULID_RE, check_params, json_response
from tidings.storage.base import Environment
from tidings.triggerdev import callbacks, invoke, operations, statuses, tasks
from tidings.triggerdev.keys import TriggerKeys
from tidings.triggerdev.wire import TRIGGER_QUEUE

SERIALIZED_OUTPUT = "2023-11-01"  # Trigger-Version: the task's output comes as JSON text
MAX_KEY_CHARS = 512
MAX_STORE_BYTES = 256 * 1024
WAIT_FOR_REQUEST = "Wait for Request"  # the name io.waitForRequest gives its task
SECRET_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")  # a waitForRequest callback URL's secret
MAX_WAIT_NAMES = 25  # the event names one waitForEvent may name
MAX_CALLBACK_SECONDS = 365 * 24 * 3600  # v2's bound on a callback's timeout
DISPATCHER_FIELDS = {"url", "name", "source", "filter", "contextFilter", "accountId",
                     "timeoutInSeconds"}


class TriggerRunsAPI:
    def __init__(self, core: Core, keys: TriggerKeys, sync: AppSync) -> None:
        self.core = core
        self.keys = keys
        self.sync = sync

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/runs/{run_id}/tasks", self.run_task, methods=["POST"]),
            Route("/api/v1/runs/{run_id}/tasks/{task_id}/complete", self.complete_task,
                  methods=["POST"]),
            Route("/api/v1/runs/{run_id}/tasks/{task_id}/fail", self.fail_task,
                  methods=["POST"]),
            Route("/api/v1/runs/{run_id}/tasks/{task_id}/callback/{secret}", self.callback,
                  methods=["POST"]),
            Route("/api/v1/store/{key:path}", self.store,
                  methods=["GET", "PUT", "DELETE", "HEAD"]),
            Route("/api/v1/endpoints", self.register_endpoint, methods=["POST"]),
            Route("/api/v1/jobs/{job_id}/invoke", self.invoke_job, methods=["POST"]),
            Route("/api/v1/event-dispatchers/ephemeral", self.event_dispatcher,
                  methods=["POST"]),
            Route("/api/v1/runs/{run_id}/statuses/{status_id:path}", self.update_status,
                  methods=["PUT"]),
        ]

    async def invoke_job(self, request: Request) -> Response:
        """``invokeJob``: start a run of a Job with a payload; ``{"id": run id}``."""
        check_params(request, set())
        env = await self._env(request)
        job_id = _text_param(request, "job_id", "job id", b"/api/v1/jobs/")
        body = await self._body(request)
        unknown = sorted(set(body) - {"payload", "context", "options"})
        if unknown:
            raise RequestRejected(f"unknown field(s): {', '.join(unknown)}; expected payload, "
                                  "context, options")
        payload = body.get("payload")
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise RequestRejected("payload: must be a JSON object (Tidings keeps payloads as "
                                  "objects)")
        options = body.get("options") or {}
        if not isinstance(options, dict) or set(options) - {"accountId", "callbackUrl"}:
            raise RequestRejected("options: an object of accountId and callbackUrl")
        callback = options.get("callbackUrl")
        if callback is not None:
            callbacks.callback_of(callback, "options.callbackUrl")
        account = options.get("accountId")
        if account is not None and (not isinstance(account, str) or "\x00" in account):
            raise RequestRejected("options.accountId: text without NUL")
        key = request.headers.get("idempotency-key") or None
        job = await self.core.storage.read(partial(
            invoke.one_job, env_id=env.id, job_id=job_id,
            several=": invoke it by one of them"))
        run_id = await self.core.storage.write(partial(
            invoke.invoke, fn=job, payload=payload, context=body.get("context"),
            account_id=account, key=key, now=now_ms(), callback=callback))
        return json_response(200, {"id": run_id})

    async def event_dispatcher(self, request: Request) -> Response:
        """``waitForEvent``'s ephemeral event dispatcher: the event the waiting task of the
        callback URL waits for (``callbacks.py``); ``{"id": ...}``."""
        check_params(request, set())
        env = await self._env(request)
        body = await self._body(request)
        unknown = sorted(set(body) - DISPATCHER_FIELDS)
        if unknown:
            raise RequestRejected(f"unknown field(s): {', '.join(unknown)}; expected "
                                  f"{', '.join(sorted(DISPATCHER_FIELDS))}")
        url = body.get("url")
        callbacks.callback_of(url, "url")
        names = body.get("name")
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list) or not all(
                isinstance(n, str) and n and "\x00" not in n and len(n) <= MAX_KEY_CHARS
                for n in names) or not names:
            raise RequestRejected(f"name: an event name or a list of them (1 to "
                                  f"{MAX_KEY_CHARS} characters each)")
        names = list(dict.fromkeys(names))
        if len(names) > MAX_WAIT_NAMES:
            raise RequestRejected(f"name: at most {MAX_WAIT_NAMES} event names")
        spec: dict[str, Any] = {}
        for field, ours in (("source", "source"), ("accountId", "account_id")):
            value = body.get(field)
            if value is not None:
                if not isinstance(value, str) or "\x00" in value or len(value) > MAX_KEY_CHARS:
                    raise RequestRejected(f"{field}: text of at most {MAX_KEY_CHARS} characters")
                spec[ours] = value
        for field, ours in (("filter", "filter"), ("contextFilter", "context_filter")):
            value = body.get(field)
            if value is not None:
                try:
                    check_filter(value, field)
                except ConfigError as exc:
                    raise RequestRejected(exc.message) from None
                spec[ours] = value
        timeout = body.get("timeoutInSeconds", 3600)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not (
                10 <= timeout <= MAX_CALLBACK_SECONDS):
            raise RequestRejected(f"timeoutInSeconds: a whole number from 10 to "
                                  f"{MAX_CALLBACK_SECONDS}")
        ident = await self.core.storage.write(partial(
            callbacks.wait_for_event, env_id=env.id, url=str(url), names=names, spec=spec,
            now=now_ms()))
        return json_response(200, {"id": ident})

    async def register_endpoint(self, request: Request) -> Response:
        """``registerEndpoint``: an app asks to be indexed at ``url``, presenting its key
        (which Tidings then presents to it)."""
        check_params(request, set())
        env = await self._env(request)
        body = await self._body(request)
        unknown = sorted(set(body) - {"url", "name"})
        if unknown:
            raise RequestRejected(f"unknown field(s): {', '.join(unknown)}; expected url, name")
        url, name = body.get("url"), body.get("name")
        if not is_http_url(url):
            raise RequestRejected("url: the app's http(s) URL")
        if not isinstance(name, str) or not name or "\x00" in name:
            raise RequestRejected("name: the client's id")
        refused = await self.sync.refused(url)
        if refused is not None:
            raise RequestRejected(f"url: {refused}")
        assert self.sync.trigger is not None
        # The key it presented (none in dev: then the environment's keys are tried).
        key = request.headers.get("authorization", "").partition(" ")[2].strip() or None
        indexed = await self.sync.trigger.index(env.id, url, presented=key)
        if indexed.error is not None:
            return json_response(422, {"error": indexed.error, "status": 422})
        return json_response(200, {"id": indexed.app_id, "url": url, "name": name,
                                   "status": indexed.status})

    async def _env(self, request: Request) -> Environment:
        return await self.keys.env_for(request.headers.get("authorization", ""))

    async def _run(self, request: Request, env: Environment) -> Run:
        run_id = self._shaped(request, "run_id", "run")
        return await self.core.storage.read(partial(_run_of, run_id=run_id, env_id=env.id))

    @staticmethod
    def _shaped(request: Request, name: str, noun: str) -> str:
        """A run or task id of the path, which is one of Tidings' ULIDs (404 otherwise):
        checked before the body is read."""
        ident: str = request.path_params[name]
        if not ULID_RE.fullmatch(ident):
            shown = ident if len(ident) <= 100 else ident[:100] + "…"
            raise RequestRejected(f"{noun} {shown!r} not found", status=404)
        return ident

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await read_body(request.scope, request.receive,
                              self.core.settings.limits.max_body_bytes)
        value = decode_json(raw)
        if not isinstance(value, dict):
            raise RequestRejected("the body must be a JSON object")
        return value

    # -- tasks ---------------------------------------------------------------------------------

    async def run_task(self, request: Request) -> Response:
        check_params(request, set())
        env = await self._env(request)
        self._shaped(request, "run_id", "run")
        now = now_ms()
        new = _new_task(await self._body(request), now)
        run_id = request.path_params["run_id"]
        run, task = await self.core.storage.write(partial(
            _start, run_id=run_id, env_id=env.id, new=new, now=now))
        return self._answer(run, task, request)

    async def complete_task(self, request: Request) -> Response:
        check_params(request, set())
        env = await self._env(request)
        self._shaped(request, "run_id", "run")
        task_id = self._shaped(request, "task_id", "task")
        body = await self._body(request)
        output = body.get("output")
        if request.headers.get("trigger-version") == SERIALIZED_OUTPUT and output is not None:
            if not isinstance(output, str):
                raise RequestRejected("output: the task's output as JSON text")
            output = decode_json(output.encode(), "output")
        run, task = await self.core.storage.write(
            partial(self._owned, run_id=request.path_params["run_id"], env_id=env.id,
                    task_id=task_id, change=partial(tasks.complete, output=output,
                                                    now=now_ms(), env_id=env.id)))
        return self._answer(run, task, request)

    async def fail_task(self, request: Request) -> Response:
        check_params(request, set())
        env = await self._env(request)
        self._shaped(request, "run_id", "run")
        task_id = self._shaped(request, "task_id", "task")
        error = (await self._body(request)).get("error")
        if not isinstance(error, dict) or not isinstance(error.get("message"), str):
            raise RequestRejected("error: an object with a message (and name, stack)")
        run, task = await self.core.storage.write(
            partial(self._owned, run_id=request.path_params["run_id"], env_id=env.id,
                    task_id=task_id, change=partial(tasks.fail, error=error, now=now_ms(),
                                                    env_id=env.id)))
        return self._answer(run, task, request)

    async def callback(self, request: Request) -> Response:
        """A POST to ``io.waitForRequest``'s callback URL, from anyone the job gave it to (the
        URL's secret is the credential): its JSON body is what the task returns."""
        check_params(request, set())
        run_id = self._shaped(request, "run_id", "run")
        task_id = self._shaped(request, "task_id", "task")
        secret: str = request.path_params["secret"]
        if not SECRET_RE.fullmatch(secret):
            raise RequestRejected("secret: not the secret of a callback URL Tidings gave out",
                                  status=404)
        raw = await read_body(request.scope, request.receive,
                              self.core.settings.limits.max_body_bytes)
        body = decode_json(raw, "the body")
        if not isinstance(body, dict):
            raise RequestRejected("the body: a JSON object, which the waiting task returns")
        await self.core.storage.write(partial(
            callbacks.request_came, run_id=run_id, task_id=task_id, secret=secret, body=body,
            now=now_ms()))
        return json_response(200, {"ok": True})

    @staticmethod
    def _owned(tx: Any, *, run_id: str, env_id: str, task_id: str,
               change: Any) -> tuple[Run, tasks.Task]:
        run = _run_of(tx, run_id, env_id)
        task = tasks.by_id(tx, task_id)
        if task is None or task.run_id != run.id:
            raise RequestRejected(f"task {task_id!r} not found in run {run.id}", status=404)
        if run.status == CANCELLED:
            return run, task  # answered CANCELED, unchanged: the job stops
        changed: tasks.Task = change(tx, task_id)
        return run, changed

    @staticmethod
    def _answer(run: Run, task: tasks.Task, request: Request) -> Response:
        body = task.server_json(str(request.base_url))
        if run.status == CANCELLED:
            body["status"] = "CANCELED"
        return json_response(200, body)

    async def update_status(self, request: Request) -> Response:
        """``io.createStatus`` and a status's ``update``: the status record
        (``statuses.py``)."""
        check_params(request, set())
        env = await self._env(request)
        self._shaped(request, "run_id", "run")
        key = _text_param(request, "status_id", "status id", b"/statuses/")
        change = statuses.parse_update(await self._body(request))
        run = await self._run(request, env)
        record = await self.core.storage.write(partial(
            statuses.update, run_id=run.id, key=key, change=change, now=now_ms(),
            env_id=env.id))
        return json_response(200, record)

    # -- the key-value store -------------------------------------------------------------------

    async def store(self, request: Request) -> Response:
        check_params(request, set())
        env = await self._env(request)
        key = _text_param(request, "key", "key", b"/api/v1/store/")
        storage = self.core.storage
        method = request.method
        if method in ("GET", "HEAD"):
            row = await storage.read(lambda tx: tx.one("trigger_store_get", (env.id, key)))
            if method == "HEAD":
                return Response(status_code=200 if row else 404)
            return json_response(200, {"action": "GET", "key": key, **(
                {"value": opened_text(row[0], store_aad(env.id, key))} if row else {})})
        if method == "DELETE":
            deleted = await storage.write(
                lambda tx: tx.run("trigger_store_delete", (env.id, key)))
            return json_response(200, {"action": "DELETE", "key": key, "deleted": deleted > 0})
        raw = await read_body(request.scope, request.receive, MAX_STORE_BYTES)
        try:
            value = raw.decode()
        except UnicodeDecodeError:
            raise RequestRejected("the body: the value to store under the key is not UTF-8 "
                                  "text") from None
        if not value or "\x00" in value or value.startswith(SEAL_MARK):
            raise RequestRejected("the body: the value to store under the key: JSON text, "
                                  "without NUL, not starting with U+001F")
        now = now_ms()
        await storage.write(lambda tx: tx.run("trigger_store_put", (
            env.id, key, sealed_text(tx, env.id, value, store_aad(env.id, key)), now)))
        return json_response(200, {"action": "SET", "key": key, "value": value})


def _text_param(request: Request, name: str, what: str, prefix: bytes) -> str:
    """A path parameter of any text: 1 to ``MAX_KEY_CHARS`` characters of UTF-8 without NUL
    (the raw path is read again: the server decoded bad bytes to U+FFFD)."""
    value: str = request.path_params[name]
    if not value or len(value) > MAX_KEY_CHARS or "\x00" in value:
        raise RequestRejected(f"{what}: 1 to {MAX_KEY_CHARS} characters, without NUL")
    raw = request.scope.get("raw_path", b"").partition(prefix)[2]
    try:
        unquote_to_bytes(raw).decode()
    except UnicodeDecodeError:
        raise RequestRejected(f"{what}: not valid UTF-8 (percent-encode UTF-8 bytes)") from None
    return value


def _run_of(tx: Any, run_id: str, env_id: str) -> Run:
    """A v2 run of the environment (404 otherwise), read in the transaction that uses it."""
    run = store.get_run(tx, run_id)
    if run is None or run.env_id != env_id or run.queue != TRIGGER_QUEUE:
        raise RequestRejected(f"run {run_id!r} not found", status=404)
    return run


def _start(tx: Any, *, run_id: str, env_id: str, new: tasks.NewTask,
           now: int) -> tuple[Run, tasks.Task]:
    """The task a ``runTask`` asks for; for a cancelled run nothing is stored, and the task
    (as it is, or as it would have been) is answered CANCELED: the job stops."""
    run = _run_of(tx, run_id, env_id)
    if run.status != CANCELLED:
        task = tasks.start(tx, run.id, new, now, env_id=run.env_id)
        if task.callback_secret is not None:
            callbacks.wait_for_request(tx, run, task)
        return run, task
    found = tx.one("trigger_task_by_key", (run.id, new.idempotency_key))
    if found is not None:
        return run, tasks.Task.from_row(found)
    return run, tasks.Task(
        id=new_id(now), run_id=run.id, idempotency_key=new.idempotency_key, name=new.name,
        display_key=new.display_key, status=tasks.RUNNING, noop=new.noop, attempts=1,
        retrying=False, parent_id=new.parent_id, delay_until=new.delay_until,
        params=new.params, output=None, error=None, started_at=now, completed_at=None)


def _new_task(body: dict[str, Any], now: int) -> tasks.NewTask:
    operation = body.get("operation")
    if operation is not None:
        operations.check(operation, body.get("params"))
    callback_until = _callback_until(body.get("callback"), body.get("name"), now)
    key = body.get("idempotencyKey")
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS or "\x00" in key:
        raise RequestRejected(f"idempotencyKey: required, 1 to {MAX_KEY_CHARS} characters")
    display = body.get("displayKey")
    name = body.get("name")
    if name is None:
        name = display if isinstance(display, str) else "task"
    for field, value in (("name", name), ("displayKey", display), ("parentId",
                                                                    body.get("parentId"))):
        if value is not None and (not isinstance(value, str) or "\x00" in value
                                  or len(value) > MAX_KEY_CHARS):
            raise RequestRejected(f"{field}: text of at most {MAX_KEY_CHARS} characters")
    noop = body.get("noop", False)
    if not isinstance(noop, bool):
        raise RequestRejected("noop: true or false")
    delay_until = None
    raw_delay = body.get("delayUntil")
    if raw_delay is not None:
        try:
            moment = datetime.fromisoformat(str(raw_delay).replace("Z", "+00:00"))
        except ValueError:
            raise RequestRejected("delayUntil: an ISO-8601 time") from None
        if moment.tzinfo is None:
            raise RequestRejected("delayUntil: an ISO-8601 time with its offset (Z)")
        delay_until = int(moment.timestamp() * 1000)
    # io.waitForRequest's callback URL is given to others: it carries a secret.
    secret = (secrets.token_urlsafe(24) if callback_until is not None
              and name == WAIT_FOR_REQUEST else None)
    return tasks.NewTask(idempotency_key=key, name=name, display_key=display, noop=noop,
                         delay_until=delay_until, parent_id=body.get("parentId"),
                         params=body.get("params"), callback_until=callback_until,
                         operation=operation, callback_secret=secret)


def _callback_until(callback: Any, name: Any, now: int) -> int | None:
    """When a task waiting for a callback times out (None: it waits for none)."""
    if callback is None:
        return None
    if not isinstance(callback, dict) or not isinstance(callback.get("enabled", False), bool):
        raise RequestRejected("callback: an object of enabled (true or false) and "
                              "timeoutInSeconds")
    if not callback.get("enabled"):
        return None
    seconds = callback.get("timeoutInSeconds")
    if seconds is None:
        seconds = 3600
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (
            0 < seconds <= MAX_CALLBACK_SECONDS):
        raise RequestRejected(f"callback.timeoutInSeconds: a number of seconds from 1 to "
                              f"{MAX_CALLBACK_SECONDS}")
    return now + int(seconds * 1000)
