"""The live Connect workers of this process, and the calls made to them.

A call of a Connect function reaches ``Hub.post`` through the HTTP driver's app caller: the
function's URL (``ws://connect?env=…&app=…&fnId=…``, written when the worker synced) says which
environment, app and function, the body is the call the HTTP driver would ``POST``. The hub
picks one of the app's live connections whose worker has room (``max_worker_concurrency``
counts calls per instance, across its connections), sends the call down the socket as a
``GATEWAY_EXECUTOR_REQUEST`` with a lease, waits for the worker's ``WORKER_REQUEST_ACK`` (or
tries another connection when the socket closes first) and then for its reply, which it hands
back to the driver as the HTTP answer the same SDK would have given.

A lease is held by the worker's *instance*, not by a socket: a worker that reconnects after a
drain extends it and replies over its new socket. While the worker extends it (every
``extend_lease_interval``), the call waits; once it lapses the call fails as an unreachable app
would, and the engine retries it — on another connection, or on this one if it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

from tidings.connect import wire_pb2 as pb
from tidings.connect.outbox import envelope
from tidings.connect.relay import POLL, CallRow, NotAcked, Relay, Remote
from tidings.connect.request_ids import RequestIds
from tidings.connect.worker import Worker
from tidings.engine.http_client import Answer, CallFailed
from tidings.ids import stamped_id
from tidings.observe import metrics

log = logging.getLogger("tidings.connect")
ACK_TIMEOUT = 10.0  # seconds a worker has to acknowledge a call before another is tried
ROUTE_ATTEMPTS = 3  # connections a call is offered to
LEASE_GRACE = 5.0  # seconds past a lease's expiry before the call is given up
FINISHED_KEPT = 1024  # ids of ended calls remembered, so that a late reply is not an offence
_STATUS = {pb.DONE: 200, pb.NOT_COMPLETED: 206, pb.ERROR: 500}


def function_url(env_id: str, app: str, slug: str) -> str:
    """The URL a Connect function is registered under: where the hub reads its route."""
    return "ws://connect?" + urlencode({"env": env_id, "app": app, "fnId": slug,
                                        "stepId": "step"})


def app_url(env_id: str, app: str) -> str:
    return "ws://connect?" + urlencode({"env": env_id, "app": app})


@functools.lru_cache(maxsize=4096)
def _address(url: str) -> tuple[str | None, str | None, str | None, str | None]:
    """The environment, app, function and step a call's URL names (each call of a function
    names the same few: they are parsed once)."""
    query = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
    return query.get("env"), query.get("app"), query.get("fnId"), query.get("stepId")


def is_connect_url(url: str) -> bool:
    return url.startswith(("ws://connect?", "wss://connect?"))


@dataclass(slots=True, eq=False)
class _Call:
    request_id: str
    env_id: str
    instance_id: str
    worker: Worker
    lease_id: str
    expires: float  # monotonic
    # The one thing its caller awaits: the reply, or why there is none (``_NotAcked``: offer
    # the call elsewhere; ``CallFailed``). A remote call has no caller here.
    reply: asyncio.Future[pb.SDKResponse]
    acked: bool = False
    previous_lease: str | None = None
    remote: bool = False  # made for another process (``relay``): its reply goes to the database
    run_id: str = ""
    handed: bool = False  # made here, its socket gone: its lease and reply are in the database
    deadline: asyncio.TimerHandle | None = None  # the caller's one timer (``Hub._overdue``)
    watch: asyncio.Task[None] | None = None  # a handed call's look-ups in the database


class Hub:
    """Connections by app, calls by request id, capacity by instance. With a ``relay``, the
    connections of other processes sharing the database are used too, and this process's are
    offered to them. ``ids`` mints the calls' request ids (``RequestIds.of`` the deployment's
    keyring, so that every process knows a reply for a call of a process that died)."""

    def __init__(self, *, lease_seconds: float = 30.0, relay: Relay | None = None,
                 ids: RequestIds | None = None) -> None:
        self.lease_seconds = lease_seconds
        self.relay = relay
        self.ids = ids or RequestIds.of_process()
        self._workers: set[Worker] = set()
        self._calls: dict[str, _Call] = {}
        self._busy: dict[tuple[str, str], int] = {}  # (env, instance) -> calls it holds
        self._finished: dict[str, None] = {}
        self._changed = asyncio.Event()  # set and replaced whenever a call may find room
        self._closed = False

    # -- connections -------------------------------------------------------------------------

    async def add(self, worker: Worker) -> None:
        self._workers.add(worker)
        self._wake()
        if self.relay is not None:
            await self.relay.joined(worker)

    async def remove(self, worker: Worker) -> None:
        """The socket closed: calls not yet acknowledged on it are offered elsewhere at once;
        acknowledged ones keep their lease, which the instance may extend from a new socket."""
        worker.closed = True
        self._workers.discard(worker)
        for call in list(self._calls.values()):
            if call.worker is not worker:
                continue
            if not call.acked:
                if not call.remote and not call.reply.done():
                    call.reply.set_exception(_NotAcked("the connection closed before the "
                                                       "worker acknowledged the call"))
            elif not call.remote and not call.handed and self.relay is not None:
                await self._hand_over(call)
        self._wake()
        if self.relay is not None:
            await self.relay.left(worker)

    async def _hand_over(self, call: _Call) -> None:
        """The worker may come back on a socket of another process: its extensions and its
        reply will reach the database, where this process looks for them (``_watch``)."""
        assert self.relay is not None
        call.handed = True
        try:
            await self.relay.hand_over(
                request_id=call.request_id, env_id=call.env_id, instance_id=call.instance_id,
                run_id=call.run_id, lease_id=call.lease_id, previous_lease=call.previous_lease,
                expires=time.time() + call.expires - time.monotonic())
        except Exception:
            call.handed = False  # it still waits here: the worker may come back to this process
            log.exception("request %s (run %s): could not be written down for its worker's "
                          "other sockets", call.request_id, call.run_id)
            return
        if call.request_id in self._calls and not call.reply.done():
            call.watch = asyncio.get_running_loop().create_task(self._watch(call))
        log.info("request %s (run %s): its worker's socket closed; its lease and reply may "
                 "come through any process", call.request_id, call.run_id)

    async def pause(self, worker: Worker) -> None:
        worker.draining = True
        if self.relay is not None:
            await self.relay.paused(worker)

    def gauges(self) -> tuple[dict[str, int], dict[str, int]]:
        """This process's sockets by state (ready, draining) and the calls in flight on them
        by route (local, forwarded; handed: made here, their worker gone to another socket)."""
        sockets = {"ready": 0, "draining": 0}
        for w in self._workers:
            sockets["draining" if w.draining else "ready"] += 1
        calls = {"local": 0, "forwarded": 0, "handed": 0}
        for call in self._calls.values():
            calls["forwarded" if call.remote else "handed" if call.handed else "local"] += 1
        return sockets, calls

    def workers(self, env_id: str | None = None) -> list[Worker]:
        return [w for w in self._workers if env_id is None or w.env_id == env_id]

    def in_flight(self, env_id: str, instance_id: str) -> int:
        return self._busy.get((env_id, instance_id), 0)

    def _has_room(self, worker: Worker) -> bool:
        return (worker.max_concurrency is None
                or self.in_flight(worker.env_id, worker.instance_id) < worker.max_concurrency)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- what workers say --------------------------------------------------------------------

    async def acked(self, worker: Worker, request_id: str) -> bool:
        call = self._calls.get(request_id)
        if call is None or call.instance_id != worker.instance_id:
            return request_id in self._finished
        if not call.acked:
            call.acked = True
            if call.remote and self.relay is not None:
                await self.relay.acked(request_id)
        return True

    def knows(self, request_id: str) -> bool:
        """Whether this process made or forwarded the call, or saw it end: a word about any
        other may wait for another process to write the call down (``relay.HANDOVER_WAIT``)."""
        return request_id in self._calls or request_id in self._finished

    async def extend(self, worker: Worker, request_id: str, lease_id: str) -> str | None:
        """A new lease id for the call, or None (NACK) when the lease lapsed, is another's or
        was never given."""
        call = self._calls.get(request_id)
        if call is None or call.remote or call.handed:
            if self.relay is None or (call is None and request_id in self._finished):
                return None
            lease = await self.relay.extend(worker, request_id, lease_id, self.lease_seconds)
            if call is not None and lease is not None:
                call.worker, call.lease_id = worker, lease
                call.expires = time.monotonic() + self.lease_seconds
            return lease
        if (call.instance_id != worker.instance_id or call.env_id != worker.env_id
                or time.monotonic() > call.expires):
            return None
        if lease_id == call.previous_lease:
            return call.lease_id  # a repeated extension: the lease it already got
        if lease_id != call.lease_id:
            return None
        call.worker = worker
        call.previous_lease, call.lease_id = call.lease_id, self._lease()
        call.expires = time.monotonic() + self.lease_seconds
        return call.lease_id

    async def replied(self, worker: Worker | None, env_id: str, reply: pb.SDKResponse) -> bool:
        """Take a worker's reply; False when another worker (or, flushed over HTTP, another
        environment) holds the call, or when no process of this deployment made it. A reply
        for a call that was made but that nobody waits for any more (its caller died or gave
        it up) is taken and dropped, with a warning: the worker did nothing wrong."""
        instance = worker.instance_id if worker is not None else None
        call = self._calls.get(reply.request_id)
        if call is None or call.remote or call.handed:
            if reply.request_id in self._finished:
                return True
            taken = (await self.relay.replied(instance, env_id, reply)
                     if self.relay is not None else None)
            if taken is None:  # no such call in the database either
                if call is not None and call.remote:
                    self._finish(call)  # its caller withdrew it
                elif call is not None:  # handed, and its row not written: its caller is here
                    taken = call.env_id == env_id and instance in (None, call.instance_id)
                    if taken and not call.reply.done():
                        call.reply.set_result(reply)
                    return taken
                return self._orphan(worker, env_id, reply)
            if call is not None and taken:
                if call.remote:
                    metrics.connect_call("forwarded", "replied")
                    self._finish(call)
                elif not call.reply.done():
                    call.reply.set_result(reply)  # handed: its caller is here
            return taken
        if call.env_id != env_id or (instance is not None and call.instance_id != instance):
            return False
        call.acked = True
        if not call.reply.done():
            call.reply.set_result(reply)
        return True

    def _orphan(self, worker: Worker | None, env_id: str, reply: pb.SDKResponse) -> bool:
        if not self.ids.issued(reply.request_id):
            return False
        via = (f"instance {worker.instance_id}, connection {worker.connection_id}"
               if worker is not None else "flushed over HTTP")
        log.warning("request %s (run %s, env %s): reply from %s for a call nobody waits for "
                    "any more (its caller stopped or died): acknowledged and dropped; the run "
                    "goes on when its lease lapses", reply.request_id, reply.run_id or "?",
                    env_id, via)
        metrics.connect_call("none", "orphaned")
        self._finished[reply.request_id] = None
        if len(self._finished) > FINISHED_KEPT:
            del self._finished[next(iter(self._finished))]
        return True

    # -- calls -------------------------------------------------------------------------------

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """A call of a Connect function, made as the HTTP driver makes one to a URL."""
        env_id, app, slug, step_id = _address(url)
        if not (env_id and app and slug):
            raise CallFailed(f"{url} names no Connect function")
        step = step_id or headers.get("x-inngest-step-id") or "step"
        run_id = headers.get("x-run-id", "")
        tried: set[str] = set()
        route = "none"  # no connection found
        try:
            for _ in range(ROUTE_ATTEMPTS):
                target = await self._route(env_id, app, slug, tried)
                tried.add(target.connection_id)
                try:
                    if isinstance(target, Worker):
                        route = "local"
                        reply = await self._call(target, app, slug, step, run_id, body)
                    else:
                        assert self.relay is not None
                        route = "relayed"
                        reply = await self.relay.call(
                            target, request_id=self.ids.new(), app=app, slug=slug,
                            step=step, run_id=run_id, body=body,
                            lease_seconds=self.lease_seconds, ack_timeout=ACK_TIMEOUT,
                            grace=LEASE_GRACE)
                except (_NotAcked, NotAcked) as exc:
                    log.warning("run %s: %s (connection %s); trying another", run_id, exc,
                                target.connection_id)
                    continue
                metrics.connect_call(route, "replied")
                return _answer(reply)
            raise CallFailed(f"no worker of app {app!r} acknowledged the call")
        except CallFailed:
            metrics.connect_call(route, "failed")
            raise

    async def _route(self, env_id: str, app: str, slug: str,
                     tried: set[str]) -> Worker | Remote:
        """A live connection serving ``slug`` whose instance has room — this process's own
        first, then another's — waiting a while for one (a worker reconnecting, a call
        ending)."""
        deadline = time.monotonic() + self.lease_seconds
        while True:
            changed = self._changed  # before the look: a call ending during it still wakes
            if self._closed:
                raise CallFailed("the Connect gateway is shutting down")
            serving = [w for w in self._workers
                       if w.env_id == env_id and not w.draining and not w.closed
                       and slug in w.functions.get(app, ())]
            fresh = [w for w in serving if w.connection_id not in tried] or serving
            free = [w for w in fresh if self._has_room(w)]
            if free:
                # The least busy instance, ties broken at random.
                random.shuffle(free)
                return min(free, key=lambda w: self.in_flight(env_id, w.instance_id))
            if self.relay is not None:
                remotes = await self.relay.remotes(env_id, app, slug)
                untried = [r for r in remotes if r.connection_id not in tried] or remotes
                if untried:
                    return untried[0]
            left = deadline - time.monotonic()
            if left <= 0:
                why = ("every worker is at its max concurrency" if serving else
                       "no healthy connection")
                raise CallFailed(f"Connect app {app!r}: {why}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=min(left, 1.0))

    def _lease_ms(self) -> int:
        return int((time.time() + self.lease_seconds) * 1000)

    def _lease(self) -> str:
        return stamped_id(self._lease_ms())

    def _open(self, worker: Worker, request_id: str, lease_id: str, *,
              remote: bool = False, run_id: str = "") -> _Call:
        loop = asyncio.get_running_loop()
        call = _Call(request_id=request_id, env_id=worker.env_id,
                     instance_id=worker.instance_id, worker=worker, lease_id=lease_id,
                     expires=time.monotonic() + self.lease_seconds,
                     reply=loop.create_future(), remote=remote, run_id=run_id)
        key = (worker.env_id, worker.instance_id)
        self._calls[request_id] = call
        self._busy[key] = self._busy.get(key, 0) + 1
        return call

    def _finish(self, call: _Call) -> None:
        if call.deadline is not None:
            call.deadline.cancel()
        if call.watch is not None:
            call.watch.cancel()
        if self._calls.pop(call.request_id, None) is None:
            return
        key = (call.env_id, call.instance_id)
        self._busy[key] -= 1
        if not self._busy[key]:
            del self._busy[key]
        self._finished[call.request_id] = None
        if len(self._finished) > FINISHED_KEPT:
            del self._finished[next(iter(self._finished))]
        self._wake()

    @staticmethod
    def _request(worker: Worker, request_id: str, lease_id: str, app: str, slug: str,
                 step: str, run_id: str, body: bytes) -> bytes:
        request = pb.GatewayExecutorRequestData(
            request_id=request_id, env_id=worker.env_id, app_id=app, app_name=app,
            function_id=slug, function_slug=slug, step_id=step, request_payload=body,
            run_id=run_id, lease_id=lease_id, job_id=run_id)
        return envelope(pb.GATEWAY_EXECUTOR_REQUEST, request.SerializeToString())

    async def _call(self, worker: Worker, app: str, slug: str, step: str, run_id: str,
                    body: bytes) -> pb.SDKResponse:
        request_id, lease_id = self.ids.new_call(self._lease_ms())
        call = self._open(worker, request_id, lease_id, run_id=run_id)
        # One timer per call, not a timeout per wait: it checks the acknowledgement, then the
        # lease (moved on by each extension) when it is due.
        loop = asyncio.get_running_loop()
        call.deadline = loop.call_at(loop.time() + ACK_TIMEOUT, self._overdue, call)
        try:
            try:
                await worker.send(self._request(worker, call.request_id, call.lease_id, app,
                                                slug, step, run_id, body))
            except ConnectionError as exc:
                if call.reply.done():
                    return call.reply.result()
                raise _NotAcked(str(exc)) from None
            return await call.reply
        finally:
            self._finish(call)
            if call.handed and self.relay is not None:
                await self.relay.drop(call.request_id)

    async def forward(self, row: CallRow) -> None:
        """Another process's call for a worker connected here: send it down a socket of that
        instance once the instance has room (until then it waits in the database)."""
        if row.request_id in self._calls or row.request_id in self._finished:
            return
        workers = [w for w in self._workers
                   if w.env_id == row.env_id and w.instance_id == row.instance_id
                   and not w.closed and not w.draining
                   and row.slug in w.functions.get(row.app, ())]
        if not workers or not self._has_room(workers[0]):
            return
        assert self.relay is not None
        if not await self.relay.sent(row.request_id):
            return  # the caller withdrew it meanwhile
        worker = workers[0]
        call = self._open(worker, row.request_id, row.lease_id, remote=True)
        try:
            await worker.send(self._request(worker, row.request_id, row.lease_id, row.app,
                                            row.slug, row.step, row.run_id, row.body))
        except ConnectionError as exc:
            log.warning("request %s (run %s): could not be sent: %s", row.request_id,
                        row.run_id, exc)
            self._finish(call)

    def expire(self) -> None:
        """Forget the calls made for other processes whose lease lapsed: their callers have
        given up on them."""
        now = time.monotonic()
        for call in list(self._calls.values()):
            if call.remote and now > call.expires + LEASE_GRACE:
                log.warning("request %s: the worker (instance %s) stopped extending its lease",
                            call.request_id, call.instance_id)
                metrics.connect_call("forwarded", "failed")
                self._finish(call)

    def _overdue(self, call: _Call) -> None:
        """The call's timer: a call not acknowledged in time is offered elsewhere; an
        acknowledged one fails once its lease (extended meanwhile, maybe) has lapsed."""
        call.deadline = None
        if call.reply.done() or call.request_id not in self._calls:
            return
        if not call.acked:
            call.reply.set_exception(_NotAcked("the worker did not acknowledge the call"))
            return
        left = call.expires + LEASE_GRACE - time.monotonic()
        if left > 0:
            loop = asyncio.get_running_loop()
            call.deadline = loop.call_at(loop.time() + left, self._overdue, call)
            return
        log.warning("request %s: the worker (instance %s) stopped extending its lease",
                    call.request_id, call.instance_id)
        call.reply.set_exception(CallFailed("the Connect worker stopped responding (its lease "
                                            "expired)"))

    async def _watch(self, call: _Call) -> None:
        """A handed-over call: look for its lease and its reply in the database until it
        ends (``_finish`` cancels this)."""
        while not call.reply.done():
            await asyncio.sleep(POLL)
            try:
                await self._look_up(call)
            except Exception:
                log.exception("request %s (run %s): could not look up the handed-over call",
                              call.request_id, call.run_id)

    async def _look_up(self, call: _Call) -> None:
        """A handed-over call: its lease and its reply as another process wrote them."""
        assert self.relay is not None
        state = await self.relay.state(call.request_id)
        if state is None:
            return
        word, reply, expires_ms = state
        call.expires = time.monotonic() + expires_ms / 1000 - time.time()
        if word == "replied" and reply is not None and not call.reply.done():
            answer = pb.SDKResponse()
            answer.ParseFromString(reply)
            call.reply.set_result(answer)

    async def aclose(self) -> None:
        self._closed = True
        for call in self._calls.values():
            if not call.remote and not call.reply.done():
                call.reply.set_exception(CallFailed("the Connect gateway is shutting down"))
        self._wake()


class _NotAcked(Exception):
    pass


def _answer(reply: pb.SDKResponse) -> Answer:
    headers = {"x-inngest-sdk": reply.sdk_version or "connect",
               "x-inngest-req-version": str(reply.request_version)}
    if reply.no_retry:
        headers["x-inngest-no-retry"] = "true"
    if reply.HasField("retry_after") and reply.retry_after:
        headers["retry-after"] = reply.retry_after
    return Answer(_STATUS.get(reply.status, 500), headers, reply.body, authenticated=True)
