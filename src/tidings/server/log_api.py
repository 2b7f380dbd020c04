"""The event log under ``/v1/events``: list and read stored events, and send events with their
records back (Trigger.dev-style), through the same sequence as ``POST /e/{key}``."""

from __future__ import annotations

from functools import partial

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.core import Core
from tidings.errors import RequestRejected
from tidings.events.model import iso
from tidings.flow import status as flow_status
from tidings.functions.expressions import ExpressionError
from tidings.ids import floor_id, now_ms
from tidings.observe import metrics
from tidings.server.accept import accept_events, rejection
from tidings.server.event_search import EventSearch, check_condition, search
from tidings.server.http import TICKET, read_body
from tidings.server.requests import (
    ULID_RE,
    bearer,
    branch_header,
    check_params,
    cursor_param,
    error_response,
    json_response,
    limit_param,
    not_found,
    read_access,
    time_param,
)
from tidings.storage.base import Environment


def event_search(core: Core, env: Environment, request: Request) -> EventSearch:
    """The search the query parameters of ``GET /v1/events`` (and of the dashboard's events
    page) ask for: ``name`` (``prefix/*`` for a prefix), ``if`` (CEL over ``event``),
    ``since``, ``until``, ``cursor``, ``limit``."""
    limit = limit_param(request)
    since, until = time_param(request, "since"), time_param(request, "until")
    cursor = cursor_param(request)
    name = request.query_params.get("name") or None
    if name is not None and len(name) > core.settings.limits.max_name_chars:
        raise RequestRejected(f"name: an event name has at most "
                              f"{core.settings.limits.max_name_chars} characters")
    condition = request.query_params.get("if") or None
    if condition is not None:
        try:
            check_condition(condition)
        except ExpressionError as exc:
            raise RequestRejected(f"if: {exc.message}") from None
    return EventSearch(env_id=env.id, name=name, condition=condition,
                       min_id=floor_id(since) if since is not None else None,
                       max_id=floor_id(until) if until is not None else None,
                       before_id=cursor, limit=limit)


class EventLogAPI:
    def __init__(self, core: Core) -> None:
        self.core = core
        # Dev takes any key and needs none, as for reads.
        self._dev_key = "dev" if core.settings.dev else ""

    def routes(self) -> list[Route]:
        # One route per path, so a 405 names every method the path has in ``Allow``.
        return [
            Route("/v1/events", self.events, methods=["GET", "POST"]),
            Route("/v1/events/{event_id}", self.get_event, methods=["GET"]),
        ]

    async def events(self, request: Request) -> Response:
        return await (self.send_events if request.method == "POST"
                      else self.list_events)(request)

    async def list_events(self, request: Request) -> Response:
        core = self.core
        check_params(request, {"name", "if", "since", "until", "cursor", "limit"})
        access = await read_access(core, request)
        env = access.env
        ttl = (await core.ingest.retention(env.id)).events_ttl_ms
        page = await search(core.storage, core.events, event_search(core, env, request))
        return json_response(200, {"data": [event.to_json(reads_user=access.reads_user)
                                            for event in page.events],
                                   "cursor": page.cursor,
                                   # Where retention cuts the log: nothing older is listed.
                                   "retained_since": None if ttl is None
                                   else iso(now_ms() - ttl)})

    async def get_event(self, request: Request) -> Response:
        core = self.core
        check_params(request, set())
        access = await read_access(core, request)
        env = access.env
        event_id = request.path_params["event_id"]
        event = await core.events.get(env.id, event_id) if ULID_RE.fullmatch(event_id) else None
        if event is None:
            return not_found("event", event_id)
        skipped = await core.storage.read(partial(flow_status.skips, event_id=event.id))
        return json_response(200, {"data": {**event.to_json(reads_user=access.reads_user),
                                            "skipped": skipped}})

    async def send_events(self, request: Request) -> Response:
        """Trigger.dev-style sending: the stored records come back, not only ids."""
        core = self.core
        check_params(request, set())
        branch = branch_header(request)
        try:
            env, ids = await accept_events(
                core, key=bearer(request) or self._dev_key, branch=branch,
                read_body=lambda limit: read_body(request.scope, request.receive, limit),
                seed=request.headers.get("x-inngest-event-id-seed"),
                ticket=request.scope.get(TICKET))
        except RequestRejected as exc:
            metrics.received("rest_api", "overloaded" if exc.status == 503 else "rejected")
            payload = rejection(exc)
            del payload["ids"]
            return json_response(exc.status, payload)
        metrics.received("rest_api", "accepted", len(ids))
        records = []
        for event_id in ids:
            stored = await core.events.get(env.id, event_id)
            if stored is None:
                # The id is taken by an event of another environment: a seed header reused
                # across environments. Say so instead of answering with records we do not have.
                return error_response(409, f"event id {event_id} (from x-inngest-event-id-seed) "
                                      "belongs to another environment; send without the seed")
            # An event key reads nothing: under serve the record's user is masked, as for an
            # API key without --reads-user (a seed can name an event sent before).
            records.append(stored.to_json(reads_user=core.settings.dev))
        return json_response(200, {"data": records})
