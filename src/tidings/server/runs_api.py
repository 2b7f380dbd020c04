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
from tidings.engine.replays import BATCH as REPLAYS_BATCH
from tidings.engine.replays import Replays
from tidings.errors import RequestRejected
from tidings.events.model import iso
from tidings.flow import status as flow_status
from tidings.flow.cancel import cancelled_event
from tidings.ids import floor_id, now_ms
from tidings.runs import store
from tidings.runs.model import STATUSES, TERMINAL, FunctionRow, Run, StepRow
from tidings.runs.store import REPLAYABLE, PauseRow, Replay, RunQuery
from tidings.server.http import read_body
from tidings.server.requests import (
    ULID_RE,
    check_params,
    cursor_param,
    error_response,
    json_response,
    limit_param,
    not_found,
    range_request,
    read_env,
    time_param,
    without_nul,
)
from tidings.storage.base import Environment, EventRow
from tidings.storage.tx import Tx

log = logging.getLogger("tidings.server")
REPLAY_BATCH = REPLAYS_BATCH
CANCELLED_EVENT = "tidings/function.cancelled"
CANCEL_REASON = "cancelled through the API"
REPLAY_FIELDS = ("function", "since", "until", "statuses")


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


def step_json(step: StepRow, invoked: dict[str, str]) -> dict[str, Any]:
    """A step, with the run it invoked (``invoked``: the run's children by step)."""
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
    """The handlers, with what they share: the core (its registry says whether anything
    listens for ``function.cancelled``; its wakers wake this process's executors) and the
    replays under way."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._registry = core.registry
        self._wake = core.wakers.wake
        self._replays = Replays(core.storage, self._wake, supervisor=core.supervisor)

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

    # -- reads ---------------------------------------------------------------------------------

    async def list_runs(self, request: Request) -> Response:
        check_params(request, {"function", "status", "since", "until", "cursor", "limit"})
        env = await read_env(self.core, request)
        limit = limit_param(request)
        since, until = time_param(request, "since"), time_param(request, "until")
        cursor = cursor_param(request)
        statuses = [_choose(part, STATUSES, "status")
                    for value in request.query_params.getlist("status")
                    for part in value.split(",") if part.strip()]
        slug = request.query_params.get("function") or None
        fn = await self._function(env, slug) if slug is not None else None
        if slug is not None and fn is None:
            return not_found("function", slug)
        query = RunQuery(env_id=env.id, function_id=fn.id if fn else None,
                         statuses=statuses or STATUSES,
                         min_id=floor_id(since) if since is not None else None,
                         max_id=floor_id(until) if until is not None else None,
                         before_id=cursor, limit=limit + 1)
        rows = await self.core.storage.read(partial(store.list_runs, query=query))
        page = rows[:limit]
        return json_response(200, {"data": [run_json(run, name) for run, name in page],
                                   "cursor": page[-1][0].id if len(rows) > limit else None})

    async def get_run(self, request: Request) -> Response:
        check_params(request, set())
        env = await read_env(self.core, request)
        run_id = request.path_params["run_id"]
        found = await self._run(env, run_id)
        if found is None:
            return not_found("run", run_id)
        run, slug = found

        def details(tx: Tx) -> tuple[list[StepRow], list[PauseRow], dict[str, Any] | None,
                                     dict[str, str]]:
            return (store.steps_of(tx, run.id), store.pauses_of(tx, run.id),
                    flow_status.waiting(tx, run), store.invoked_runs(tx, run.id))

        steps, pauses, waiting, invoked = await self.core.storage.read(details)
        event = await self.core.events.get(run.env_id, run.event_id)
        data = {**run_json(run, slug), "steps": [step_json(s, invoked) for s in steps],
                "pauses": [pause_json(p) for p in pauses], "waiting": waiting_json(waiting),
                "event": event.to_json() if event is not None else None}
        return json_response(200, {"data": data})

    async def runs_of_event(self, request: Request) -> Response:
        check_params(request, set())
        env = await read_env(self.core, request)
        event_id = request.path_params["event_id"]
        if not ULID_RE.fullmatch(event_id) or await self.core.storage.get_event(
                env.id, event_id) is None:
            return not_found("event", event_id)
        rows = await self.core.storage.read(
            partial(store.runs_started_by, env_id=env.id, event_id=event_id))
        return json_response(200, {"data": [run_json(run, slug) for run, slug in rows]})

    async def get_replay(self, request: Request) -> Response:
        check_params(request, set())
        env = await read_env(self.core, request)
        replay_id = request.path_params["replay_id"]
        replay = None
        if ULID_RE.fullmatch(replay_id):
            replay = await self.core.storage.read(partial(store.get_replay, replay_id=replay_id))
        if replay is None or replay.env_id != env.id:
            return not_found("replay", replay_id)
        return json_response(200, {"data": replay_json(replay)})

    # -- levers --------------------------------------------------------------------------------

    async def cancel_run(self, request: Request) -> Response:
        check_params(request, set())
        env = await read_env(self.core, request)
        run_id = request.path_params["run_id"]
        found = await self._run(env, run_id)
        if found is None:
            return not_found("run", run_id)
        run, slug = found
        if run.status in TERMINAL:
            return self._ended(run)
        now = now_ms()
        emit = await self._cancelled_events(run, slug, now)
        cancelled = await self.core.storage.write(partial(
            store.cancel_fenced, run_id=run.id, reason=CANCEL_REASON, now=now, emit=emit))
        again = await self._run(env, run_id)
        assert again is not None
        if not cancelled:
            return self._ended(again[0])
        if emit:
            self._emitted([row.id for row in emit])
        if run.parent_run_id:
            self._wake("*")
        return json_response(200, {"data": run_json(*again)})

    async def rerun(self, request: Request) -> Response:
        check_params(request, set())
        env = await read_env(self.core, request)
        run_id = request.path_params["run_id"]
        found = await self._run(env, run_id)
        if found is None:
            return not_found("run", run_id)
        source = found[0]
        fn = await self.core.storage.read(
            partial(store.function_by_id, function_id=source.function_id))
        if fn is None or fn.archived_at is not None:
            return error_response(409, f"function {found[1]!r} is archived: its app no longer "
                                  "has it, so a rerun would never run")
        now = now_ms()
        new_run_id = await self.core.storage.write(partial(store.rerun, source=source, fn=fn,
                                                           now=now))
        assert new_run_id is not None  # a rerun's key is new every time
        self._wake(fn.queue)
        created = await self._run(env, new_run_id)
        assert created is not None
        return json_response(201, {"data": run_json(*created)})

    async def cancel_event(self, request: Request) -> Response:
        check_params(request, set())
        env = await read_env(self.core, request)
        event_id = request.path_params["event_id"]
        if not ULID_RE.fullmatch(event_id):
            return not_found("event", event_id)
        why = await self.core.storage.write(partial(
            store.cancel_delivery, env_id=env.id, event_id=event_id, now=now_ms()))
        if why == "missing":
            return not_found("event", event_id)
        if why is not None:
            return error_response(409, f"event {event_id} was already {why}")
        event = await self.core.events.get(env.id, event_id)
        assert event is not None
        return json_response(200, {"data": event.to_json()})

    async def start_replay(self, request: Request) -> Response:
        check_params(request, set())
        env = await read_env(self.core, request)
        body = await read_body(request.scope, request.receive,
                               self.core.settings.limits.max_body_bytes)
        slug, since, until, statuses = _replay_request(body)
        fn = await self._function(env, slug)
        if fn is None:
            return not_found("function", slug)
        replay, more = await self.core.storage.write(partial(
            store.start_replay, fn=fn, since_ms=since, until_ms=until, statuses=statuses,
            now=now_ms(), batch=REPLAY_BATCH))
        self._wake(fn.queue)
        if more:
            self._replays.carry_on(replay.id, fn)
        return json_response(202 if more else 201, {"data": replay_json(replay)})

    # -- helpers -------------------------------------------------------------------------------

    async def _function(self, env: Environment, slug: str) -> FunctionRow | None:
        return await self.core.storage.read(
            partial(store.function_by_slug, env_id=env.id, slug=without_nul(slug, "function")))

    async def _run(self, env: Environment, run_id: str) -> tuple[Run, str] | None:
        if not ULID_RE.fullmatch(run_id):
            return None
        found = await self.core.storage.read(partial(store.run_with_slug, run_id=run_id))
        return found if found is not None and found[0].env_id == env.id else None

    def _ended(self, run: Run) -> Response:
        return error_response(409, f"run {run.id} already ended ({run.status})")

    async def _cancelled_events(self, run: Run, slug: str, now: int) -> list[EventRow]:
        """``tidings/function.cancelled`` for the run, when a function listens for it."""
        await self.core.storage.read(self._registry.refresh)
        if not self._registry.listens(run.env_id, CANCELLED_EVENT):
            return []
        rows = []
        for event_id in run.event_ids or [run.event_id]:
            row = await self.core.storage.get_event(run.env_id, event_id)
            if row is not None:
                rows.append(row)
        return [cancelled_event(run, slug, rows, CANCEL_REASON, now)]

    def _emitted(self, event_ids: list[str]) -> None:
        # The runtime of this process routes what it ingests at once; these are the same.
        for observer in self.core.ingest.observers:
            observer(event_ids, False)


def _replay_request(body: bytes) -> tuple[str, int, int, list[str]]:
    payload, slug, since, until = range_request(body, REPLAY_FIELDS)
    raw = payload["statuses"]
    if not isinstance(raw, list) or not raw or not all(isinstance(s, str) for s in raw):
        raise RequestRejected(f"statuses: a non-empty list of {', '.join(REPLAYABLE)}")
    statuses = list(dict.fromkeys(_choose(s, REPLAYABLE, "statuses") for s in raw))
    return slug, since, until, statuses
