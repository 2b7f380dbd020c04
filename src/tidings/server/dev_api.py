"""``GET /dev``: what the Inngest Dev Server says about itself, for the tools that ask it (the
inngest-js test harness polls it until the functions it expects are registered).

The shape is the dev server's ``InfoResponse``: ``version``, ``authed``, ``startOpts``,
``functions`` (each as Inngest's ``inngest.Function`` marshals it: ``id``, ``name``, ``slug``,
``triggers``, ``steps`` with ``id``, ``name``, ``uri`` and — only when the SDK registered them —
``retries``, and the flow control the function registered), ``handlers`` (the synced apps),
``isSingleNodeService``, ``isMissingSigningKey``, ``isMissingEventKeys``, ``features``. A
function of a Tidings app (native) has no step URL, so no steps. Outside dev, as Inngest's
self-hosted server does, it answers 404.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.apps import records
from tidings.apps.config import FLOW_CONTROL
from tidings.core import Core
from tidings.events.model import iso
from tidings.functions import registration
from tidings.functions.model import FunctionRow
from tidings.server.requests import check_params, error_response, json_response, read_env
from tidings.version import VERSION


def function_json(fn: FunctionRow) -> dict[str, Any]:
    """A function as the dev server lists it."""
    config = fn.config
    out: dict[str, Any] = {"id": fn.id, "name": fn.name, "slug": fn.slug,
                           "triggers": config.get("triggers") or [], "steps": []}
    if fn.url:
        step = config.get("step") or {"id": "step", "name": "step"}
        out["steps"] = [{**step, "uri": fn.url}]
    for key in FLOW_CONTROL.values():
        if config.get(key) is not None:
            out[key] = config[key]
    return out


class DevAPI:
    def __init__(self, core: Core, start_opts: dict[str, Any]) -> None:
        self.core = core
        self.start_opts = start_opts

    def routes(self) -> list[Route]:
        return [Route("/dev", self.info, methods=["GET"])]

    async def info(self, request: Request) -> Response:
        if not self.core.settings.dev:
            return error_response(404, "GET /dev is served by tidings dev only")
        check_params(request, set())
        env = await read_env(self.core, request)

        def read(tx: Any) -> tuple[list[FunctionRow], list[records.AppRecord]]:
            functions = [f for f in registration.live_functions(tx) if f.env_id == env.id]
            return functions, records.apps_of(tx, env.id)

        functions, apps = await self.core.storage.read(read)
        handlers = [{"functionIDs": [f.id for f in functions if f.app_id == app.app_id],
                     "sdk": {"url": app.url, "appName": app.app_id, "sdk": app.sdk,
                             "framework": app.framework},
                     "createdAt": iso(app.created_at), "updatedAt": iso(app.checked_at)}
                    for app in apps]
        return json_response(200, {
            "version": f"tidings-{VERSION}", "authed": False,
            "startOpts": self.start_opts, "functions": [function_json(f) for f in functions],
            "handlers": handlers, "isSingleNodeService": True, "isMissingSigningKey": False,
            "isMissingEventKeys": False, "features": {}})

