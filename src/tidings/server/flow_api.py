"""Flow control levers of the JSON API: bulk cancellation of a function's runs.

``POST /v1/cancellations {"function", "since", "until"}`` cancels every run of the function
created in ``[since, until)`` that has not ended, ``BATCH`` runs per transaction.
"""

from __future__ import annotations

from functools import partial

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.core import Core
from tidings.events.model import iso
from tidings.flow.cancel import cancel_between
from tidings.ids import now_ms
from tidings.runs import store
from tidings.runs.local import ALL
from tidings.server.http import read_body
from tidings.server.requests import (
    check_params,
    json_response,
    not_found,
    range_request,
    read_env,
    without_nul,
)

BATCH = 500
FIELDS = ("function", "since", "until")


class FlowAPI:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._registry = core.registry

    def routes(self) -> list[Route]:
        return [Route("/v1/cancellations", self.cancel_runs, methods=["POST"])]

    async def cancel_runs(self, request: Request) -> Response:
        check_params(request, set())
        env = await read_env(self.core, request)
        body = await read_body(request.scope, request.receive,
                               self.core.settings.limits.max_body_bytes)
        slug, since, until = _request(body)
        fn = await self.core.storage.read(
            partial(store.function_by_slug, env_id=env.id, slug=without_nul(slug, "function")))
        if fn is None:
            return not_found("function", slug)
        await self.core.storage.read(self._registry.refresh)
        total = 0
        while True:
            count = await self.core.storage.write(partial(
                cancel_between, registry=self._registry, fn=fn, since_ms=since,
                until_ms=until, now=now_ms(), batch=BATCH))
            total += count
            if count < BATCH:
                break
        if total:
            self.core.wakers.wake(ALL)
        return json_response(200, {"data": {"function": slug, "since": iso(since),
                                            "until": iso(until), "cancelled": total}})


def _request(body: bytes) -> tuple[str, int, int]:
    _, slug, since, until = range_request(body, FIELDS)
    return slug, since, until
