"""Syncing apps: what ``POST /fn/register`` does with a registration, and pinging an app with
a ``PUT`` so that it registers — out of band (it calls ``/fn/register``) or in band (it answers
the ``PUT`` with its configuration). ``tidings dev`` pings known apps every few seconds and
looks for new ones on the usual local ports (``AppPoller``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec

from tidings.apps import records
from tidings.apps.config import AppConfig, is_http_url, parse_app
from tidings.apps.trigger_index import TriggerIndexer, is_trigger_refusal
from tidings.core import Core
from tidings.errors import RequestRejected
from tidings.functions import registration
from tidings.functions.flow_config import get
from tidings.ids import now_ms
from tidings.json_input import decode_json
from tidings.keys import SigningKeys, get_env
from tidings.netguard import Policy, transport
from tidings.observe import metrics
from tidings.runs.model import HTTP_QUEUE
from tidings.signing import sign, verify
from tidings.storage.base import Environment
from tidings.storage.tx import Tx
from tidings.supervision import Supervisor
from tidings.triggerdev.keys import TriggerKeys

log = logging.getLogger("tidings.apps")
USER_AGENT = "tidings"
# Where `inngest dev` looks for apps (pkg/devserver/discovery): ports and paths on localhost.
DISCOVERY_PORTS = (*range(3000, 3011), 4321, 5000, 5173, 8000, 8080, 8081, 8888,
                   *range(8910, 8916), 8787)
DISCOVERY_PATHS = ("/api/inngest", "/x/inngest", "/.netlify/functions/inngest",
                   "/.redwood/functions/inngest")
MAX_REASON_CHARS = 200
_UNPRINTABLE = re.compile(r"[^\x20-\x7e\u00a0-\uffff]+")


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncResult:
    """How pinging one app went: ``synced``, ``unreachable`` or ``failed`` (with why)."""

    url: str
    status: str
    error: str | None = None
    modified: bool = False
    app_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "status": self.status, "error": self.error,
                "modified": self.modified, "app_id": self.app_id}


class AppSync:
    def __init__(self, core: Core, keys: SigningKeys, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 timeout: float = 30.0, trigger_keys: TriggerKeys | None = None) -> None:
        self._core = core
        self.storage = core.storage
        self._keys = keys
        self._dev = core.settings.dev
        self._kind = core.settings.server_kind
        self.guard = Policy.from_settings(core.settings)
        # A transport given (tests) is used as it is; otherwise apps are reached only where
        # the guard allows, checked as connected (``netguard``).
        self._transport = transport
        self._timeout = timeout
        self._http: httpx.AsyncClient | None = None
        # Trigger.dev v2 apps, found out by how they refuse the sync ping (``trigger_index``).
        self.trigger = (TriggerIndexer(core, trigger_keys, lambda: self.http)
                        if trigger_keys is not None else None)

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(transport=self._transport or transport(self.guard),
                                           timeout=self._timeout)
        return self._http

    async def refused(self, url: str) -> str | None:
        """Why the guard will not call ``url`` (the addresses its host resolves to now), or
        None."""
        return await self.guard.vet_url(url)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def register(self, env_id: str, body: Any) -> tuple[AppConfig, bool]:
        """Store an app's functions (archiving the ones it dropped); whether anything changed.
        An unchanged registration (the dev server re-syncs every few seconds) writes only the
        app's record. Reading it compiles and tries every expression in it (milliseconds each
        at most): in a thread, so that a large app does not hold up the event loop."""
        try:
            app = await asyncio.to_thread(parse_app, body)
            await self._vet(app)
        except RequestRejected as exc:
            log.info("an app's registration was refused: %s", exc.message)
            metrics.app_synced(None, "refused")
            raise
        modified = await self._core.storage.write(
            partial(_register, env_id=env_id, app=app, now=now_ms()))
        metrics.app_synced(app.app_id, "changed" if modified else "unchanged")
        # The dev server syncs every few seconds: an unchanged app is not news.
        log.log(logging.INFO if modified else logging.DEBUG,
                "app %s synced from %s: %d functions%s", app.app_id, app.url,
                len(app.functions), "" if modified else " (unchanged)",
                extra={"app": app.app_id})
        return app, modified

    async def register_connected(self, env_id: str, body: Any,
                                 function_url: Callable[[str], str]) -> tuple[AppConfig, bool]:
        """Store the functions of an app whose worker registered over a Connect socket: there is
        no URL to vet, each function is called where ``function_url(slug)`` says."""
        app = await asyncio.to_thread(parse_app, body, connected=True)
        app = replace(app, functions=tuple(replace(f, url=function_url(f.slug))
                                           for f in app.functions))
        # A worker registers its own app's functions only: a slug that is another app's live
        # function (an HTTP app's, a native one's) is refused, not taken over.
        slugs = [f.slug for f in app.functions]
        owners = await self._core.storage.read(
            lambda tx: [registration.function_by_slug(tx, env_id, slug) for slug in slugs])
        for found in owners:
            if found is not None and found.archived_at is None and found.app_id != app.app_id:
                raise RequestRejected(f"function {found.slug!r} belongs to app "
                                      f"{found.app_id!r}: a worker registers only its own "
                                      "app's functions")
        modified = await self._core.storage.write(
            partial(_register, env_id=env_id, app=app, now=now_ms()))
        return app, modified

    async def _vet(self, app: AppConfig) -> None:
        """Refuse a registration whose app or function URLs the guard will not call."""
        if not self.guard.guarded:
            return
        checks = [("url", app.url)] + [(f"functions[{f.slug!r}] step URL", f.url)
                                       for f in app.functions if f.url]
        by_origin: dict[str, str | None] = {}  # one look-up per host and port
        for where, url in checks:
            origin = urlsplit(url).netloc
            if origin not in by_origin:
                by_origin[origin] = await self.refused(url)
            reason = by_origin[origin]
            if reason is not None:
                raise RequestRejected(f"Invalid request: {where}: {reason}")

    async def ping(self, env_id: str, url: str) -> SyncResult:
        """Ask the app at ``url`` to sync, and record how that went."""
        body = msgspec.json.encode({"url": url})
        headers = {"content-type": "application/json", "user-agent": USER_AGENT,
                   "x-inngest-server-kind": self._kind}
        keys = None if self._dev else await self._keys.of_env(env_id)
        if keys is not None:
            headers["x-inngest-signature"] = sign(body, keys.current)
            headers["x-inngest-sync-kind"] = "in_band"
            if keys.branch is not None:
                headers["x-inngest-env"] = keys.branch
        try:
            reply = await self.http.put(url, content=body, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return await self._failed(env_id, url, records.UNREACHABLE,
                                      f"cannot reach the app: "
                                      f"{sanitised(str(exc)) or type(exc).__name__}")
        if self.trigger is not None and is_trigger_refusal(reply.status_code, reply.content):
            indexed = await self.trigger.index(env_id, url)
            return SyncResult(url=url, status=indexed.status, error=indexed.error,
                              modified=indexed.modified, app_id=indexed.app_id)
        try:
            answer = decode_json(reply.content, "the app's answer")
        except RequestRejected:
            answer = None
        if not reply.is_success:
            log.debug("app at %s answered %s: %r", url, reply.status_code, reply.text[:300])
            return await self._failed(env_id, url, records.FAILED, _answered(reply, answer))
        if reply.headers.get("x-inngest-sync-kind") != "in_band":
            # Out of band: the app has called /fn/register, which recorded it.
            modified = bool(answer.get("modified")) if isinstance(answer, dict) else False
            return SyncResult(url=url, status=records.SYNCED, modified=modified)
        if keys is not None and not verify(reply.content, reply.headers.get("x-inngest-signature"),
                                           keys.all):
            return await self._failed(env_id, url, records.FAILED,
                                      "the app's answer is not signed with this environment's "
                                      "signing key")
        try:
            registration = in_band_body(answer)
            # An app of a branch says so (``env``), as it would in an X-Inngest-Env header.
            target = await self._branch_of(env_id, get(answer, "env"))
            app, modified = await self.register(target, registration)
        except RequestRejected as exc:
            return await self._failed(env_id, url, records.FAILED, sanitised(exc.message))
        return SyncResult(url=url, status=records.SYNCED, modified=modified, app_id=app.app_id)

    async def _branch_of(self, env_id: str, branch: Any) -> str:
        """The environment an app of ``branch`` joins when synced from ``env_id``: that branch
        of the environment ``env_id`` belongs to (a branch's parent, else itself)."""
        if branch is None or branch == "":
            return env_id
        if not isinstance(branch, str):
            raise RequestRejected("the app's in-band answer names an env that is not a string")
        def parent(tx: Tx) -> Environment | None:
            env = get_env(tx, env_id)
            return get_env(tx, env.parent_id) if env is not None and env.parent_id else env

        env = await self.storage.read(parent)
        assert env is not None
        return (await self._core.gate.branch(env, branch)).id

    async def _failed(self, env_id: str, url: str, status: str, error: str) -> SyncResult:
        log.info("app at %s did not sync: %s (%s)", url, status, error)
        metrics.app_synced(None, status)
        await self._core.storage.write(partial(records.checked, env_id=env_id, url=url,
                                               status=status, error=error, now=now_ms()))
        return SyncResult(url=url, status=status, error=error)


def _register(tx: Tx, *, env_id: str, app: AppConfig, now: int) -> bool:
    before = records.app_at(tx, env_id, app.url)
    modified = before is None or before.checksum != app.checksum
    if modified:
        registration.register(tx, env_id=env_id, app_id=app.app_id, queue=HTTP_QUEUE,
                       defs=app.functions, now=now)
    records.synced(tx, env_id=env_id, url=app.url, app_id=app.app_id, sdk=app.sdk,
                   framework=app.framework, checksum=app.checksum,
                   functions=len(app.functions), now=now)
    return modified


def in_band_body(answer: Any) -> dict[str, Any]:
    """An in-band sync answer (``app_id``, ``sdk_language``, ``inspection`` …) as a register
    body."""
    if not isinstance(answer, dict):
        raise RequestRejected("the app's in-band answer is not a JSON object")
    language = get(answer, "sdk_language") or get(get(answer, "inspection") or {},
                                                  "sdk_language")
    version = get(answer, "sdk_version") or get(get(answer, "inspection") or {},
                                                "sdk_version")
    return {"appname": get(answer, "app_id"), "url": get(answer, "url"),
            "functions": get(answer, "functions") or [],
            "framework": get(answer, "framework"),
            "sdk": f"{language}:v{version}" if language and version else None}


def _message(answer: Any) -> str | None:
    if isinstance(answer, dict):
        for key in ("error", "message"):
            if isinstance(answer.get(key), str) and answer[key]:
                return str(answer[key])
    return None


def _answered(reply: httpx.Response, answer: Any) -> str:
    """Why a sync failed, told to whoever asked for it (the 422 of ``/v1/apps/sync``, the app's
    record in ``GET /v1/apps``): the status and its phrase, and the error message of an answer
    from an Inngest SDK (one with ``X-Inngest-SDK``), sanitised and short. Nothing else of the
    answer: the URL may be anyone's, and its body must not be read back through Tidings."""
    status = reply.status_code
    try:
        text = f"the app answered {status} {HTTPStatus(status).phrase}"
    except ValueError:
        text = f"the app answered {status}"
    message = _message(answer) if "x-inngest-sdk" in reply.headers else None
    return f"{text}: {sanitised(message)}" if message else text


def sanitised(text: str) -> str:
    """``text`` as one short printable line: no control characters, at most
    ``MAX_REASON_CHARS`` characters."""
    line = " ".join(_UNPRINTABLE.sub(" ", text).split())
    return line if len(line) <= MAX_REASON_CHARS else line[:MAX_REASON_CHARS - 1] + "…"


class AppPoller:
    """``tidings dev``'s app watcher: re-syncs the known apps every ``interval`` seconds and,
    until one has synced, looks for apps on the local ports and paths `inngest dev` scans
    (a TCP connect first, then a ``GET`` that only an Inngest SDK answers as one)."""

    def __init__(self, sync: AppSync, env_id: str, urls: Sequence[str], *,
                 supervisor: Supervisor, interval: float = 5.0, discover: bool = True,
                 own_port: int | None = None, host: str = "127.0.0.1") -> None:
        self._sync = sync
        self._supervisor = supervisor
        self._env_id = env_id
        self._urls = list(dict.fromkeys(urls))
        self._interval = interval
        self._discover = discover
        self._own_port = own_port
        self._host = host
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = self._supervisor.start("tidings-app-poller", self._loop)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self, ok: Callable[[], None]) -> None:
        while True:
            await self.round()
            ok()
            await asyncio.sleep(self._interval)

    async def round(self) -> list[SyncResult]:
        """Ping every known app once; discover when none is synced yet."""
        env_id = self._env_id
        known = await self._sync.storage.read(lambda tx: records.apps_of(tx, env_id))
        # Apps whose workers connect over a socket (``ws://connect?…``) are not pinged.
        urls = list(dict.fromkeys([*self._urls, *(app.url for app in known
                                                  if is_http_url(app.url))]))
        results = list(await asyncio.gather(*(self._sync.ping(env_id, url) for url in urls)))
        if self._discover and not any(r.status == records.SYNCED for r in results):
            found = await self.discover()
            if found is not None:
                results.append(found)
        if any(r.status == records.SYNCED for r in results):
            self._discover = False
        return results

    async def discover(self) -> SyncResult | None:
        ports = [p for p in DISCOVERY_PORTS if p != self._own_port]
        listening = await asyncio.gather(*(self._listening(p) for p in ports))
        for port, answers in zip(ports, listening, strict=True):
            if not answers:
                continue
            for path in DISCOVERY_PATHS:
                url = f"http://{self._host}:{port}{path}"
                if await self._is_sdk(url):
                    result = await self._sync.ping(self._env_id, url)
                    if result.status == records.SYNCED:
                        log.info("discovered an app at %s", url)
                        self._urls.append(url)
                        return result
        return None

    async def _listening(self, port: int) -> bool:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(self._host, port), 0.25)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def _is_sdk(self, url: str) -> bool:
        try:
            reply = await self._sync.http.get(url, timeout=2.0,
                                              headers={"x-inngest-server-kind": "dev"})
        except httpx.HTTPError:
            return False
        return reply.is_success and "x-inngest-sdk" in reply.headers
