"""The runs API under ``/v1``: what ran, what runs and what waits, and the operator's levers:
cancel a run, rerun it, replay many, stop a delayed event before it is delivered.

It answers to the same API keys as ``GET /v1/events``. A write that queues runs or emits events
commits first, then wakes this process's runtime (when one runs here); other processes hear
of it through ``NOTIFY`` (PostgreSQL) or their next poll.

Replays rerun their first ``REPLAY_BATCH`` runs before answering (``201``, done); a larger
replay answers ``202`` and goes on in batches, one transaction each, in a background task
(``engine/replays.py``). The runs left are in the database: if this process stops first, the
next process to start carries on.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.core import Core
from tidings.errors import RequestRejected
from tidings.events.model import iso
from tidings.events.reads import get_event
from tidings.ids import floor_id
from tidings.json_input import decode_json
from tidings.runs import admin
from tidings.runs.admin import REPLAYABLE, TIMES, PauseRow, Replay, RunQuery
from tidings.runs.model import STATUSES, FailedAttempt, Run, StepRow
from tidings.server.http import read_body
from tidings.server.requests import (
    ULID_RE,
    check_params,
    cursor_param,
    dry_run,
    json_response,
    limit_param,
    not_found,
    range_request,
    read_access,
    read_env,
    time_param,
)
from tidings.server.run_levers import REPLAY_BATCH, RunLevers
from tidings.storage.base import Environment

log = logging.getLogger("tidings.server")
__all__ = ["REPLAY_BATCH", "RUN_FILTERS", "RunsAPI", "run_json", "run_query", "step_json"]
REPLAY_FIELDS = ("function", "since", "until", "statuses")
# The filters of ``GET /v1/runs`` (and of the dashboard's runs page).
RUN_FILTERS = ("function", "app", "event_id", "status", "time", "since", "until")


def run_json(run: Run, slug: str) -> dict[str, Any]:
    return {
        "id": run.id,
        "function": slug,
        "status": run.status,
        "attempt": run.attempt,
        "event_id": run.event_id,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "ended_at": iso(run.ended_at),
        "due_at": iso(run.due_at),
        "output": run.output,
        "error": run.error,
        "parent_run_id": run.parent_run_id,
        "parent_step": run.parent_step,
        "rerun_of": run.rerun_of,
        "replay_id": run.replay_id,
    }


def waiting_json(waiting: dict[str, Any] | None) -> dict[str, Any] | None:
    """Why flow control holds the run back: ``reason`` (``concurrency_limited``, ``throttled``,
    ``debounced``, ``batching``), ``key``, ``since`` and ``until`` (when it looks again)."""
    if waiting is None:
        return None
    return {**waiting, "since": iso(waiting["since"]), "until": iso(waiting["until"])}


def step_json(step: StepRow, invoked: dict[str, str],
              failed: list[FailedAttempt] | None = None,
              reused_from: str | None = None) -> dict[str, Any]:
    """A step, with the run it invoked (``invoked``: the run's children by step), its
    ``failed`` attempts, and the run whose result it reuses (a rerun from a later step)."""
    duration = None
    if step.started_at is not None and step.ended_at is not None:
        duration = step.ended_at - step.started_at
    return {
        "id": step.step,
        "name": step.name,
        "kind": step.kind,
        "invoked_run_id": invoked.get(step.step) if step.kind == "invoke" else None,
        "status": step.status,
        "attempts": step.attempts,
        "started_at": iso(step.started_at),
        "ended_at": iso(step.ended_at),
        "duration_ms": duration,
        "output": step.output,
        "reused_from": reused_from,
        "failed_attempts": [{"attempt": a.attempt, "started_at": iso(a.started_at),
                             "ended_at": iso(a.ended_at), "error": a.error}
                            for a in failed or ()],
    }


def pause_json(pause: PauseRow) -> dict[str, Any]:
    return {
        "step": pause.step,
        "name": pause.name,
        "kind": pause.kind,
        "event": pause.event_name,
        "condition": pause.condition,
        "invoked_run_id": pause.correlation,
        "until": iso(pause.until),
    }


def replay_json(replay: Replay) -> dict[str, Any]:
    return {
        "id": replay.id,
        "function": replay.function,
        "since": iso(replay.since_ms),
        "until": iso(replay.until_ms),
        "statuses": replay.statuses,
        "total": replay.total,
        "created": replay.created,
        "done": replay.done,
        "created_at": iso(replay.created_at),
    }


def _choose(raw: str, allowed: tuple[str, ...], what: str) -> str:
    for status in allowed:
        if status.lower() == raw.strip().lower():
            return status
    raise RequestRejected(f"{what}: {raw!r} is not one of {', '.join(allowed)}")


class RunsAPI:
    """The handlers: requests in, answers out; what they do is ``RunLevers``' (shared with
    the dashboard)."""

    def __init__(self, core: Core, levers: RunLevers) -> None:
        self.core = core
        self.levers = levers

    def routes(self) -> list[Route]:
        return [
            Route("/v1/runs", self.list_runs, methods=["GET"]),
            Route("/v1/runs/{run_id}", self.get_run, methods=["GET"]),
            Route("/v1/runs/{run_id}/cancel", self.cancel_run, methods=["POST"]),
            Route("/v1/runs/{run_id}/rerun", self.rerun, methods=["POST"]),
            Route("/v1/events/{event_id}/runs", self.runs_of_event, methods=["GET"]),
            Route("/v1/events/{event_id}/cancel", self.cancel_event, methods=["POST"]),
            Route("/v1/replays", self.start_replay, methods=["POST"]),
            Route("/v1/replays/{replay_id}", self.get_replay, methods=["GET"]),
        ]

    async def _target(self, request: Request, param: str) -> tuple[Environment, str]:
        """The caller's environment and the id the path names (``run_id``, ``event_id``…) for
        a handler of one run or event, which takes no query parameters."""
        check_params(request, set())
        return await read_env(self.core, request), request.path_params[param]

    # -- reads ---------------------------------------------------------------------------------

    async def list_runs(self, request: Request) -> Response:
        check_params(request, set(RUN_FILTERS) | {"cursor", "limit"})
        env = await read_env(self.core, request)
        query = await run_query(self.levers, env, request)
        page = await self.core.storage.read(partial(admin.find_runs, query=query))
        return json_response(200, {"data": [run_json(run, name) for run, name in page.runs],
                                   "cursor": page.cursor})

    async def get_run(self, request: Request) -> Response:
        check_params(request, set())
        access = await read_access(self.core, request)
        detail = await self.levers.detail(access.env, request.path_params["run_id"])
        reused = detail.reused
        data = {**run_json(detail.run, detail.slug),
                "steps": [step_json(s, detail.invoked, detail.failed.get(s.step),
                                    detail.run.rerun_of if s.step in reused else None)
                          for s in detail.steps],
                "pauses": [pause_json(p) for p in detail.pauses],
                "waiting": waiting_json(detail.waiting),
                "event": detail.event.to_json(reads_user=access.reads_user)
                if detail.event is not None else None}
        return json_response(200, {"data": data})

    async def runs_of_event(self, request: Request) -> Response:
        env, event_id = await self._target(request, "event_id")
        if not ULID_RE.fullmatch(event_id) or await self.core.storage.read(
                lambda tx: get_event(tx, env.id, event_id)) is None:
            return not_found("event", event_id)
        rows = await self.core.storage.read(
            partial(admin.runs_started_by, env_id=env.id, event_id=event_id))
        return json_response(200, {"data": [run_json(run, slug) for run, slug in rows]})

    async def get_replay(self, request: Request) -> Response:
        env, replay_id = await self._target(request, "replay_id")
        replay = None
        if ULID_RE.fullmatch(replay_id):
            replay = await self.core.storage.read(partial(admin.get_replay, replay_id=replay_id))
        if replay is None or replay.env_id != env.id:
            return not_found("replay", replay_id)
        return json_response(200, {"data": replay_json(replay)})

    # -- levers --------------------------------------------------------------------------------

    async def cancel_run(self, request: Request) -> Response:
        env, run_id = await self._target(request, "run_id")
        run, slug = await self.levers.cancel(env, run_id)
        return json_response(200, {"data": run_json(run, slug)})

    async def rerun(self, request: Request) -> Response:
        env, run_id = await self._target(request, "run_id")
        body = await read_body(request.scope, request.receive,
                               self.core.settings.limits.max_body_bytes)
        run, slug = await self.levers.rerun(env, run_id, rerun_request(body))
        return json_response(201, {"data": run_json(run, slug)})

    async def cancel_event(self, request: Request) -> Response:
        check_params(request, set())
        access = await read_access(self.core, request)
        event = await self.levers.cancel_delivery(access.env, request.path_params["event_id"])
        return json_response(200, {"data": event.to_json(reads_user=access.reads_user)})

    async def start_replay(self, request: Request) -> Response:
        check_params(request, set())
        env = await read_env(self.core, request)
        body = await read_body(request.scope, request.receive,
                               self.core.settings.limits.max_body_bytes)
        slug, since, until, statuses, dry_run = _replay_request(body)
        fn = await self.levers.function(env, slug)
        if dry_run:
            matched = await self.levers.count(fn, since, until, statuses)
            return json_response(200, {"data": {
                "function": slug, "since": iso(since), "until": iso(until),
                "statuses": statuses, "matched": matched}})
        replay, more = await self.levers.replay(fn, since, until, statuses)
        return json_response(202 if more else 201, {"data": replay_json(replay)})


async def run_query(levers: RunLevers, env: Environment, request: Request) -> RunQuery:
    """The page of runs the query parameters of ``GET /v1/runs`` (and of the dashboard's runs
    page) ask for: ``function``, ``app``, ``event_id``, ``status`` (repeated or
    comma-separated), ``since`` and ``until`` (of the time ``time`` names: ``queued``, the
    default, ``started`` or ``ended``), ``cursor``, ``limit``."""
    params = request.query_params
    limit = limit_param(request)
    time = (params.get("time") or "queued").strip().lower()
    if time not in TIMES:
        raise RequestRejected(f"time: expected one of {', '.join(TIMES)}, got "
                              f"{params.get('time')!r}")
    since, until = time_param(request, "since"), time_param(request, "until")
    if since is not None and until is not None and until <= since:
        raise RequestRejected("until: must be after since")
    cursor = cursor_param(request)
    statuses = [_choose(part, STATUSES, "status")
                for value in params.getlist("status")
                for part in value.split(",") if part.strip()]
    event_id = params.get("event_id") or None
    if event_id is not None and not ULID_RE.fullmatch(event_id):
        raise RequestRejected(f"event_id: expected an event id (26 characters, a ULID), got "
                              f"{event_id[:100]!r}")
    slug = params.get("function") or None
    fn = await levers.function(env, slug) if slug is not None else None
    app = params.get("app") or None
    function_ids = await levers.functions_of_app(env, app) if app is not None else None
    if time == "queued":
        min_id = floor_id(since) if since is not None else None
        time_since = time_until = None
    else:  # a run starts and ends after it was queued: it was queued before ``until``
        min_id, time_since, time_until = None, since, until
    return RunQuery(env_id=env.id, function_id=fn.id if fn else None,
                    statuses=statuses or STATUSES, min_id=min_id,
                    max_id=floor_id(until) if until is not None else None,
                    before_id=cursor, limit=limit, function_ids=function_ids,
                    event_id=event_id, time=time, time_since=time_since, time_until=time_until)


def rerun_request(body: bytes) -> str | None:
    """The step a rerun starts from (``{"from_step": "<step id>"}``), or None: an empty body
    or ``{}`` reruns the whole run."""
    if not body.strip():
        return None
    payload = decode_json(body)
    if not isinstance(payload, dict):
        raise RequestRejected("the body: a JSON object, {\"from_step\": \"<step id>\"} or {}")
    unknown = sorted(set(payload) - {"from_step"})
    if unknown:
        shown = ", ".join(repr(name[:50]) for name in unknown[:5])
        raise RequestRejected(f"unknown field(s): {shown}; expected from_step")
    step = payload.get("from_step")
    if step is None:
        return None
    if not isinstance(step, str) or not step or "\x00" in step:
        raise RequestRejected("from_step: the id of one of the run's steps (text)")
    return step


def _replay_request(body: bytes) -> tuple[str, int, int, list[str], bool]:
    payload, slug, since, until = range_request(body, REPLAY_FIELDS, optional=("dry_run",))
    raw = payload["statuses"]
    if not isinstance(raw, list) or not raw or not all(isinstance(s, str) for s in raw):
        raise RequestRejected(f"statuses: a non-empty list of {', '.join(REPLAYABLE)}")
    statuses = list(dict.fromkeys(_choose(s, REPLAYABLE, "statuses") for s in raw))
    return slug, since, until, statuses, dry_run(payload)
