"""Connect across processes, through the database both share.

Several ``tidings serve`` processes (and ``tidings worker``s) share one database; a worker's
socket is held by one of them, its *owner*, while a run of its function may be claimed by any.
So each owner keeps a row per live connection (``connect_workers``: environment, instance, the
functions of each app, capacity, ready or draining, ``seen_at`` refreshed every few seconds).
A process that has no connection of its own for a call looks there, writes the call as a row
of ``connect_calls`` naming the owner, and polls it. The owner polls for rows naming it,
forwards each down a socket of that instance when the instance has room, and writes back the
acknowledgement, each lease extension and, at last, the reply.

Nothing is lost when a process dies. An owner that dies stops refreshing its rows, so they are
passed over within ``FRESH_MS``; its worker's calls are no longer extended, so their leases
lapse and the callers fail them, and the engine retries them (on a connection elsewhere: the
SDKs reconnect). A caller that dies leaves its rows, which expire with their lease; the run it
had claimed is claimed again when its own lease lapses.

On PostgreSQL each write another process waits for — a new call for its owner, an
acknowledgement or a reply for its caller — is followed at commit by a ``NOTIFY`` naming that
process (``connect:<process>`` on the runs channel, heard by ``Runtime``'s listener and passed on
through ``Wakers``), which wakes it at once. Rows are still polled as a safety net (a notice
missed across a reconnection): a caller every ``POLL`` seconds on SQLite, every
``POLL_NOTIFIED`` on PostgreSQL; an owner every ``POLL`` (a call waiting for its worker to have
room is sent when another ends, which no notice tells).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import msgspec

from tidings.connect import wire_pb2 as pb
from tidings.connect.worker import Worker
from tidings.engine.http_client import CallFailed
from tidings.ids import new_id, now_ms
from tidings.runs.local import Wakers
from tidings.storage.base import Storage
from tidings.storage.tx import Tx
from tidings.supervision import Supervisor


class Forwarder(Protocol):
    """What the relay asks of the process's hub."""

    def workers(self, env_id: str | None = None) -> list[Worker]: ...

    async def forward(self, row: CallRow) -> None: ...

    def expire(self) -> None: ...

log = logging.getLogger("tidings.connect")
POLL = 0.1  # seconds between looks at a row or a queue of rows
POLL_NOTIFIED = 1.0  # the same where NOTIFY wakes the process at once (a safety net)
SEEN_EVERY = 5.0  # seconds between refreshes of this process's connection rows
FRESH_MS = 20_000  # a connection row not refreshed for this long is passed over
FORGET_MS = 120_000  # and deleted after this long
HANDOVER_WAIT = 3.0  # seconds a word about an unknown call waits for the call to be written


def process_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{new_id()[-6:]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Remote:
    """A connection held by another process, as its row says."""

    connection_id: str
    env_id: str
    instance_id: str
    owner: str
    functions: dict[str, list[str]]
    sdk: str
    capacity: int | None
    status: str
    connected_at: int
    held: int = 0  # calls its instance holds, by the rows of calls

    @classmethod
    def from_row(cls, r: tuple[Any, ...], held: int) -> Remote:
        return cls(connection_id=r[0], env_id=r[1], instance_id=r[2], owner=r[3],
                   functions=msgspec.json.decode(r[4]), sdk=r[5], capacity=r[6], status=r[7],
                   connected_at=r[8], held=held)

    @property
    def has_room(self) -> bool:
        return self.capacity is None or self.held < self.capacity


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRow:
    """A call another process wants made down one of this process's sockets."""

    request_id: str
    env_id: str
    instance_id: str
    app: str
    slug: str
    step: str
    run_id: str
    body: bytes
    lease_id: str


def _workers(tx: Tx, env_id: str, now: int) -> list[Remote]:
    held: dict[str, int] = {str(r[0]): int(r[1])
                            for r in tx.all("connect_calls_held", (env_id, now))}
    return [Remote.from_row(r, held.get(r[2], 0))
            for r in tx.all("connect_workers_of_env", (env_id, now - FRESH_MS))]


def _seen(tx: Tx, *, owner: str, now: int) -> None:
    """This process's connections are alive; rows nobody refreshed for long are dropped."""
    tx.run("connect_workers_seen", (now, owner))
    tx.run("connect_workers_stale", (now - FORGET_MS,))
    tx.run("connect_calls_stale", (now - FORGET_MS,))


def _extend(tx: Tx, *, request_id: str, instance_id: str, env_id: str, lease_id: str,
            new_lease: str, expires: int, now: int) -> str | bool | None:
    row = tx.one("connect_call_lease", (request_id,))
    if row is None:
        return False  # no such call (yet: its caller may be handing it over)
    if row[0] != env_id or row[1] != instance_id or row[5] == "replied":
        return None
    if lease_id == row[3] and lease_id != row[2]:
        return str(row[2])  # a repeated extension: the lease it already got
    if tx.run("connect_call_extend", (new_lease, expires, request_id, lease_id, now)) != 1:
        return None
    return new_lease


def _replied(tx: Tx, *, request_id: str, env_id: str, instance_id: str | None,
             reply: bytes, notify: bool) -> bool | None:
    row = tx.one("connect_call_lease", (request_id,))
    if row is None:
        return None  # no such call (yet: its caller may be handing it over)
    if row[0] != env_id or (instance_id is not None and row[1] != instance_id):
        return False
    tx.run("connect_call_replied", (reply, request_id))
    if notify:
        tx.one("notify", (channel(str(row[6])),))
    return True


def channel(process: str) -> str:
    """What ``NOTIFY`` names to wake ``process``'s relay (``Wakers`` key)."""
    return f"connect:{process}"


class Relay:
    """``wakers``: the process's (``Core.wakers``), through which its listener passes on the
    ``NOTIFY`` naming this relay; without them (or on SQLite) rows are only polled."""

    def __init__(self, storage: Storage, *, owner: str | None = None,
                 wakers: Wakers | None = None) -> None:
        self.storage = storage
        self.owner = owner or process_id()
        self._task: asyncio.Task[None] | None = None
        self._hub: Forwarder | None = None
        self._notify = storage.notifies and wakers is not None
        self._poll = POLL_NOTIFIED if self._notify else POLL
        self._changed = asyncio.Event()
        self._wakers = wakers
        if self._notify and wakers is not None:
            wakers.add(channel(self.owner), self._wake)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    @staticmethod
    async def _nap(changed: asyncio.Event, most: float) -> None:
        """Until a notice names this process, or ``most`` seconds. ``changed`` is the event
        taken before the look this nap follows, so a notice heard during the look is not
        lost (waiting on the event current at nap time would miss it)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), most)

    def close(self) -> None:
        if self._notify and self._wakers is not None:
            self._wakers.remove(channel(self.owner), self._wake)

    # -- the owner's side --------------------------------------------------------------------

    async def start(self, hub: Forwarder, supervisor: Supervisor) -> None:
        self._hub = hub
        self._task = supervisor.start("tidings-connect-relay", self._loop)

    async def stop(self) -> None:
        self.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def joined(self, worker: Worker) -> None:
        now = now_ms()
        functions = msgspec.json.encode({app: sorted(slugs)
                                         for app, slugs in worker.functions.items()}).decode()
        await self.storage.write(lambda tx: tx.run("connect_worker_put", (
            worker.connection_id, worker.env_id, worker.instance_id, self.owner, functions,
            worker.sdk, worker.max_concurrency, "ready", worker.connected_at, now)))

    async def paused(self, worker: Worker) -> None:
        await self.storage.write(lambda tx: tx.run("connect_worker_status",
                                                   ("draining", worker.connection_id)))

    async def left(self, worker: Worker) -> None:
        await self.storage.write(lambda tx: tx.run("connect_worker_gone",
                                                   (worker.connection_id,)))

    async def _loop(self, ok: Callable[[], None]) -> None:
        seen = 0.0
        while True:
            changed = self._changed
            hub = self._hub
            assert hub is not None
            mine = bool(hub.workers())
            if mine:
                rows = await self.storage.read(partial(self._calls_for_me, self.owner))
                for row in rows:
                    await hub.forward(row)
            # A process without workers writes nothing: its rows, if any, were deleted as its
            # sockets closed, and those of dead processes are cleared by the living.
            if mine and time.monotonic() - seen >= SEEN_EVERY:
                seen = time.monotonic()
                await self.storage.write(partial(_seen, owner=self.owner, now=now_ms()))
            hub.expire()
            ok()
            # Also every POLL: a call waiting for its instance to have room is sent when a
            # call ends, which no notice tells.
            await self._nap(changed, POLL)

    @staticmethod
    def _calls_for_me(owner: str, tx: Tx) -> list[CallRow]:
        return [CallRow(request_id=r[0], env_id=r[1], instance_id=r[2], app=r[3], slug=r[4],
                        step=r[5], run_id=r[6], body=bytes(r[7]), lease_id=r[8])
                for r in tx.all("connect_calls_for_owner", (owner,))]

    async def sent(self, request_id: str) -> bool:
        """Claim a call for sending (False: the caller withdrew it)."""
        return bool(await self.storage.write(
            lambda tx: tx.run("connect_call_sent", (request_id,))))

    async def acked(self, request_id: str) -> None:
        notify = self._notify

        def write(tx: Tx) -> None:
            if tx.run("connect_call_acked", (request_id,)) and notify:
                row = tx.one("connect_call_lease", (request_id,))
                if row is not None:
                    tx.one("notify", (channel(str(row[6])),))

        await self.storage.write(write)

    # -- any process: what a worker says of a call made through the database ------------------

    async def extend(self, worker: Worker, request_id: str, lease_id: str,
                     lease_seconds: float) -> str | None:
        """A new lease for a call made through the database, or None (NACK). A call not
        found there is looked for again for ``HANDOVER_WAIT``: a worker that left a process
        mid-call may speak here before that process has written the call down."""
        deadline = time.monotonic() + HANDOVER_WAIT
        while True:
            expires = int((time.time() + lease_seconds) * 1000)
            lease = await self.storage.write(partial(
                _extend, request_id=request_id, instance_id=worker.instance_id,
                env_id=worker.env_id, lease_id=lease_id, new_lease=new_id(expires),
                expires=expires, now=now_ms()))
            if lease is not False or time.monotonic() > deadline:
                return lease if isinstance(lease, str) else None
            await asyncio.sleep(POLL)

    async def replied(self, instance_id: str | None, env_id: str,
                      reply: pb.SDKResponse) -> bool | None:
        """Write the reply of a call made through the database (looked for again for
        ``HANDOVER_WAIT`` when not found, as ``extend``): False when the call is another
        instance's or environment's, None when there is no such call."""
        data = reply.SerializeToString()
        deadline = time.monotonic() + HANDOVER_WAIT
        while True:
            taken = await self.storage.write(partial(
                _replied, request_id=reply.request_id, env_id=env_id, instance_id=instance_id,
                reply=data, notify=self._notify))
            if taken is not None or time.monotonic() > deadline:
                return taken
            await asyncio.sleep(POLL)

    async def hand_over(self, *, request_id: str, env_id: str, instance_id: str, run_id: str,
                        lease_id: str, previous_lease: str | None, expires: float) -> None:
        """A call made in this process whose worker's socket closed after acknowledging it:
        write it down, acknowledged, so that the worker may extend its lease and reply from a
        socket held by any process (it reconnects wherever ``/v0/connect/start`` sends it)."""
        row = (request_id, env_id, instance_id, self.owner, self.owner, run_id, b"", lease_id,
               previous_lease, int(expires * 1000), now_ms())
        await self.storage.write(lambda tx: tx.run("connect_call_handed", row))

    async def state(self, request_id: str) -> tuple[str, bytes | None, int] | None:
        """A call's state in the database: its state word, its reply once there, its lease's
        expiry (ms)."""
        row = await self.storage.read(lambda tx: tx.one("connect_call_state", (request_id,)))
        if row is None:
            return None
        return str(row[0]), (bytes(row[1]) if row[1] is not None else None), int(row[2])

    async def drop(self, request_id: str) -> None:
        await self.storage.write(lambda tx: tx.run("connect_call_drop", (request_id,)))

    # -- the caller's side -------------------------------------------------------------------

    async def remotes(self, env_id: str, app: str, slug: str) -> list[Remote]:
        """Other processes' ready connections that serve ``slug`` and have room, in a random
        order (least busy instances first)."""
        found = await self.storage.read(partial(_workers, env_id=env_id, now=now_ms()))
        serving = [r for r in found if r.owner != self.owner and r.status == "ready"
                   and slug in r.functions.get(app, ()) and r.has_room]
        random.shuffle(serving)
        return sorted(serving, key=lambda r: r.held)

    async def listed(self, env_id: str) -> list[Remote]:
        return await self.storage.read(partial(_workers, env_id=env_id, now=now_ms()))

    async def call(self, remote: Remote, *, request_id: str, app: str, slug: str, step: str,
                   run_id: str, body: bytes, lease_seconds: float, ack_timeout: float,
                   grace: float) -> pb.SDKResponse:
        """Make a call through ``remote``'s owner; ``NotAcked`` when it was not taken up in
        time (the row is withdrawn), ``CallFailed`` when its lease lapsed."""
        expires = int((time.time() + lease_seconds) * 1000)
        row = (request_id, remote.env_id, remote.instance_id, remote.owner, self.owner, app,
               slug, step, run_id, body, new_id(expires), expires, now_ms())
        notify = self._notify

        def write(tx: Tx) -> None:
            tx.run("connect_call_new", row)
            if notify:
                tx.one("notify", (channel(remote.owner),))

        await self.storage.write(write)
        try:
            return await self._await(request_id, remote, lease_seconds + ack_timeout, grace)
        finally:
            await self.storage.write(lambda tx: tx.run("connect_call_drop", (request_id,)))

    async def _await(self, request_id: str, remote: Remote, ack_within: float,
                     grace: float) -> pb.SDKResponse:
        acked_by = time.monotonic() + ack_within
        while True:
            changed = self._changed
            state = await self.storage.read(
                lambda tx: tx.one("connect_call_state", (request_id,)))
            if state is None:
                raise CallFailed("the call's row disappeared")
            status, reply, expires = state
            if status == "replied":
                answer = pb.SDKResponse()
                answer.ParseFromString(bytes(reply))
                return answer
            if status in ("new", "sent") and time.monotonic() > acked_by:
                raise NotAcked(f"the process holding connection {remote.connection_id} "
                               "did not hand it the call in time")
            if status == "acked" and now_ms() > expires + grace * 1000:
                log.warning("request %s: the worker (instance %s, via %s) stopped extending "
                            "its lease", request_id, remote.instance_id, remote.owner)
                raise CallFailed("the Connect worker stopped responding (its lease expired)")
            await self._nap(changed, self._poll)


class NotAcked(Exception):
    """The call was not acknowledged: offer it to another connection."""
