"""One worker's socket, from hello to close.

The gateway says hello (a zero-byte ``GATEWAY_HELLO`` frame); the worker must answer with
``WORKER_CONNECT`` within ``hello_timeout``, naming its instance and its apps with their
functions. Each app is synced as ``POST /fn/register`` would sync it, its functions given
``ws://connect?…`` URLs (``hub.function_url``); then ``GATEWAY_CONNECTION_READY`` tells the
worker how often to extend its leases, and the connection joins the hub. From then on the
worker beats (answered beat for beat), acknowledges calls, extends leases, replies and may
pause (no new calls; the rest goes on).

Whatever breaks the protocol ends the connection with a close code and a reason the worker
sees, logged with the connection's id: an unparsable frame (1007), a kind a worker does not
send, a reply for a call it does not hold, too many apps or a bad registration (1008), a frame
over ``max_message_bytes`` (1009, cut by the WebSocket layer before it is read whole), no word
for ``heartbeat_timeout``. Nothing else is affected: the calls it held are offered elsewhere
or, once acknowledged, wait for their lease to lapse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import msgspec
from google.protobuf.message import DecodeError, Message
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from tidings.apps.sync import AppSync
from tidings.connect import wire_pb2 as pb
from tidings.connect.hub import Hub, app_url, function_url
from tidings.connect.outbox import Outbox
from tidings.connect.outbox import envelope as frame  # a ConnectMessage, serialised
from tidings.connect.worker import Worker
from tidings.errors import RequestRejected
from tidings.ids import now_ms
from tidings.settings import ConnectSettings

log = logging.getLogger("tidings.connect")
M = TypeVar("M", bound=Message)
ULID_CHARS = frozenset("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
INVALID_DATA, POLICY, GOING_AWAY = 1007, 1008, 1001
_WORKER_KINDS = frozenset({pb.WORKER_CONNECT, pb.WORKER_READY, pb.WORKER_REQUEST_ACK,
                           pb.WORKER_REPLY, pb.WORKER_PAUSE, pb.WORKER_HEARTBEAT,
                           pb.WORKER_REQUEST_EXTEND_LEASE, pb.WORKER_STATUS})


class Refused(Exception):
    """The worker broke the protocol: close with ``code`` and this message."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True, slots=True)
class Opening:
    """What the worker's ``WORKER_CONNECT`` settled: who it is and where it belongs."""

    env_id: str
    request: pb.WorkerConnectRequestData


def parse(message: Any) -> pb.ConnectMessage:
    if isinstance(message, str):
        raise Refused(INVALID_DATA, "text frame: every Connect frame is a binary protobuf "
                                    "ConnectMessage")
    parsed = pb.ConnectMessage()
    try:
        parsed.ParseFromString(message)
    except DecodeError:
        raise Refused(INVALID_DATA, "the frame is not a protobuf ConnectMessage") from None
    return parsed


def payload(kind: type[M], message: pb.ConnectMessage) -> M:
    data = kind()
    try:
        data.ParseFromString(message.payload)
    except DecodeError:
        raise Refused(INVALID_DATA, f"the payload of a {pb.Kind.Name(message.kind)} frame is "
                                    f"not a {kind.__name__}") from None
    return data


class Session:
    def __init__(self, ws: ServerConnection, *, hub: Hub, sync: AppSync,
                 settings: ConnectSettings,
                 authenticate: Callable[[pb.WorkerConnectRequestData], Awaitable[str]]) -> None:
        self.ws = ws
        self._out = Outbox(ws)
        self.hub = hub
        self.sync = sync
        self.settings = settings
        self._authenticate = authenticate
        self.worker: Worker | None = None
        self.label = f"{ws.remote_address}"
        self._heard = 0.0  # loop time the worker last spoke
        self._handling = False  # a frame of its is being handled
        self._watch: asyncio.TimerHandle | None = None
        self._asides: set[asyncio.Task[None]] = set()  # words about calls not known here

    async def run(self) -> None:
        try:
            await self._converse()
        except Refused as exc:
            log.warning("connect %s: closed: %s", self.label, exc)
            self._out.flush()
            await self.ws.close(exc.code, str(exc)[:120])
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code not in (1000, 1001):
                log.info("connect %s: the worker closed the socket (%s %s)", self.label,
                         exc.rcvd.code, exc.rcvd.reason)
            elif exc.sent is not None and exc.sent.code not in (1000, 1001):
                log.warning("connect %s: closed (%s %s)", self.label, exc.sent.code,
                            exc.sent.reason)
        finally:
            for task in list(self._asides):
                task.cancel()
            if self.worker is not None:
                await self.hub.remove(self.worker)
                log.info("connect %s: disconnected", self.label)

    async def closing(self) -> None:
        """The gateway is shutting down: the worker should reconnect (to another process)."""
        log.info("connect %s: told the gateway is closing", self.label)
        with contextlib.suppress(ConnectionClosed):
            await self._out.send(frame(pb.GATEWAY_CLOSING))

    async def _send(self, data: bytes) -> None:
        try:
            await self._out.send(data)
        except ConnectionClosed as exc:
            raise ConnectionError(f"the worker's socket closed ({exc})") from None

    async def _converse(self) -> None:
        await self._out.send(frame(pb.GATEWAY_HELLO))
        try:
            first = await asyncio.wait_for(self.ws.recv(), self.settings.hello_timeout)
        except TimeoutError:
            raise Refused(POLICY, "connect_worker_hello_timeout: no WORKER_CONNECT within "
                                  f"{self.settings.hello_timeout:g}s") from None
        message = parse(first)
        if message.kind != pb.WORKER_CONNECT:
            raise Refused(POLICY, f"connect_worker_hello_invalid_msg: expected WORKER_CONNECT, "
                                  f"got kind {message.kind}")
        opening = await self._open(payload(pb.WorkerConnectRequestData, message))
        self.worker = await self._register(opening)
        ready = pb.GatewayConnectionReadyData(
            heartbeat_interval="10s", extend_lease_interval=f"{self.settings.extend_interval}s",
            status_interval="0s")
        await self._out.send(frame(pb.GATEWAY_CONNECTION_READY, ready.SerializeToString()))
        await self.hub.add(self.worker)
        log.info("connect %s: ready (env %s, instance %s, apps %s)", self.label,
                 self.worker.env_id, self.worker.instance_id, sorted(self.worker.functions))
        # One timeout for the whole conversation, moved by a timer that looks at when the
        # worker last spoke (``_silence``), not a timeout entered and left per frame.
        loop = asyncio.get_running_loop()
        limit = self.settings.heartbeat_timeout
        try:
            async with asyncio.timeout(None) as silence:
                self._heard = loop.time()
                self._watch = loop.call_at(self._heard + limit, self._silence, silence, limit)
                try:
                    while True:
                        raw = await self.ws.recv()
                        self._handling = True
                        try:
                            await self._handle(parse(raw))
                        finally:
                            self._handling = False
                            self._heard = loop.time()
                finally:
                    if self._watch is not None:
                        self._watch.cancel()
        except TimeoutError:
            if not silence.expired():
                raise
            raise Refused(POLICY, f"no heartbeat for {limit:g}s") from None

    def _silence(self, silence: asyncio.Timeout, limit: float) -> None:
        """The worker said nothing for ``limit`` seconds (a frame being handled counts as
        speaking): end the conversation; else look again when it would be so."""
        loop = asyncio.get_running_loop()
        due = self._heard + limit
        if self._handling or due > loop.time():
            self._watch = loop.call_at(max(due, loop.time() + 0.01), self._silence, silence,
                                       limit)
        else:
            silence.reschedule(loop.time())

    async def _open(self, request: pb.WorkerConnectRequestData) -> Opening:
        conn_id = request.connection_id
        self.label = f"{conn_id or '?'} ({self.ws.remote_address[0]})"
        if len(conn_id) != 26 or not set(conn_id) <= ULID_CHARS:
            raise Refused(POLICY, "connect_worker_hello_invalid_payload: connection_id is not "
                                  "a ULID")
        if not request.instance_id:
            raise Refused(POLICY, "connect_worker_hello_invalid_payload: instance_id is empty")
        if not request.apps:
            raise Refused(POLICY, "connect_worker_hello_invalid_payload: no apps")
        if len(request.apps) > self.settings.max_apps:
            raise Refused(POLICY, f"connect_too_many_apps_per_connection: "
                                  f"{len(request.apps)} apps, at most {self.settings.max_apps}")
        try:
            env_id = await self._authenticate(request)
        except RequestRejected as exc:
            raise Refused(POLICY, f"connect_authentication_failed: {exc.message}") from None
        return Opening(env_id, request)

    async def _register(self, opening: Opening) -> Worker:
        request, env_id = opening.request, opening.env_id
        version = request.sdk_version.removeprefix("v") or "0"  # the TypeScript SDK sends v4.…
        sdk = f"{request.sdk_language or 'unknown'}:v{version}"
        functions: dict[str, frozenset[str]] = {}
        for app in request.apps:
            name = app.app_name
            if not name:
                await self._sync_failed("an app has no name")
            try:
                raw = msgspec.json.decode(app.functions) if app.functions else []
            except msgspec.DecodeError:
                await self._sync_failed(f"app {name!r}: its functions are not JSON")
            body = {"appName": name, "url": app_url(env_id, name), "functions": raw,
                    "sdk": sdk, "framework": request.framework or "connect",
                    "deployType": "connect"}
            try:
                config, _ = await self.sync.register_connected(
                    env_id, body, partial(function_url, env_id, name))
            except RequestRejected as exc:
                await self._sync_failed(f"app {name!r}: {exc.message}")
            functions[name] = frozenset(f.slug for f in config.functions)
        limit = (request.max_worker_concurrency
                 if request.HasField("max_worker_concurrency")
                 and request.max_worker_concurrency > 0 else None)
        return Worker(connection_id=request.connection_id, env_id=env_id,
                      instance_id=request.instance_id, functions=functions, sdk=sdk,
                      send=self._send, max_concurrency=limit, connected_at=now_ms())

    async def _sync_failed(self, why: str) -> Any:
        error = pb.SystemError(code="connect_invalid_function_config", message=why)
        await self._out.send(frame(pb.SYNC_FAILED, error.SerializeToString()))
        raise Refused(POLICY, f"connect_invalid_function_config: {why}")

    async def _handle(self, message: pb.ConnectMessage) -> None:
        worker, kind = self.worker, message.kind
        assert worker is not None
        if kind not in _WORKER_KINDS:
            name = pb.Kind.Name(kind) if kind in pb.Kind.values() else "unknown"
            raise Refused(POLICY, f"unexpected message kind {kind} ({name}) from a worker")
        if kind == pb.WORKER_HEARTBEAT:
            if not worker.draining:
                worker.last_beat = asyncio.get_running_loop().time()
            await self._out.send(frame(pb.GATEWAY_HEARTBEAT))
        elif kind == pb.WORKER_REQUEST_ACK:
            ack = payload(pb.WorkerRequestAckData, message)
            if not await self.hub.acked(worker, ack.request_id):
                log.info("connect %s: ack for request %s, which it does not hold", self.label,
                         ack.request_id)
        elif kind == pb.WORKER_REQUEST_EXTEND_LEASE:
            extend = payload(pb.WorkerRequestExtendLeaseData, message)
            if self.hub.knows(extend.request_id):
                await self._extend(worker, extend)
            else:
                self._aside(self._extend(worker, extend))
        elif kind == pb.WORKER_REPLY:
            reply = payload(pb.SDKResponse, message)
            if self.hub.knows(reply.request_id):
                await self._reply(worker, reply)
            else:
                self._aside(self._reply(worker, reply))
        elif kind == pb.WORKER_PAUSE:
            log.info("connect %s: paused (no new calls)", self.label)
            await self.hub.pause(worker)
        elif kind == pb.WORKER_STATUS:
            status = payload(pb.WorkerStatusData, message)
            log.debug("connect %s: %d calls in flight%s", self.label,
                      len(status.in_flight_request_ids),
                      ", shutting down" if status.shutdown_requested else "")
        elif kind == pb.WORKER_CONNECT:
            raise Refused(POLICY, "WORKER_CONNECT on a connection already open")

    def _aside(self, word: Coroutine[Any, Any, None]) -> None:
        """Handle a word about a call this process does not know off the read loop: finding
        it may take up to ``HANDOVER_WAIT`` (a call handed over by a process that has not
        written it down yet, or one whose caller died), and the socket's other frames (beats,
        acks, other replies) must not wait behind it."""
        task = asyncio.get_running_loop().create_task(self._settle(word))
        self._asides.add(task)
        task.add_done_callback(self._asides.discard)

    async def _settle(self, word: Coroutine[Any, Any, None]) -> None:
        try:
            await word
        except Refused as exc:  # logged by ``run`` as the read loop ends
            self._out.flush()
            with contextlib.suppress(ConnectionClosed):
                await self.ws.close(exc.code, str(exc)[:120])
        except (ConnectionClosed, ConnectionError):
            pass  # not acknowledged: the worker sends it again or flushes it over HTTP
        except Exception:
            log.exception("connect %s: a word about a call failed", self.label)

    async def _extend(self, worker: Worker, extend: pb.WorkerRequestExtendLeaseData) -> None:
        lease = await self.hub.extend(worker, extend.request_id, extend.lease_id)
        answer = pb.WorkerRequestExtendLeaseAckData(
            request_id=extend.request_id, account_id=extend.account_id,
            env_id=extend.env_id, app_id=extend.app_id, function_slug=extend.function_slug)
        if lease is not None:
            answer.new_lease_id = lease
        else:
            log.info("connect %s: lease of request %s not extended (lapsed or not its)",
                     self.label, extend.request_id)
        await self._out.send(frame(pb.WORKER_REQUEST_EXTEND_LEASE_ACK,
                                 answer.SerializeToString()))

    async def _reply(self, worker: Worker, reply: pb.SDKResponse) -> None:
        if not await self.hub.replied(worker, worker.env_id, reply):
            raise Refused(POLICY, f"reply for request {reply.request_id[:40]!r}, which "
                                  "this worker does not hold")
        await self._out.send(frame(pb.WORKER_REPLY_ACK, pb.WorkerReplyAckData(
            request_id=reply.request_id).SerializeToString()))
