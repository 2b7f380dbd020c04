"""The JSON API under ``/v1``: reading the event log, and sending events with records back
(the runs, replays and delivery levers are in ``runs_api.py``, on the helpers here).

Every answer is JSON: ``{"data": ...}`` on success, ``{"error": "...", "status": N}`` otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.core import Core
from tidings.errors import RequestRejected
from tidings.events.parse import parse_events
from tidings.events.search import EventSearch, check_condition, search
from tidings.flow import status as flow_status
from tidings.ids import IdSeed, floor_id, now_ms
from tidings.router.expressions import ExpressionError
from tidings.server.event_api import BRANCH_NOT_UTF8, rejection
from tidings.server.http import TICKET, encode, read_body
from tidings.storage.base import Environment

if TYPE_CHECKING:
    from tidings.engine.runtime import Runtime

ULID_RE = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
# ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
MILLIS_RE = re.compile(r"[0-9]{1,15}")
LIMIT_RE = re.compile(r"[0-9]{1,4}")
MAX_MILLIS = (1 << 48) - 1  # the largest time a ULID holds
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000


def json_response(status: int, payload: Any) -> Response:
    return Response(encode(payload), status_code=status, media_type="application/json")


def error_response(status: int, message: str) -> Response:
    return json_response(status, {"error": message, "status": status})


def not_found(what: str, ident: str) -> Response:
    """A 404 naming what was not found (a long id cut short: it came from the caller)."""
    shown = ident if len(ident) <= 100 else ident[:100] + "…"
    return error_response(404, f"{what} {shown!r} not found")


def bearer(request: Request) -> str:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def branch_header(request: Request) -> str | None:
    """``X-Inngest-Env``, which must be UTF-8 (Starlette hands header values over decoded as
    latin-1, so bytes that are not UTF-8 would otherwise name a branch of mojibake)."""
    value = request.headers.get("x-inngest-env")
    if not value:
        return None
    try:
        return value.encode("latin-1").decode()
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise RequestRejected(BRANCH_NOT_UTF8) from None


async def read_env(core: Core, request: Request) -> Environment:
    """The environment a read is for: the API key's (any in dev), or its branch."""
    branch = branch_header(request)
    return await core.gate.env_for(bearer(request) or ("dev" if core.settings.dev else ""),
                                   "api", branch)


def without_nul(value: str, field: str) -> str:
    """``value``, refused when it holds NUL: no name or slug does (PostgreSQL text cannot hold
    it), so it is not sent to the database."""
    if "\x00" in value:
        raise RequestRejected(f"{field}: must not contain NUL characters")
    return value


def check_params(request: Request, allowed: set[str]) -> None:
    """Refuse query parameters not in ``allowed``, and values that are not UTF-8 or hold NUL
    (Starlette would pass the first on with U+FFFD in place; PostgreSQL cannot take the
    second)."""
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise RequestRejected(f"unknown query parameter(s): {', '.join(unknown)}; "
                              f"allowed: {', '.join(sorted(allowed) or ['none'])}")
    raw = request.scope.get("query_string", b"")
    if not raw:
        return
    for pair in raw.split(b"&"):
        name, _, value = pair.partition(b"=")
        try:
            text = unquote_to_bytes(value.replace(b"+", b" ")).decode()
        except UnicodeDecodeError:
            raise RequestRejected(f"{_name(name)}: not valid UTF-8 (percent-encode UTF-8 "
                                  "bytes)") from None
        if "\x00" in text:
            raise RequestRejected(f"{_name(name)}: must not contain NUL characters")


def _name(raw: bytes) -> str:
    return unquote_to_bytes(raw).decode(errors="replace")[:100]


def time_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    return parse_time(name, raw)


def parse_time(name: str, raw: str) -> int:
    """Milliseconds since the epoch from ISO-8601 with an offset, or from milliseconds."""
    if MILLIS_RE.fullmatch(raw) and int(raw) <= MAX_MILLIS:
        return int(raw)
    try:
        moment = datetime.fromisoformat(raw.upper().replace("Z", "+00:00"))
    except ValueError:
        raise RequestRejected(f"{name}: expected an ISO-8601 time or milliseconds since the "
                              f"epoch (0 to {MAX_MILLIS}), got {raw!r}") from None
    if moment.tzinfo is None:
        raise RequestRejected(f"{name}: an ISO-8601 time needs a UTC offset (for example Z)")
    return int(moment.timestamp() * 1000)


def limit_param(request: Request) -> int:
    raw = request.query_params.get("limit", str(DEFAULT_LIMIT))
    if not LIMIT_RE.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise RequestRejected(f"limit: expected a whole number from 1 to {MAX_LIMIT}, got {raw!r}")
    return int(raw)


def event_search(core: Core, env: Environment, request: Request) -> EventSearch:
    """The search that the query parameters of ``GET /v1/events`` (and the dashboard's events
    page) ask for: ``name`` (``prefix/*`` for a prefix), ``if`` (CEL over ``event``),
    ``since``, ``until``, ``cursor``, ``limit``."""
    limit = limit_param(request)
    since, until = time_param(request, "since"), time_param(request, "until")
    cursor = request.query_params.get("cursor") or None
    if cursor is not None and not ULID_RE.fullmatch(cursor):
        raise RequestRejected(f"cursor: not a cursor this API returned: {cursor!r}")
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


def routes(core: Core, runtime: Callable[[], Runtime | None] | None = None) -> list[Route]:
    """Every route of the JSON API. ``runtime`` gives the process's runtime, if one runs: the
    runs API wakes its executors when it queues runs."""
    from tidings.server.flow_api import FlowAPI
    from tidings.server.functions_api import FunctionsAPI
    from tidings.server.runs_api import RunsAPI  # it builds on the helpers of this module

    async def list_events(request: Request) -> Response:
        check_params(request, {"name", "if", "since", "until", "cursor", "limit"})
        env = await read_env(core, request)
        page = await search(core.storage, core.events, event_search(core, env, request))
        return json_response(200, {"data": [event.to_json() for event in page.events],
                                   "cursor": page.cursor})

    async def get_event(request: Request) -> Response:
        check_params(request, set())
        env = await read_env(core, request)
        event_id = request.path_params["event_id"]
        event = await core.events.get(env.id, event_id) if ULID_RE.fullmatch(event_id) else None
        if event is None:
            return not_found("event", event_id)
        skipped = await core.storage.read(partial(flow_status.skips, event_id=event.id))
        return json_response(200, {"data": {**event.to_json(), "skipped": skipped}})

    # Dev takes any key and needs none, as for reads.
    dev_key = "dev" if core.settings.dev else ""

    async def send_events(request: Request) -> Response:
        """Trigger.dev-style sending: the stored records come back, not only ids."""
        check_params(request, set())
        branch = branch_header(request)
        try:
            env = await core.gate.env_for(bearer(request) or dev_key, "event", branch)
            limits = core.settings.limits
            body = await read_body(request.scope, request.receive, limits.max_body_bytes)
            now = now_ms()
            events = parse_events(body, limits, now)
            ticket = request.scope.get(TICKET)
            if ticket is not None:
                ticket.parsed(len(events))  # admission control counts them from here on
            seed = IdSeed.parse(request.headers.get("x-inngest-event-id-seed"))
            ids = await core.ingest.append(env.id, events, seed, received_at=now)
        except RequestRejected as exc:
            payload = rejection(exc)
            del payload["ids"]
            return json_response(exc.status, payload)
        records = []
        for event_id in ids:
            stored = await core.events.get(env.id, event_id)
            if stored is None:
                # The id is taken by an event of another environment: a seed header reused
                # across environments. Say so instead of answering with records we do not have.
                return error_response(409, f"event id {event_id} (from x-inngest-event-id-seed) "
                                      "belongs to another environment; send without the seed")
            records.append(stored.to_json())
        return json_response(200, {"data": records})

    async def events(request: Request) -> Response:
        return await (send_events if request.method == "POST" else list_events)(request)

    async def health(request: Request) -> Response:
        """200 while every long-lived loop of the process runs (those retrying after a failure
        are listed under ``failing``); 503 once one is dead for good (the process then exits,
        see ``supervision.py``)."""
        report = core.supervisor.report()
        if not report.healthy:
            dead = "; ".join(f"{name}: {error}" for name, error in report.dead.items())
            return json_response(503, {"status": 503, "message": f"stopped for good: {dead}",
                                       "dead": report.dead, "failing": report.failing})
        if report.failing:
            return json_response(200, {"status": 200, "message": "OK, retrying after failures",
                                       "failing": report.failing})
        return json_response(200, {"status": 200, "message": "OK"})

    # One route per path, so a 405 names every method the path has in ``Allow``.
    return [
        Route("/health", health, methods=["GET"]),
        Route("/v1/events", events, methods=["GET", "POST"]),
        Route("/v1/events/{event_id}", get_event, methods=["GET"]),
        *RunsAPI(core, runtime).routes(),
        *FlowAPI(core, runtime).routes(),
        *FunctionsAPI(core).routes(),
    ]
