"""An environment's settings under ``/v1/settings``: its retention (``events/retention.py``).

``GET`` gives the settings in effect; ``POST {"events_ttl", "runs_ttl", "dedup_window"}``
changes those named (a duration, ``"forever"`` for the ttls, or null for the mode's default)
and gives the result. Other processes take a change within ``retention.CACHE_SECONDS``.
"""

from __future__ import annotations

from functools import partial

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.core import Core
from tidings.events import retention
from tidings.ids import now_ms
from tidings.json_input import decode_json
from tidings.server.http import read_body
from tidings.server.requests import check_params, json_response, read_env
from tidings.storage.tx import Tx


class SettingsAPI:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._base = core.ingest.retention.base

    def routes(self) -> list[Route]:
        return [Route("/v1/settings", self.settings, methods=["GET", "POST"])]

    async def settings(self, request: Request) -> Response:
        check_params(request, set())
        env = await read_env(self.core, request)
        if request.method == "GET":
            own = await self.core.storage.read(partial(retention.stored, env_id=env.id))
            return json_response(200, {"data": own.effective(self._base).to_json()})
        body = await read_body(request.scope, request.receive,
                               self.core.settings.limits.max_body_bytes)
        payload = decode_json(body)
        base = self._base

        def change(tx: Tx) -> retention.Retention:
            # Read and written in one transaction: two changes at once cannot undo each other.
            changed = retention.parse_changes(payload, retention.stored(tx, env.id), base)
            retention.save(tx, env.id, changed, now_ms())
            return changed.effective(base)

        effective = await self.core.storage.write(change)
        self.core.ingest.retention.changed(env.id, effective)
        return json_response(200, {"data": effective.to_json()})
