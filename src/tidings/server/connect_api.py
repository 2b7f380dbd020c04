"""The HTTP side of Connect, on the API port.

* ``POST /v0/connect/start``: a worker about to open its socket. It authenticates as an SDK
  app does (outside dev, ``Authorization: Bearer`` with its environment's signing key, plain or
  hashed; ``X-Inngest-Env`` for a branch) and gets, as a protobuf ``StartResponse``, a new
  connection id, the gateway's WebSocket URL and a session token naming its environment.
* ``POST /v0/connect/flush``: a reply the worker could not get acknowledged over its socket,
  as a protobuf ``SDKResponse``; answered with a ``FlushResponse``.
* ``GET /v0/connect/envs/{env_id}/conns``: the workers connected to the environment (to any
  process), as the Inngest Dev Server lists them (``env_id``: the environment's id or name,
  or in dev Inngest's id of its dev environment).

Bodies are protobuf (at most 1 MiB for a start, ``max_message_bytes`` for a flush); a body that
does not parse is a 400 naming the message it should have been.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError, Message
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.connect import tokens
from tidings.connect import wire_pb2 as pb
from tidings.connect.gateway import PATH, Gateway
from tidings.connect.hub import Hub
from tidings.connect.relay import Remote
from tidings.connect.worker import Worker
from tidings.core import Core
from tidings.errors import RequestRejected
from tidings.events.model import iso
from tidings.ids import new_id
from tidings.keys import SigningKeys
from tidings.server.http import read_body
from tidings.server.requests import (
    bearer,
    check_params,
    json_response,
    not_found,
    read_env,
    sdk_env,
)

MAX_START_BYTES = 1024 * 1024
PROTOBUF = "application/protobuf"
INNGEST_DEV_ENV_ID = "00000000-0000-4000-b000-000000000000"  # what the SDKs' tests ask for


def connection_json(worker: Worker | Remote, hub: Hub) -> dict[str, Any]:
    if isinstance(worker, Worker):
        status = "draining" if worker.draining else "ready"
        in_flight, capacity = hub.in_flight(worker.env_id, worker.instance_id), \
            worker.max_concurrency
    else:
        status, in_flight, capacity = worker.status, worker.held, worker.capacity
    return {"connection_id": worker.connection_id, "instance_id": worker.instance_id,
            "sdk": worker.sdk, "apps": sorted(worker.functions),
            "connected_at": iso(worker.connected_at), "status": status,
            "in_flight": in_flight, "capacity": capacity}


async def workers_of(hub: Hub, env_id: str) -> list[Worker | Remote]:
    """The Connect workers of an environment: this process's, and (through the database)
    those connected to other processes."""
    mine: list[Worker | Remote] = list(hub.workers(env_id))
    if hub.relay is not None:
        known = {w.connection_id for w in mine}
        mine += [r for r in await hub.relay.listed(env_id) if r.connection_id not in known]
    # Oldest first, the newest connection last, whichever process holds it.
    return sorted(mine, key=lambda w: (w.connected_at, w.connection_id))


def _parse(message: Message, body: bytes) -> None:
    try:
        message.ParseFromString(body)
    except DecodeError:
        raise RequestRejected(f"the body is not a protobuf {type(message).__name__}") from None


class ConnectAPI:
    def __init__(self, core: Core, keys: SigningKeys, hub: Hub,
                 gateway: Callable[[], Gateway | None]) -> None:
        self.core = core
        self.keys = keys
        self.hub = hub
        self._gateway = gateway
        self.settings = core.settings.connect
        self.group = "gw-dev" if core.settings.dev else f"gw-{socket.gethostname()}"

    def routes(self) -> list[Route]:
        return [Route("/v0/connect/start", self.start, methods=["POST"]),
                Route("/v0/connect/flush", self.flush, methods=["POST"]),
                Route("/v0/connect/envs/{env_id}/conns", self.connections, methods=["GET"])]

    async def connections(self, request: Request) -> Response:
        check_params(request, set())
        env = await read_env(self.core, request)
        wanted = request.path_params["env_id"]
        dev_alias = self.core.settings.dev and wanted == INNGEST_DEV_ENV_ID
        if wanted not in (env.id, env.name) and not dev_alias:
            return not_found("environment", wanted)
        workers = await workers_of(self.hub, env.id)
        return json_response(200, {"data": [connection_json(w, self.hub) for w in workers]})

    def _endpoint(self, request: Request) -> str:
        if self.settings.gateway_url:
            return self.settings.gateway_url
        gateway = self._gateway()
        port = gateway.port if gateway is not None else None
        if port is None:
            raise RequestRejected("this server runs no Connect gateway (see its log; choose "
                                  "a port with --connect-gateway-port)", status=503)
        host = request.url.hostname or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"ws://{host}:{port}{PATH}"

    async def start(self, request: Request) -> Response:
        env_id = await sdk_env(self.core, self.keys, request)
        body = await read_body(request.scope, request.receive, MAX_START_BYTES)
        _parse(pb.StartRequest(), body)
        answer = pb.StartResponse(
            connection_id=new_id(), gateway_endpoint=self._endpoint(request),
            gateway_group=self.group,
            session_token=tokens.issue(self.core.vault.sealer.keyring, env_id),
            sync_token=bearer(request))
        return Response(answer.SerializeToString(), media_type=PROTOBUF)

    async def flush(self, request: Request) -> Response:
        env_id = await sdk_env(self.core, self.keys, request)
        body = await read_body(request.scope, request.receive, self.settings.max_message_bytes)
        reply = pb.SDKResponse()
        _parse(reply, body)
        if not reply.request_id:
            raise RequestRejected("request_id: the SDKResponse names no request")
        if not await self.hub.replied(None, env_id, reply):
            shown = reply.request_id[:40]
            raise RequestRejected(f"request_id: no call {shown!r} is waiting for a reply here",
                                  status=404)
        return Response(pb.FlushResponse(request_id=reply.request_id).SerializeToString(),
                        media_type=PROTOBUF)
