"""The functions and apps pages: every function of every app (native and SDK) with its
triggers, flow control and recent runs; every app, its sync state and errors word for word;
adding an app by URL and resyncing one (``add_app``, as ``POST /v1/apps/sync``); invoking a
function with a payload (``RunLevers.invoke``, as ``POST /v1/functions/{slug}/invoke``)."""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tidings.apps import records
from tidings.apps.config import FLOW_CONTROL
from tidings.apps.sync import AppSync
from tidings.connect.hub import Hub
from tidings.connect.relay import Remote
from tidings.connect.worker import Worker
from tidings.errors import ConfigError, RequestRejected
from tidings.functions.cron import parse_cron
from tidings.ids import now_ms
from tidings.json_input import decode_json
from tidings.runs import admin
from tidings.runs.admin import RunQuery
from tidings.runs.model import FAILED, HTTP_QUEUE
from tidings.server.connect_api import connection_json, workers_of
from tidings.server.dashboard.pages import Pages
from tidings.server.run_levers import INVOKE_FIELDS, invoke_request
from tidings.server.sdk_api import add_app
from tidings.storage.tx import Tx

RECENT_RUNS = 100  # runs a function's failure rate is taken over


class CatalogPages:
    def __init__(self, pages: Pages, sync: AppSync, hub: Hub) -> None:
        self.pages = pages
        self.core = pages.core
        self.sync = sync
        self.hub = hub

    def routes(self) -> list[Route]:
        return [
            Route("/functions", self.functions, methods=["GET"]),
            Route("/functions/{slug}/invoke", self.invoke, methods=["GET", "POST"]),
            Route("/apps", self.apps, methods=["GET", "POST"]),
        ]

    async def functions(self, request: Request) -> Response:
        viewer = await self.pages.viewer(request)
        env_id = viewer.env.id

        def read(tx: Tx) -> list[dict[str, Any]]:
            listed = records.functions_of(tx, env_id)
            out = []
            for item in listed:
                fn = item.function
                # The statuses alone (one index range), not the runs with their outputs.
                statuses = Counter({status: count for status, count in admin.count_statuses(
                    tx, RunQuery(env_id=env_id, function_id=fn.id), RECENT_RUNS).items()
                    if count})
                out.append({"fn": fn, "listed": item, "runs": statuses.total(),
                            "statuses": statuses,
                            "failed": statuses.get(FAILED, 0),
                            "kind": "SDK" if fn.queue == HTTP_QUEUE else "native",
                            "triggers": [trigger_view(t) for t in
                                         fn.config.get("triggers") or []],
                            "flow": {k: v for k, v in fn.config.items()
                                     if k in FLOW_CONTROL.values() and v is not None}})
            return out

        functions = await self.core.storage.read(read)
        return self.pages.html(request, "functions.html", functions=functions)

    async def invoke(self, request: Request) -> Response:
        """Start a run of a function with a JSON ``data`` (and ``user``), as
        ``POST /v1/functions/{slug}/invoke`` does (the same lever and refusals); lands on the
        new run's page."""
        viewer = await self.pages.viewer(request)
        slug = request.path_params["slug"]
        fn = await self.pages.levers.function(viewer.env, slug)
        form = {"data": "{}", "user": ""}
        if request.method == "GET":
            return self.pages.html(request, "invoke.html", fn=fn, form=form, errors={})
        posted = await self.pages.form(request)
        form = {key: posted.get(key, "") for key in INVOKE_FIELDS}
        try:
            body = {key: decode_json(form[key].strip().encode(), key)
                    for key in INVOKE_FIELDS if form[key].strip()}
            data, user = invoke_request(body)
            run, _ = await self.pages.levers.invoke(viewer.env, slug, data, user)
        except RequestRejected as exc:
            field = next((key for key in INVOKE_FIELDS if exc.message.startswith(key)),
                         "other")
            return self.pages.html(request, "invoke.html", exc.status, fn=fn, form=form,
                                   errors={field: exc.message})
        self.pages.feed.poke()  # open pages show it now
        return RedirectResponse(f"/runs/{run.id}", status_code=303)

    async def apps(self, request: Request) -> Response:
        viewer = await self.pages.viewer(request)
        errors: dict[str, str] = {}
        url = ""
        if request.method == "POST":
            form = await self.pages.form(request)
            url = form.get("url", "").strip()
            try:
                result = await add_app(self.sync, viewer.env.id, url)
            except RequestRejected as exc:
                errors["url"] = exc.message
            else:
                note = (f"{result.url}: synced" + (f" (app {result.app_id})"
                                                   if result.app_id else "")
                        if result.status == records.SYNCED else
                        f"{result.url}: {result.status}: {result.error}")
                return RedirectResponse("/apps?" + urlencode({"done": note}), status_code=303)

        def read(tx: Tx) -> tuple[list[records.AppRecord], list[records.ListedFunction]]:
            return records.apps_of(tx, viewer.env.id), records.functions_of(tx, viewer.env.id)

        sdk_apps, functions = await self.core.storage.read(read)
        native = Counter(item.function.app_id for item in functions
                         if item.function.queue != HTTP_QUEUE)
        # Connect workers, as GET /v1/apps lists them: every process's, under their apps.
        workers = await workers_of(self.hub, viewer.env.id)
        connections = {app.url: [worker_view(w, self.hub) for w in workers
                                 if app.app_id is not None and app.app_id in w.functions]
                       for app in sdk_apps}
        return self.pages.html(request, "apps.html", 400 if errors else 200, apps=sdk_apps,
                               connections=connections, native=sorted(native.items()),
                               errors=errors, url=url)


def worker_view(worker: Worker | Remote, hub: Hub) -> dict[str, Any]:
    """A Connect connection as the apps page shows it: as ``GET /v1/apps`` lists it, its SDK
    (``py:v0.5.19``) split into language and version, connected since when (ms)."""
    language, _, version = worker.sdk.partition(":")
    return {**connection_json(worker, hub), "language": language, "version": version or "—",
            "connected_ms": worker.connected_at}


def trigger_view(trigger: dict[str, Any]) -> dict[str, Any]:
    """A trigger as a pill shows it: its event or cron (with when it fires next), and its
    ``if`` expression."""
    view: dict[str, Any] = {"event": trigger.get("event"), "cron": trigger.get("cron"),
                            "expression": trigger.get("expression"),
                            "wildcard": "*" in str(trigger.get("event") or "")}
    if view["cron"]:
        view["next"] = next_fire(str(view["cron"]))
    return view


def next_fire(cron: str) -> int | None:
    """When a cron trigger fires next (ms), as the scheduler reads it; None when it cannot."""
    try:
        return parse_cron(cron).next_after(now_ms())
    except ConfigError:
        return None
