"""What Inngest SDK apps call, and the levers over them.

* ``POST /fn/register``: an app registers its functions (out-of-band sync). Outside dev it
  authenticates with ``Authorization: Bearer`` and its environment's signing key (plain or
  hashed, with or without the ``signkey-…-`` prefix), which also says which environment it is;
  ``X-Inngest-Env`` puts it in a branch of that environment.
* ``GET /v0/runs/{id}/batch`` and ``/actions``: the events and memoized steps of a run, for calls
  too large to carry them (``use_api``).
* ``POST /v1/apps/sync {"url": …}`` pings an app so that it syncs (``422`` when it cannot be
  reached or its answer is refused); ``GET /v1/apps`` lists them, with the Connect workers
  connected to this process (``connections``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.apps import records
from tidings.apps.config import has_nul, is_http_url
from tidings.apps.sync import AppSync, SyncResult
from tidings.connect.hub import Hub
from tidings.core import Core
from tidings.engine.http_wire import memos, sdk_event
from tidings.errors import RequestRejected
from tidings.events.model import iso
from tidings.json_input import decode_json
from tidings.keys import SigningKeys
from tidings.runs import journal, store
from tidings.runs.model import Run
from tidings.server.connect_api import connection_json, workers_of
from tidings.server.http import read_body
from tidings.server.requests import (
    ULID_RE,
    check_params,
    error_response,
    json_response,
    not_found,
    read_env,
    sdk_env,
)

MAX_REGISTER_BYTES = 16 * 1024 * 1024


def app_json(app: records.AppRecord) -> dict[str, Any]:
    return {"url": app.url, "app_id": app.app_id, "sdk": app.sdk, "framework": app.framework,
            "status": app.status, "error": app.error, "functions": app.function_count,
            "synced_at": iso(app.synced_at), "checked_at": iso(app.checked_at)}


async def add_app(sync: AppSync, env_id: str, url: Any) -> SyncResult:
    """Sync the app at ``url`` (``POST /v1/apps/sync``, the dashboard's "add an app" and
    "resync"): ``RequestRejected`` naming ``url`` when it is not an http(s) URL or points
    where apps may not be; otherwise how the sync went, recorded on the app."""
    if not is_http_url(url) or has_nul(url):
        raise RequestRejected('url: expected {"url": "http(s)://…"}, the URL the app serves')
    refused = await sync.refused(url)
    if refused is not None:
        raise RequestRejected(f"url: {refused}")
    return await sync.ping(env_id, url)


class SdkAPI:
    def __init__(self, core: Core, sync: AppSync, keys: SigningKeys, hub: Hub) -> None:
        self.core = core
        self.sync = sync
        self.keys = keys
        self.hub = hub
        self.kind = core.settings.server_kind

    def routes(self) -> list[Route]:
        return [
            Route("/fn/register", self.register, methods=["POST"]),
            Route("/v0/runs/{run_id}/batch", self.batch, methods=["GET"]),
            Route("/v0/runs/{run_id}/actions", self.actions, methods=["GET"]),
            Route("/v1/apps", self.list_apps, methods=["GET"]),
            Route("/v1/apps/sync", self.sync_app, methods=["POST"]),
        ]

    async def register(self, request: Request) -> Response:
        expected = request.headers.get("x-inngest-expected-server-kind")
        if expected and expected.lower() != self.kind:
            return error_response(400, f"Expected server kind {expected}, got {self.kind}")
        env_id = await sdk_env(self.core, self.keys, request)
        raw = await read_body(request.scope, request.receive, MAX_REGISTER_BYTES)
        body = decode_json(raw, "Invalid request: the body")
        _, modified = await self.sync.register(env_id, body)
        return json_response(200, {"ok": True, "modified": modified})

    async def _run_of(self, request: Request) -> Run | None:
        env_id = await sdk_env(self.core, self.keys, request)
        run_id = request.path_params["run_id"]
        if not ULID_RE.fullmatch(run_id):
            return None  # not an id Tidings gives (and not sent to the database)
        run = await self.core.storage.read(lambda tx: store.get_run(tx, run_id))
        return run if run is not None and run.env_id == env_id else None

    async def batch(self, request: Request) -> Response:
        run = await self._run_of(request)
        if run is None:
            return not_found("run", request.path_params["run_id"])
        ids = run.event_ids or [run.event_id]
        rows = await self.core.storage.read(lambda tx: store.event_rows(tx, ids))
        by_id = {row.id: row for row in rows}
        events = []
        for event_id in ids:
            if event_id in by_id:
                stored = await self.core.events.open(by_id[event_id])
                events.append(sdk_event({"id": stored.key or stored.id, "name": stored.name,
                                         "data": stored.data, "user": stored.user,
                                         "ts": stored.ts, "v": stored.v,
                                         "meta": stored.meta}))
        return json_response(200, events)

    async def actions(self, request: Request) -> Response:
        run = await self._run_of(request)
        if run is None:
            return not_found("run", request.path_params["run_id"])
        run_id = run.id
        steps = await self.core.storage.read(lambda tx: journal.steps_of(tx, run_id))
        return json_response(200, memos(steps))

    async def list_apps(self, request: Request) -> Response:
        check_params(request, set())
        env = await read_env(self.core, request)
        apps = await self.core.storage.read(lambda tx: records.apps_of(tx, env.id))
        workers = await workers_of(self.hub, env.id)
        return json_response(200, {"data": [
            {**app_json(a), "connections": [connection_json(w, self.hub) for w in workers
                                            if a.app_id is not None and a.app_id in w.functions]}
            for a in apps]})

    async def sync_app(self, request: Request) -> Response:
        check_params(request, set())
        env = await read_env(self.core, request)
        raw = await read_body(request.scope, request.receive, 64 * 1024)
        body = decode_json(raw)
        if not isinstance(body, dict):
            raise RequestRejected('the body is a JSON object: {"url": "http(s)://…"}')
        unknown = sorted(set(body) - {"url"})
        if unknown:
            raise RequestRejected(f"unknown field(s): {', '.join(unknown)}; the body is "
                                  '{"url": "http(s)://…"}')
        result = await add_app(self.sync, env.id, body.get("url"))
        if result.status != records.SYNCED:
            # The request was fine and Tidings did its part: what failed is the app at that URL
            # (a 5xx would say Tidings failed, and page whoever runs it).
            return json_response(422, {"error": result.error, "status": 422,
                                       "data": result.to_json()})
        return json_response(200, {"data": result.to_json()})
