"""The ASGI application: ``POST /e/{key}`` goes straight to the raw Event API, everything else
through Starlette (routing, CORS, JSON errors).

Every route of the server is in ``route_table`` (the JSON API under ``/v1`` in ``api_routes``):
a new endpoint is added there, with its OpenAPI entry (``openapi/``) and bad-input cases
(``tests/acceptance/test_bad_input.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.apps.sync import AppPoller, AppSync
from tidings.connect.gateway import Gateway
from tidings.connect.hub import Hub
from tidings.connect.relay import Relay
from tidings.connect.request_ids import RequestIds
from tidings.core import Core
from tidings.engine.executor import EngineSettings
from tidings.engine.runtime import Runtime
from tidings.errors import Overloaded, RequestRejected
from tidings.keys import DEV_ENV, SigningKeys
from tidings.observe import tracing
from tidings.observe.http import RequestObserver
from tidings.server.connect_api import ConnectAPI
from tidings.server.dashboard import Dashboard
from tidings.server.dev_api import DevAPI
from tidings.server.event_api import EventAPI
from tidings.server.flow_api import FlowAPI
from tidings.server.functions_api import FunctionsAPI
from tidings.server.health import HealthAPI
from tidings.server.http import TICKET, declared_length, header_map, send_json
from tidings.server.log_api import EventLogAPI
from tidings.server.metrics_api import MetricsAPI
from tidings.server.openapi import document
from tidings.server.requests import error_response, json_response
from tidings.server.run_levers import RunLevers
from tidings.server.runs_api import RunsAPI
from tidings.server.sdk_api import SdkAPI
from tidings.server.settings_api import SettingsAPI
from tidings.server.shedding import Shedder
from tidings.server.trigger_api import TriggerAPI
from tidings.server.trigger_runs_api import TriggerRunsAPI
from tidings.server.users_api import UsersAPI
from tidings.settings import Settings
from tidings.triggerdev.keys import TriggerKeys

if TYPE_CHECKING:
    from tidings.sdk.client import Tidings

log = logging.getLogger("tidings.server")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class ServerKind:
    """Adds ``X-Inngest-Server-Kind`` to every response, as the Inngest servers do."""

    def __init__(self, app: ASGIApp, kind: bytes) -> None:
        self.app = app
        self.header = (b"x-inngest-server-kind", kind)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_kind(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, send_with_kind)


async def _rejected(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestRejected)
    response = error_response(exc.status, exc.message)
    if isinstance(exc, Overloaded):
        response.headers["retry-after"] = str(exc.retry_after)
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    response = error_response(exc.status_code, str(exc.detail))
    response.headers.update(exc.headers or {})  # e.g. ``Allow`` on a 405
    return response


async def _crash(request: Request, exc: Exception) -> Response:
    log.exception("request failed", exc_info=exc)
    return error_response(500, "internal error")


def api_routes(core: Core, levers: RunLevers | None = None) -> list[Route]:
    """The JSON API: health, the event log, runs and their levers (shared with the dashboard
    when given), functions, people and settings."""
    levers = levers or RunLevers(core)
    return [
        *HealthAPI(core).routes(),
        *EventLogAPI(core).routes(),
        *RunsAPI(core, levers).routes(),
        *FlowAPI(core, levers).routes(),
        *FunctionsAPI(core, levers).routes(),
        *UsersAPI(core).routes(),
        *SettingsAPI(core).routes(),
    ]


def route_table(core: Core, *, events: EventAPI, sync: AppSync, keys: SigningKeys,
                levers: RunLevers, trigger_keys: TriggerKeys, start_opts: dict[str, Any],
                hub: Hub, gateway: Callable[[], Gateway | None]) -> list[Route]:
    """Every route of the server, one per path (so that a 405 names every method the path
    has in ``Allow``)."""

    async def openapi(request: Request) -> Response:
        return json_response(200, document(core.settings.dev))

    return [
        *api_routes(core, levers),
        *SdkAPI(core, sync, keys, hub).routes(),
        *ConnectAPI(core, keys, hub, gateway).routes(),
        *DevAPI(core, start_opts).routes(),
        *TriggerAPI(core, trigger_keys, levers).routes(),
        *TriggerRunsAPI(core, trigger_keys, sync).routes(),
        Route("/openapi.json", openapi, methods=["GET"]),
        # ``TidingsApp`` sends POST /e/... straight to the Event API; this route only gives
        # the other methods a 405 that names POST.
        Route("/e/{key:path}", events, methods=["POST"]),
        *MetricsAPI(core, hub).routes(),
    ]


class TidingsApp:
    """The whole HTTP surface of a Tidings process."""

    def __init__(self, settings: Settings, core: Core | None = None, *,
                 apps: Sequence[Tidings] = (), env: str = "dev",
                 engine: EngineSettings | None = None, watch: AppWatch | None = None,
                 http: bool = True, on_dead: Callable[[str], None] | None = None,
                 grace: float = 30.0) -> None:
        self.settings = settings
        self._grace = grace
        self._on_dead = on_dead
        self._http = http
        self.core = core
        self._owns_core = core is None
        self._apps = list(apps)
        self._env = env
        self._engine = engine
        self._watch = watch
        self.runtime: Runtime | None = None
        self.sync: AppSync | None = None
        self._poller: AppPoller | None = None
        self._events: EventAPI | None = None
        self._rest: ASGIApp | None = None
        self._routes: list[Route] = []
        self._shedder: Shedder | None = None
        self.dashboard: Dashboard | None = None
        self.hub = Hub(lease_seconds=settings.connect.lease_seconds)
        self.gateway: Gateway | None = None
        self._kind = (b"x-inngest-server-kind", settings.server_kind.encode())
        self._templates: dict[Any, str] = {}
        # Requests are observed (timed, traced, logged) by ``_observer``'s middleware around
        # every route but the Event API's, which tells the observer itself.
        self._observer: RequestObserver | None = None
        self._others: ASGIApp = self._route
        if settings.observe.access_log or settings.observe.metrics or tracing.on():
            self._observer = RequestObserver(self._route_of,
                                             access_log=settings.observe.access_log,
                                             timed=settings.observe.metrics)
            self._others = self._observer.wrap(self._route)
        if core is not None:
            self._build(core)

    def _build(self, core: Core) -> None:
        kind = self.settings.server_kind.encode()
        self._shedder = Shedder(self.settings.load, core.storage.backlog,
                                body_limit=core.settings.limits.max_body_bytes)
        self._events = events = EventAPI(core, kind, self._shedder, self._observer)
        keys = SigningKeys(core.storage, core.vault.sealer.keyring)
        # Connect calls may go through workers connected to other processes (``relay``).
        self.hub = Hub(lease_seconds=self.settings.connect.lease_seconds,
                       relay=Relay(core.storage, wakers=core.wakers),
                       ids=RequestIds.of(core.vault.sealer.keyring))
        trigger_keys = TriggerKeys(core.storage, core.vault.sealer.keyring,
                                   dev=self.settings.dev)
        self.sync = AppSync(core, keys, trigger_keys=trigger_keys)
        levers = RunLevers(core)  # what the runs API and the dashboard do to runs
        self._routes = route_table(core, events=events, sync=self.sync, keys=keys,
                                   levers=levers, trigger_keys=trigger_keys,
                                   start_opts=self._start_opts(), hub=self.hub,
                                   gateway=lambda: self.gateway)
        # The dashboard answers HTML for people, not JSON: its routes are not in ``endpoints``
        # (the JSON API, documented in OpenAPI); tests/dashboard covers its bad input.
        self.dashboard = Dashboard(core, levers, self.sync, self.hub)
        pages = self.dashboard.routes()
        self._templates = {route.endpoint: route.path.replace(":path}", "}")
                           for route in [*self._routes, *pages] if isinstance(route, Route)}
        starlette = Starlette(
            routes=[*self._routes, *pages],
            exception_handlers={
                RequestRejected: _rejected,
                HTTPException: _http_error,
                Exception: _crash,
            },
            middleware=[
                Middleware(
                    CORSMiddleware,
                    allow_origin_regex=".*",
                    allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
                    allow_headers=["*"],
                    expose_headers=["Link", "Mcp-Session-Id"],
                    max_age=3600,
                )
            ],
        )
        self._rest = ServerKind(starlette, kind)

    def _start_opts(self) -> dict[str, Any]:
        """What ``GET /dev`` says the server was started with (Inngest's ``startOpts``)."""
        watch = self._watch or AppWatch()
        return {"urls": list(watch.urls), "autodiscover": watch.discover,
                "poll": bool(watch.urls or watch.discover), "poll_interval": watch.interval,
                "require_keys": not self.settings.dev, "persist": True}

    def _route_of(self, scope: Scope) -> str:
        """The route template a request went to (a metrics label: never the raw path)."""
        if scope["path"].startswith("/e/"):
            return "/e/{key}"
        return self._templates.get(scope.get("endpoint"), "unmatched")

    @property
    def endpoints(self) -> list[tuple[str, str]]:
        """Every ``(method, path)`` the app answers (``HEAD`` aside), paths as the OpenAPI
        document writes them: what a test must cover."""
        return sorted((method, re.sub(r":\w+}", "}", route.path))
                      for route in self._routes for method in route.methods or ()
                      if method != "HEAD")

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Core]:
        if self.core is None:
            self.core = await Core.start(self.settings, on_dead=self._on_dead)
            self._build(self.core)
        if self._owns_core:
            self.runtime = Runtime(self.core, self._apps, env=self._env, settings=self._engine,
                                   http=self._http, connect=self.hub)
            try:
                await self.runtime.start()
                await self._watch_apps(self.core)
                await self._open_gateway(self.core)
            except BaseException:
                await self.core.close()
                raise
        try:
            yield self.core
        finally:
            if self._poller is not None:
                await self._poller.stop()
                self._poller = None
            if self.sync is not None:
                await self.sync.close()
            if self.dashboard is not None:
                await self.dashboard.close()
            # Workers leave first, while the engine's calls in flight still get their grace:
            # the calls this process made to them are answered through the process they
            # move to (the hub hands them over), not cut when the grace ends.
            if self.gateway is not None:
                await self.gateway.drain()
            if self.runtime is not None:
                await self.runtime.stop(self._grace)
                self.runtime = None
            if self.gateway is not None:
                await self.gateway.stop()
                self.gateway = None
            if self._owns_core and self.core is not None:
                await self.core.close()
                self.core = None
            # Last: the spans of what stopped above, before the process ends.
            await asyncio.to_thread(tracing.flush)

    async def _open_gateway(self, core: Core) -> None:
        """Workers' sockets (Connect) are taken where ``ConnectSettings.gateway_port`` says."""
        if core.settings.connect.gateway_port is None:
            return
        assert self.sync is not None
        gateway = Gateway(core, self.hub, self.sync)
        try:
            await gateway.start()
        except OSError as exc:
            if core.settings.connect.gateway_port_given:
                raise
            log.warning("no Connect gateway: port %s: %s (choose one with "
                        "--connect-gateway-port)", core.settings.connect.gateway_port, exc)
            return
        self.gateway = gateway

    async def _watch_apps(self, core: Core) -> None:
        watch = self._watch
        if watch is None or not core.settings.dev or not (watch.urls or watch.discover):
            return
        assert self.sync is not None
        env = await core.gate.env_for(DEV_ENV, "api")
        self._poller = AppPoller(self.sync, env.id, watch.urls, supervisor=core.supervisor,
                                 interval=watch.interval, discover=watch.discover,
                                 own_port=watch.own_port)
        await self._poller.start()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self._dispatch(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" \
                and scope["path"].startswith("/e/"):
            assert self._events is not None
            await self._events(scope, receive, send)  # admits and observes requests itself
            return
        await self._others(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in BODY_METHODS:
            await self._admitted(scope, receive, send)
            return
        assert self._rest is not None
        await self._rest(scope, receive, send)

    async def _admitted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A request with a body, through admission control (``shedding``); its ticket goes in
        the scope, for ``read_body`` to count what the body holds beyond its declared
        length."""
        assert self._rest is not None and self._shedder is not None
        declared = declared_length(header_map(scope))
        try:
            ticket = self._shedder.admit(declared, writes_events=scope["path"] == "/v1/events")
        except Overloaded as exc:
            await send_json(send, 503, {"error": exc.message, "status": 503},
                            [self._kind, *exc.headers])
            return
        if ticket is None:  # never acceptable: the route answers 413
            await self._rest(scope, receive, send)
            return
        scope[TICKET] = ticket
        try:
            await self._rest(scope, receive, send)
        finally:
            ticket.release()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        try:
            async with self.running():
                await send({"type": "lifespan.startup.complete"})
                message = await receive()
                assert message["type"] == "lifespan.shutdown"
        except BaseException as exc:
            log.error("Tidings could not start: %s", exc)
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.shutdown.complete"})


@dataclass(frozen=True, slots=True, kw_only=True)
class AppWatch:
    """``tidings dev``: SDK apps to keep synced (``-u``), and whether to look for more."""

    urls: tuple[str, ...] = ()
    discover: bool = False
    interval: float = 5.0
    own_port: int | None = None


def create_app(settings: Settings, core: Core | None = None, *,
               apps: Sequence[Tidings] = (), env: str = "dev",
               engine: EngineSettings | None = None,
               watch: AppWatch | None = None, http: bool = True,
               on_dead: Callable[[str], None] | None = None,
               grace: float = 30.0) -> TidingsApp:
    """The ASGI app. Without ``core`` it opens its own at lifespan start-up, with a runtime that
    routes events, runs the native functions of ``apps`` and (unless ``http`` is false) calls
    those of SDK apps; in dev, ``watch`` keeps SDK apps synced. ``on_dead(why)`` is called if
    one of the process's loops dies for good (the CLI stops the server). On shutdown the calls
    in flight get ``grace`` seconds to finish before their runs are handed back."""
    return TidingsApp(settings, core, apps=apps, env=env, engine=engine, watch=watch,
                      http=http, on_dead=on_dead, grace=grace)
