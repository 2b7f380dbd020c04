"""Flow control levers of the JSON API: bulk cancellation of a function's runs.

``POST /v1/cancellations {"function", "since", "until"}`` cancels every run of the function
created in ``[since, until)`` that has not ended, ``BATCH`` runs per transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.core import Core
from tidings.events.model import iso
from tidings.flow.cancel import cancel_between
from tidings.ids import now_ms
from tidings.router.registry import Registry
from tidings.runs import store
from tidings.server.api import (
    check_params,
    json_response,
    not_found,
    read_env,
    without_nul,
)
from tidings.server.http import read_body
from tidings.server.runs_api import range_request

if TYPE_CHECKING:
    from tidings.engine.runtime import Runtime

BATCH = 500
FIELDS = ("function", "since", "until")


class FlowAPI:
    def __init__(self, core: Core, runtime: Callable[[], Runtime | None] | None = None) -> None:
        self.core = core
        self._runtime = runtime or (lambda: None)
        self._registry = Registry()

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
            self._wake()
        return json_response(200, {"data": {"function": slug, "since": iso(since),
                                            "until": iso(until), "cancelled": total}})

    def _wake(self) -> None:
        runtime = self._runtime()
        if runtime is not None:
            for executor in runtime.executors.values():
                executor.wake()


def _request(body: bytes) -> tuple[str, int, int]:
    _, slug, since, until = range_request(body, FIELDS)
    return slug, since, until
