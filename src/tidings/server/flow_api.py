"""Flow control levers of the JSON API: bulk cancellation of a function's runs.

``POST /v1/cancellations {"function", "since", "until"}`` cancels every run of the function
created in ``[since, until)`` that has not ended, 500 runs per transaction; with
``"dry_run": true`` it says how many that would be (``matched``) and cancels none.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.core import Core
from tidings.events.model import iso
from tidings.server.http import read_body
from tidings.server.requests import (
    check_params,
    dry_run,
    json_response,
    range_request,
    read_env,
)
from tidings.server.run_levers import OPEN, RunLevers

FIELDS = ("function", "since", "until")


class FlowAPI:
    def __init__(self, core: Core, levers: RunLevers) -> None:
        self.core = core
        self.levers = levers

    def routes(self) -> list[Route]:
        return [Route("/v1/cancellations", self.cancel_runs, methods=["POST"])]

    async def cancel_runs(self, request: Request) -> Response:
        check_params(request, set())
        env = await read_env(self.core, request)
        body = await read_body(request.scope, request.receive,
                               self.core.settings.limits.max_body_bytes)
        slug, since, until, preview = _request(body)
        fn = await self.levers.function(env, slug)
        answer = {"function": slug, "since": iso(since), "until": iso(until)}
        if preview:
            matched = await self.levers.count(fn, since, until, OPEN)
            return json_response(200, {"data": {**answer, "matched": matched}})
        cancelled = await self.levers.cancel_many(fn, since, until)
        return json_response(200, {"data": {**answer, "cancelled": cancelled}})


def _request(body: bytes) -> tuple[str, int, int, bool]:
    payload, slug, since, until = range_request(body, FIELDS, optional=("dry_run",))
    return slug, since, until, dry_run(payload)
