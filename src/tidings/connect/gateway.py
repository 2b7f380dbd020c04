"""The Connect gateway: the WebSocket listener workers dial out to (``/v0/connect`` on
``ConnectSettings.gateway_port``; in dev the API port + 1, where the SDKs look for it).

It is a ``websockets`` server of its own beside the HTTP server, without compression: the
handshake must finish within 10 s (a slow opening is cut), frames over ``max_message_bytes``
close the socket with 1009, and protocol pings find dead peers. Each socket is a ``Session``;
the calls go through the process's ``Hub``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from tidings.apps.sync import AppSync
from tidings.connect import tokens
from tidings.connect import wire_pb2 as pb
from tidings.connect.hub import Hub
from tidings.connect.session import Session
from tidings.core import Core
from tidings.errors import Unauthorized
from tidings.keys import DEV_ENV
from tidings.settings import ConnectSettings

log = logging.getLogger("tidings.connect")
PATH = "/v0/connect"
DRAIN_SECONDS = 5.0  # how long a closing gateway waits for its workers to leave
SUBPROTOCOL = Subprotocol("v0.connect.inngest.com")


class Gateway:
    def __init__(self, core: Core, hub: Hub, sync: AppSync) -> None:
        self.core = core
        self.hub = hub
        self.sync = sync
        self.settings: ConnectSettings = core.settings.connect
        self._server: Server | None = None
        self._sessions: set[Session] = set()
        self._closing = False
        self._all_left = asyncio.Event()

    @property
    def port(self) -> int | None:
        if self._server is None:
            return None
        return int(next(iter(self._server.sockets)).getsockname()[1])

    async def start(self) -> None:
        settings = self.settings
        assert settings.gateway_port is not None
        self._server = await serve(
            self._session, settings.gateway_host, settings.gateway_port,
            subprotocols=[SUBPROTOCOL], select_subprotocol=_subprotocol,
            process_request=_only_connect_path, max_size=settings.max_message_bytes,
            open_timeout=10, ping_interval=20, ping_timeout=20, logger=log,
            # No permessage-deflate: the SDKs offer it, but compressing every small frame
            # (requests, acks, beats) cost the gateway more CPU than anything else of its
            # own (P7 Connect, profiled), and calls travel on a LAN or loopback.
            compression=None)
        if self.hub.relay is not None:
            await self.hub.relay.start(self.hub, self.core.supervisor)
        log.info("Connect gateway on ws://%s:%s%s", settings.gateway_host, self.port, PATH)

    async def drain(self) -> None:
        """Refuse new sockets and tell every worker the gateway is closing
        (``GATEWAY_CLOSING``: the SDKs reconnect elsewhere at once, their calls going on: the
        hub hands those it made over to the database, where the worker's new process extends
        and answers them)."""
        if self._closing:
            return
        self._closing = True
        for session in list(self._sessions):
            await session.closing()

    async def stop(self, grace: float = DRAIN_SECONDS) -> None:
        """Drain (if not yet), wait up to ``grace`` for the workers to leave, then close what
        is left with 1001."""
        await self.drain()
        if self._sessions:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_left.wait(), grace)
        await self.hub.aclose()
        if self.hub.relay is not None:
            await self.hub.relay.stop()
        if self._server is not None:
            self._server.close(code=1001, reason="connect_gateway_closing")
            await self._server.wait_closed()
            self._server = None

    async def _session(self, ws: ServerConnection) -> None:
        if self._closing:
            await ws.close(1001, "connect_gateway_closing")
            return
        session = Session(ws, hub=self.hub, sync=self.sync, settings=self.settings,
                          authenticate=self._authenticate)
        self._sessions.add(session)
        self._all_left.clear()
        try:
            await session.run()
        finally:
            self._sessions.discard(session)
            if not self._sessions:
                self._all_left.set()

    async def _authenticate(self, request: pb.WorkerConnectRequestData) -> str:
        """The environment of a connecting worker: the one its session token names (under
        serve it must have one from ``/v0/connect/start``); in dev, without one, dev's (or
        the branch the worker names)."""
        token = request.auth_data.session_token
        keyring = self.core.vault.sealer.keyring
        if not self.core.settings.dev:
            try:
                return tokens.env_of(keyring, token)
            except tokens.BadToken as exc:
                raise Unauthorized(str(exc)) from None
        if token:
            try:
                return tokens.env_of(keyring, token)
            except tokens.BadToken:
                pass  # dev trusts any worker
        branch = request.environment if request.HasField("environment") else None
        return (await self.core.gate.env_for(DEV_ENV, "api", branch or None)).id


def _subprotocol(ws: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


def _only_connect_path(ws: ServerConnection, request: Request) -> Response | None:
    if request.path.split("?", 1)[0] == PATH:
        return None
    return ws.respond(404, f"not found: the Connect gateway is at {PATH}\n")
