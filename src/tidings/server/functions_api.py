"""The functions of an environment under ``/v1/functions``: what tools (dashboards, test
harnesses, the CLI) need to know of each without reading the database.

``GET /v1/functions`` lists the live functions by slug; ``GET /v1/functions/{slug}`` gives one,
archived or not; ``POST /v1/functions/{slug}/invoke`` starts a run of one with a payload.
Each says its app, name, slug, triggers, retries, flow control as registered,
where it is served (the step URL of an SDK app's function; none for a native one) and when its
definition was written and its app last synced.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.apps import records
from tidings.apps.config import FLOW_CONTROL
from tidings.core import Core
from tidings.events.model import iso
from tidings.json_input import decode_json
from tidings.runs.model import HTTP_QUEUE
from tidings.server.http import read_body
from tidings.server.requests import (
    check_params,
    json_response,
    not_found,
    read_env,
    without_nul,
)
from tidings.server.run_levers import RunLevers, invoke_request
from tidings.server.runs_api import run_json
from tidings.triggerdev.wire import TRIGGER_QUEUE

# How a function is reached: an Inngest SDK app, a Trigger.dev v2 app, or in-process.
KINDS = {HTTP_QUEUE: "sdk", TRIGGER_QUEUE: "trigger"}


def function_json(listed: records.ListedFunction) -> dict[str, Any]:
    fn = listed.function
    config = fn.config
    return {
        "id": fn.id,
        "slug": fn.slug,
        "name": fn.name,
        "app_id": fn.app_id,
        "kind": KINDS.get(fn.queue, "native"),
        "url": fn.url,
        "triggers": list(config.get("triggers") or []),
        "retries": fn.retries,
        "flow": {key: config[key] for key in FLOW_CONTROL.values() if key in config},
        "archived": fn.archived_at is not None,
        "created_at": iso(listed.created_at),
        "updated_at": iso(listed.updated_at),
        "synced_at": iso(listed.synced_at if listed.synced_at is not None
                         else listed.updated_at),
    }


class FunctionsAPI:
    def __init__(self, core: Core, levers: RunLevers) -> None:
        self.core = core
        self.levers = levers

    def routes(self) -> list[Route]:
        return [
            Route("/v1/functions", self.list_functions, methods=["GET"]),
            Route("/v1/functions/{slug}", self.get_function, methods=["GET"]),
            Route("/v1/functions/{slug}/invoke", self.invoke, methods=["POST"]),
        ]

    async def list_functions(self, request: Request) -> Response:
        check_params(request, set())
        env = await read_env(self.core, request)
        found = await self.core.storage.read(partial(records.functions_of, env_id=env.id))
        return json_response(200, {"data": [function_json(f) for f in found]})

    async def get_function(self, request: Request) -> Response:
        check_params(request, set())
        env = await read_env(self.core, request)
        slug = without_nul(request.path_params["slug"], "slug")
        found = await self.core.storage.read(
            partial(records.function_named, env_id=env.id, slug=slug))
        if found is None:
            return not_found("function slug", slug)
        return json_response(200, {"data": function_json(found)})

    async def invoke(self, request: Request) -> Response:
        """Start a run of the function now with ``{"data", "user"}``: 201 with the run."""
        check_params(request, set())
        env = await read_env(self.core, request)
        slug = without_nul(request.path_params["slug"], "slug")
        body = await read_body(request.scope, request.receive,
                               self.core.settings.limits.max_body_bytes)
        data, user = invoke_request(decode_json(body) if body.strip() else {})
        found = await self.core.storage.read(
            partial(records.function_named, env_id=env.id, slug=slug))
        if found is None:  # named as GET /v1/functions/{slug} names it
            return not_found("function slug", slug)
        run, name = await self.levers.invoke(env, slug, data, user)
        return json_response(201, {"data": run_json(run, name)})
