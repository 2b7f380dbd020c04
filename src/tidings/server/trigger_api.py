"""The HTTP API the Trigger.dev v2 client (``@trigger.dev/sdk`` 2.x) calls: ``/api/v1/events``
and friends, answered in the shapes its zod schemas parse.

Every call carries ``Authorization: Bearer tr_...`` (``keys.py``). Errors are v2's
``{"error": "..."}`` (with Tidings' ``status`` beside it), a 4xx naming what is wrong, which
the client throws as an ``Error`` with that message.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.core import Core
from tidings.errors import RequestRejected
from tidings.events.model import StoredEvent
from tidings.functions.model import FunctionRow
from tidings.ids import now_ms
from tidings.runs import admin, journal
from tidings.runs.model import QUEUED, RUNNING, SLEEPING, TERMINAL, WAITING, Run, StepRow
from tidings.server.http import TICKET, read_body
from tidings.server.requests import ULID_RE, check_params, json_response, not_found
from tidings.server.run_levers import RunLevers
from tidings.storage.base import Environment
from tidings.storage.tx import Tx
from tidings.triggerdev import events as v2_events
from tidings.triggerdev import invoke, statuses, wire
from tidings.triggerdev.keys import TriggerKeys

# What getRun may ask for (checked, then ignored: every task is answered at once).
RUN_QUERY = {"subtasks", "cursor", "take", "taskdetails"}
TAKE_RE = re.compile(r"[0-9]{1,2}")
ACTIVE = (QUEUED, RUNNING, SLEEPING, WAITING)


class TriggerAPI:
    def __init__(self, core: Core, keys: TriggerKeys, levers: RunLevers | None = None) -> None:
        self.core = core
        self.keys = keys
        self._levers = levers or RunLevers(core)

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/events", self.send_event, methods=["POST"]),
            Route("/api/v1/events/bulk", self.send_events, methods=["POST"]),
            Route("/api/v1/events/{event_id}/cancel", self.cancel_event, methods=["POST"]),
            Route("/api/v1/events/{event_id}/cancel-runs", self.cancel_runs,
                  methods=["POST"]),
            Route("/api/v2/events/{event_id}", self.get_event, methods=["GET"]),
            Route("/api/v2/runs/{run_id}", self.get_run, methods=["GET"]),
            Route("/api/v2/runs/{run_id}/statuses", self.get_statuses, methods=["GET"]),
            Route("/api/v1/runs/{run_id}/cancel", self.cancel_run, methods=["POST"]),
            Route("/api/v1/jobs/{job_id}/runs", self.job_runs, methods=["GET"]),
            Route("/api/v1/jobs/{job_id}/cancel-runs", self.cancel_job_runs,
                  methods=["POST"]),
        ]

    async def _env(self, request: Request) -> Environment:
        return await self.keys.env_for(request.headers.get("authorization", ""))

    # -- events --------------------------------------------------------------------------------

    async def send_event(self, request: Request) -> Response:
        return await self._send(request, bulk=False)

    async def send_events(self, request: Request) -> Response:
        return await self._send(request, bulk=True)

    async def _send(self, request: Request, *, bulk: bool) -> Response:
        check_params(request, set())
        env = await self._env(request)
        limits = self.core.settings.limits
        body = await read_body(request.scope, request.receive, limits.max_body_bytes)
        now = now_ms()
        sent = wire.parse_send(body, limits, now, bulk=bulk)
        ticket = request.scope.get(TICKET)
        if ticket is not None:
            ticket.parsed(len(sent.events))
        records = await v2_events.send(self.core, env.id, sent.events, now)
        logs = [wire.event_log(record) for record in records]
        return json_response(200, logs if bulk else logs[0])

    async def _event_runs(self, request: Request
                          ) -> tuple[str, StoredEvent | None, list[tuple[Run, str]]]:
        """The event the path names (its id, or the id it was sent with) in the caller's
        environment, as the path named it, and the runs it started (with their functions'
        slugs); no event (None) when there is none."""
        check_params(request, set())
        env = await self._env(request)
        ident = _event_ident(request, self.core.settings.limits.max_id_chars)
        event = await v2_events.find(self.core, env.id, ident)
        if event is None:
            return ident, None, []
        rows = await self.core.storage.read(
            partial(admin.runs_started_by, env_id=env.id, event_id=event.id))
        return ident, event, rows

    async def get_event(self, request: Request) -> Response:
        ident, event, rows = await self._event_runs(request)
        if event is None:
            return not_found("event", ident)
        return json_response(200, wire.event_with_runs(event, [run for run, _ in rows]))

    async def cancel_event(self, request: Request) -> Response:
        check_params(request, set())
        env = await self._env(request)
        ident = _event_ident(request, self.core.settings.limits.max_id_chars)
        event_id = await self.core.storage.write(
            partial(v2_events.cancel, env_id=env.id, ident=ident, now=now_ms(),
                    index=self.core.vault.sealer.key_index(env.id, ident)))
        event = await self.core.events.get(env.id, event_id) if event_id else None
        if event is None:
            return not_found("event", ident)
        return json_response(200, wire.event_log(event))

    async def cancel_runs(self, request: Request) -> Response:
        ident, event, rows = await self._event_runs(request)
        if event is None:
            return not_found("event", ident)
        cancelled: list[str] = []
        failed: list[str] = []
        for run, slug in rows:
            done = run.status not in TERMINAL and await self._levers.cancel_run(run, slug)
            (cancelled if done else failed).append(run.id)
        return json_response(200, {"cancelledRunIds": cancelled,
                                   "failedToCancelRunIds": failed})

    # -- runs ----------------------------------------------------------------------------------

    async def get_run(self, request: Request) -> Response:
        check_params(request, RUN_QUERY)
        query = request.query_params
        for flag in ("subtasks", "taskdetails"):
            if query.get(flag, "true") not in ("true", "false"):
                raise RequestRejected(f"{flag}: true or false")
        take = query.get("take")
        if take is not None and not (TAKE_RE.fullmatch(take) and 1 <= int(take) <= 50):
            raise RequestRejected("take: a whole number from 1 to 50")
        if len(query.get("cursor", "")) > 100:
            raise RequestRejected("cursor: at most 100 characters")
        return await self._run_record(request)

    async def get_statuses(self, request: Request) -> Response:
        check_params(request, set())
        env = await self._env(request)
        run = await self._run(env, request)
        found = await self.core.storage.read(partial(statuses.of_run, run_id=run.id))
        return json_response(200, wire.run_statuses(run, found))

    # -- jobs ----------------------------------------------------------------------------------

    async def job_runs(self, request: Request) -> Response:
        """``getRuns``: a Job's runs, newest first, ``take`` at a time (20 unless asked, 50 at
        most); ``nextCursor`` when there are more."""
        check_params(request, {"take", "cursor"})
        env = await self._env(request)
        query = request.query_params
        take = query.get("take", "20")
        if not (TAKE_RE.fullmatch(take) and 1 <= int(take) <= 50):
            raise RequestRejected("take: a whole number from 1 to 50")
        cursor = query.get("cursor")
        if cursor is not None and not ULID_RE.fullmatch(cursor):
            raise RequestRejected("cursor: the nextCursor of the page before")
        fn = await self._job(request, env)
        rows = await self.core.storage.read(partial(admin.list_runs, query=admin.RunQuery(
            env_id=env.id, function_id=fn.id, before_id=cursor, limit=int(take) + 1)))
        runs = [run for run, _ in rows]
        page: dict[str, object] = {"runs": [wire.run_summary(r) for r in runs[:int(take)]]}
        if len(runs) > int(take):
            page["nextCursor"] = runs[int(take) - 1].id
        return json_response(200, page)

    async def cancel_job_runs(self, request: Request) -> Response:
        """``cancelRunsForJob``: cancel every run of the Job that has not ended."""
        check_params(request, set())
        env = await self._env(request)
        fn = await self._job(request, env)
        cancelled: list[str] = []
        failed: list[str] = []
        before: str | None = None
        while True:
            rows = await self.core.storage.read(partial(admin.list_runs, query=admin.RunQuery(
                env_id=env.id, function_id=fn.id, statuses=ACTIVE, before_id=before,
                limit=500)))
            for run, slug in rows:
                done = await self._levers.cancel_run(run, slug)
                (cancelled if done else failed).append(run.id)
            if len(rows) < 500:
                break
            before = rows[-1][0].id
        return json_response(200, {"cancelledRunIds": cancelled,
                                   "failedToCancelRunIds": failed})

    async def _job(self, request: Request, env: Environment) -> FunctionRow:
        job_id: str = request.path_params["job_id"]
        if not job_id or len(job_id) > 512 or "\x00" in job_id or "\ufffd" in job_id:
            raise RequestRejected("job id: 1 to 512 characters of UTF-8, without NUL")
        return await self.core.storage.read(
            partial(invoke.one_job, env_id=env.id, job_id=job_id))

    async def cancel_run(self, request: Request) -> Response:
        check_params(request, set())
        env = await self._env(request)
        run = await self._run(env, request)
        if run.status not in TERMINAL:
            found = await self.core.storage.read(partial(admin.run_with_slug, run_id=run.id))
            assert found is not None
            await self._levers.cancel_run(*found)
        return await self._run_record(request)

    async def _run_record(self, request: Request) -> Response:
        env = await self._env(request)
        run = await self._run(env, request)
        steps, found = await self.core.storage.read(partial(_steps_and_statuses, run_id=run.id))
        return json_response(200, wire.run_record(run, steps, found))

    async def _run(self, env: Environment, request: Request) -> Run:
        run_id = request.path_params["run_id"]
        found = None
        if ULID_RE.fullmatch(run_id):
            found = await self.core.storage.read(partial(admin.run_with_slug, run_id=run_id))
        if found is None or found[0].env_id != env.id:
            shown = run_id if len(run_id) <= 100 else run_id[:100] + "…"
            raise RequestRejected(f"run {shown!r} not found", status=404)
        return found[0]


def _steps_and_statuses(tx: Tx, run_id: str) -> tuple[list[StepRow], list[dict[str, Any]]]:
    return journal.steps_of(tx, run_id), statuses.of_run(tx, run_id)


def _event_ident(request: Request, limit: int) -> str:
    """The event id of the path: any text the client gave its event (or Tidings' own id)."""
    ident: str = request.path_params["event_id"]
    if "\x00" in ident:
        raise RequestRejected("event id: must not contain NUL characters")
    try:
        ident.encode()
    except UnicodeEncodeError:
        raise RequestRejected("event id: not valid UTF-8 (percent-encode UTF-8 bytes)") from None
    if len(ident) > limit:
        raise RequestRejected(f"event id: at most {limit} characters, got {len(ident)}")
    return ident
