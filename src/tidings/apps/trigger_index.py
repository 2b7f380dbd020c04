"""Syncing a Trigger.dev v2 app: ``PING`` it, then ``INDEX_ENDPOINT``, and register its Jobs as
functions on queue ``trigger`` (``engine/trigger_driver.py`` runs them).

Every request carries ``x-trigger-api-key``: the app accepts only its own key, so the
environment's live keys are tried, newest first (or the key the app presented when it
registered itself through ``POST /api/v1/endpoints``); the one it accepts is kept on its
functions for the driver. ``PING`` also names the client: an app answers a wrong
``x-trigger-endpoint-id`` with the one it expected, which is then sent again.

A Job becomes a function whose triggers are its event names, with the rule's ``source``,
payload ``filter`` and ``context`` filter (v2's default source ``trigger.dev`` is Tidings'
``tidings``). What Tidings does not run is refused with the app's sync, naming it:
integrations, HTTP sources and webhooks, HTTP endpoints, dynamic triggers and schedules, and
intervals cron cannot express. ``cronTrigger`` and ``intervalTrigger`` Jobs run on Tidings'
cron (UTC); an ``invokeTrigger`` Job is a function with no trigger, started only by invoke.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import jcs
import msgspec

from tidings.apps import records
from tidings.core import Core
from tidings.errors import ConfigError
from tidings.functions.cron import parse_cron
from tidings.functions.filters import check_filter
from tidings.functions.registration import FunctionDef, register
from tidings.ids import now_ms
from tidings.storage.tx import Tx
from tidings.triggerdev.keys import TriggerKeys
from tidings.triggerdev.wire import LAZY_LOADED_CACHED_TASKS, TRIGGER_QUEUE

SDK = "trigger.dev:v2"
V2_DEFAULT_SOURCE = "trigger.dev"
EXPECTED_ID = re.compile(r"Expected (\S+), got")
MAX_ERROR_CHARS = 500
JOB_RETRIES = 4  # calls that fail to reach the app (or a 5xx) are retried; job errors are not
UNSUPPORTED_PARTS = {
    "sources": "HTTP sources", "webhooks": "webhooks", "dynamicTriggers": "dynamic triggers",
    "dynamicSchedules": "dynamic schedules", "httpEndpoints": "HTTP endpoints",
}


@dataclass(frozen=True, slots=True)
class Indexed:
    """How indexing went: the client id and job count, or why it failed (``status`` is one of
    ``records.SYNCED``, ``UNREACHABLE`` or ``FAILED``)."""

    status: str
    app_id: str | None = None
    error: str | None = None
    modified: bool = False


class IndexFailed(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class TriggerIndexer:
    def __init__(self, core: Core, keys: TriggerKeys,
                 http: Callable[[], httpx.AsyncClient]) -> None:
        self._core = core
        self._keys = keys
        self._http = http

    async def index(self, env_id: str, url: str, presented: str | None = None) -> Indexed:
        """Index the app at ``url`` and register its Jobs; the failure is recorded on the
        app (``GET /v1/apps``) and returned."""
        try:
            key_id, key, client = await self._ping(env_id, url, presented)
            index = await self._post(url, key, "INDEX_ENDPOINT", {}) or {}
            defs = jobs_of(client, url, key_id, index)
        except IndexFailed as exc:
            await self._core.storage.write(partial(
                records.checked, env_id=env_id, url=url, status=exc.status,
                error=exc.message[:MAX_ERROR_CHARS], now=now_ms()))
            return Indexed(exc.status, error=exc.message)
        checksum = hashlib.sha256(jcs.canonicalize(
            {"app": client, "url": url, "key": key_id, "index": index})).hexdigest()
        modified = await self._core.storage.write(partial(
            _register, env_id=env_id, url=url, client=client, defs=defs, checksum=checksum,
            now=now_ms()))
        return Indexed(records.SYNCED, app_id=client, modified=modified)

    async def _ping(self, env_id: str, url: str,
                    presented: str | None) -> tuple[str, str, str]:
        """The key the app accepts (its id and secret) and the app's client id."""
        if presented is not None:
            candidates = [(await self._keys.remember(env_id, presented), presented)]
        else:
            candidates = await self._keys.live_of(env_id)
        if not candidates:
            raise IndexFailed(records.FAILED, "the environment has no trigger key to present "
                              "to a Trigger.dev v2 app: create one (tidings keys create "
                              "--kind trigger) and give it to the app as its apiKey")
        for key_id, key in candidates:
            answer = await self._post(url, key, "PING", {}, endpoint="tidings", refused_ok=True)
            if answer is None:
                continue  # not this app's key
            client = "tidings"
            if answer.get("ok") is not True:
                found = EXPECTED_ID.search(str(answer.get("error", "")))
                if found is None:
                    raise IndexFailed(records.FAILED, f"PING: {answer.get('error')}")
                client = found.group(1)
                answer = await self._post(url, key, "PING", {}, endpoint=client) or {}
                if answer.get("ok") is not True:
                    raise IndexFailed(records.FAILED, f"PING: {answer.get('error')}")
            return key_id, key, client
        raise IndexFailed(records.FAILED, "the app refused every trigger key of the "
                          "environment (its apiKey is none of them)")

    async def _post(self, url: str, key: str, action: str, body: dict[str, Any], *,
                    endpoint: str | None = None,
                    refused_ok: bool = False) -> dict[str, Any] | None:
        headers = {"content-type": "application/json", "x-trigger-api-key": key,
                   "x-trigger-action": action, "x-trigger-version": LAZY_LOADED_CACHED_TASKS}
        if endpoint is not None:
            headers["x-trigger-endpoint-id"] = endpoint
        try:
            reply = await self._http().post(url, content=msgspec.json.encode(body),
                                            headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise IndexFailed(records.UNREACHABLE, f"cannot reach the app: {exc}") from None
        try:
            answer = msgspec.json.decode(reply.content)
        except msgspec.DecodeError:
            answer = None
        if reply.status_code == 401 and refused_ok:
            return None
        if reply.status_code != 200 or not isinstance(answer, dict):
            message = answer.get("message") if isinstance(answer, dict) else None
            raise IndexFailed(records.FAILED, f"{action}: the app answered "
                              f"{reply.status_code}" + (f": {message}" if message else ""))
        return answer


def is_trigger_refusal(status: int, body: bytes) -> bool:
    """True for how a v2 app answers a request without its key: the way an Inngest sync ping
    finds out that the app at a URL is a Trigger.dev v2 app."""
    return status == 401 and b"x-trigger-api-key" in body


def jobs_of(client: str, url: str, key_id: str, index: dict[str, Any]) -> list[FunctionDef]:
    """The app's Jobs as functions; ``IndexFailed`` naming what Tidings does not run."""
    refused = [f"{len(index[part])} {what}" for part, what in UNSUPPORTED_PARTS.items()
               if isinstance(index.get(part), list) and index[part]]
    jobs = index.get("jobs")
    if not isinstance(jobs, list):
        raise IndexFailed(records.FAILED, "INDEX_ENDPOINT: the answer has no jobs list")
    defs = []
    for job in jobs:
        try:
            made = _job(client, url, key_id, job)
        except ConfigError as exc:
            refused.append(exc.message)
            continue
        if made is not None:
            defs.append(made)
    if refused:
        raise IndexFailed(records.FAILED, "Tidings does not run these parts of the app: "
                          + "; ".join(refused))
    return defs


def _job(client: str, url: str, key_id: str, job: Any) -> FunctionDef | None:
    if not isinstance(job, dict) or not isinstance(job.get("id"), str):
        raise ConfigError("a job without an id")
    job_id = job["id"]
    if job.get("enabled") is False:
        return None  # a disabled Job is not registered (an earlier one is archived)
    if job.get("integrations"):
        raise ConfigError(f"job {job_id!r}: integrations ({', '.join(job['integrations'])})")
    trigger = job.get("trigger") or {}
    kind = trigger.get("type")
    if kind == "scheduled":
        return _scheduled(client, url, key_id, job, trigger.get("schedule"))
    if kind == "invoke":  # invokeTrigger: started only by invoke (``triggerdev/invoke.py``)
        return _function(client, url, key_id, job, [])
    if kind != "static":
        raise ConfigError(f"job {job_id!r}: {kind} triggers (eventTrigger, invokeTrigger, "
                          "cronTrigger and intervalTrigger are run)")
    rule = trigger.get("rule") or {}
    names = rule.get("event")
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not names or not all(
            isinstance(n, str) and n for n in names):
        raise ConfigError(f"job {job_id!r}: the trigger names no event")
    source = rule.get("source")
    triggers = []
    for name in dict.fromkeys(names):
        one: dict[str, Any] = {"event": name}
        if isinstance(source, str) and source:
            one["source"] = "tidings" if source == V2_DEFAULT_SOURCE else source
        for field, ours in (("payload", "filter"), ("context", "context_filter")):
            pattern = rule.get(field)
            if pattern:
                check_filter(pattern, f"job {job_id!r}: {field}")
                one[ours] = pattern
        triggers.append(one)
    return _function(client, url, key_id, job, triggers)


def _function(client: str, url: str, key_id: str, job: dict[str, Any],
              triggers: list[dict[str, Any]], **more: Any) -> FunctionDef:
    job_id = job["id"]
    slug = f"{client}-{job_id}"
    config = {"id": slug, "name": job.get("name") or job_id, "triggers": triggers,
              "retries": JOB_RETRIES, "runtime": "trigger", "key_id": key_id,
              "job": {"id": job_id, "version": job.get("version")}, **more}
    return FunctionDef(slug=slug, name=str(config["name"]), url=url, config=config)


def _scheduled(client: str, url: str, key_id: str, job: dict[str, Any],
               schedule: Any) -> FunctionDef:
    """A ``cronTrigger`` or ``intervalTrigger`` Job: a function on Tidings' cron (UTC), its
    runs' event ``trigger.scheduled`` with ``{ts}`` (``engine/trigger_driver.py``)."""
    job_id = job["id"]
    schedule = schedule if isinstance(schedule, dict) else {}
    options = schedule.get("options") if isinstance(schedule.get("options"), dict) else {}
    if schedule.get("type") == "cron":
        expression = options.get("cron")
        if not isinstance(expression, str) or expression.strip().startswith(("TZ=",
                                                                             "CRON_TZ=")):
            raise ConfigError(f"job {job_id!r}: cronTrigger needs a cron expression (UTC)")
    elif schedule.get("type") == "interval":
        expression = _interval_cron(job_id, options.get("seconds"))
    else:
        raise ConfigError(f"job {job_id!r}: a schedule of type {schedule.get('type')!r}")
    try:
        parse_cron(expression)
    except ConfigError as exc:
        raise ConfigError(f"job {job_id!r}: {exc.message}") from None
    return _function(client, url, key_id, job, [{"cron": expression}], scheduled=True)


def _interval_cron(job_id: str, seconds: Any) -> str:
    """An ``intervalTrigger``'s period as a cron expression: whole minutes dividing an hour,
    whole hours dividing a day, or whole days (60 s to 30 days, as v2 took)."""
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not (
            60 <= seconds <= 30 * 86400):
        raise ConfigError(f"job {job_id!r}: intervalTrigger seconds must be a whole number "
                          "from 60 to 2592000")
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds % 60 == 0 and minutes < 60 and 60 % minutes == 0:
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
    if seconds % 3600 == 0 and hours < 24 and 24 % hours == 0:
        return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"
    if seconds % 86400 == 0:
        return "0 0 * * *" if days == 1 else f"0 0 */{days} * *"
    raise ConfigError(f"job {job_id!r}: an interval of {seconds} s is not run (Tidings "
                      "schedules by cron: use whole minutes dividing an hour, hours dividing a "
                      "day, or whole days)")


def _register(tx: Tx, *, env_id: str, url: str, client: str, defs: list[FunctionDef],
              checksum: str, now: int) -> bool:
    before = records.app_at(tx, env_id, url)
    modified = before is None or before.checksum != checksum
    if modified:
        register(tx, env_id=env_id, app_id=client, queue=TRIGGER_QUEUE, defs=defs,
                       now=now)
    records.synced(tx, env_id=env_id, url=url, app_id=client, sdk=SDK, framework=None,
                   checksum=checksum, functions=len(defs), now=now)
    return modified
