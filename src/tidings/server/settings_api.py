"""An environment's settings under ``/v1/settings``: its retention (``events/retention.py``)
and whether it seals its data at rest (``encrypt_data``, ``sealing.py``).

``GET`` gives the settings in effect; ``POST {"events_ttl", "runs_ttl", "dedup_window",
"encrypt_data"}`` changes those named (a duration, ``"forever"`` for the ttls, or null for the
mode's default; ``encrypt_data`` true or false) and gives the result. Other processes take a
change within ``env_settings.CACHE_SECONDS``.
"""

from __future__ import annotations

from functools import partial

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.core import Core
from tidings.errors import RequestRejected
from tidings.events import env_settings, retention
from tidings.ids import now_ms
from tidings.json_input import decode_json
from tidings.server.http import read_body
from tidings.server.requests import check_params, json_response, read_env
from tidings.storage.tx import Tx


class SettingsAPI:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._base = core.ingest.retention_base

    def routes(self) -> list[Route]:
        return [Route("/v1/settings", self.settings, methods=["GET", "POST"])]

    async def settings(self, request: Request) -> Response:
        check_params(request, set())
        env = await read_env(self.core, request)
        if request.method == "GET":
            own = await self.core.storage.read(partial(retention.stored, env_id=env.id))
            sealed, _ = await self.core.storage.read(
                partial(env_settings.sealing_setting, env_id=env.id))
            return json_response(200, {"data": {**own.effective(self._base).to_json(),
                                                "encrypt_data": sealed}})
        body = await read_body(request.scope, request.receive,
                               self.core.settings.limits.max_body_bytes)
        payload = decode_json(body)
        base = self._base
        encrypt = _encrypt_data(payload)

        def change(tx: Tx) -> tuple[retention.Retention, bool]:
            # Read and written in one transaction: two changes at once cannot undo each other.
            own = retention.stored(tx, env.id)
            if payload or encrypt is None:
                own = retention.parse_changes(payload, own, base, others=("encrypt_data",))
                retention.save(tx, env.id, own, now_ms())
            if encrypt is not None:
                env_settings.switch_sealing(tx, env.id, encrypt, now_ms())
            # This process believes the change at once.
            env_settings.ENV_SETTINGS.read(tx, env.id)
            return own.effective(base), env_settings.sealing_setting(tx, env.id)[0]

        effective, sealed = await self.core.storage.write(change)
        return json_response(200, {"data": {**effective.to_json(), "encrypt_data": sealed}})


def _encrypt_data(payload: object) -> bool | None:
    """``encrypt_data`` taken out of the body (the rest is retention's), if it is there."""
    if not isinstance(payload, dict) or "encrypt_data" not in payload:
        return None
    value = payload.pop("encrypt_data")
    if not isinstance(value, bool):
        raise RequestRejected("encrypt_data: true or false")
    return value
