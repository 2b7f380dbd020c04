"""Connect across processes, on both backends: two hubs share one database, as two server
processes do. The worker is connected to the first (its *owner*); a call made by the second
goes through the database, down the owner's socket, and its reply comes back the same way.
Leases are extended through the rows, a reply from another process for a call it does not
hold is refused, and a call whose lease lapses fails for its caller."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest

from tidings.connect import wire_pb2 as pb
from tidings.connect.hub import Hub, function_url
from tidings.connect.relay import Relay, channel
from tidings.connect.worker import Worker
from tidings.engine.http_client import Answer, CallFailed
from tidings.observe import metrics
from tidings.runs.local import Wakers
from tidings.storage import Storage, storage_for
from tidings.supervision import Supervisor

URL = function_url("env1", "app", "app-fn")


class Socket:
    def __init__(self) -> None:
        self.requests: asyncio.Queue[pb.GatewayExecutorRequestData] = asyncio.Queue()

    async def send(self, data: bytes) -> None:
        message = pb.ConnectMessage()
        message.ParseFromString(data)
        request = pb.GatewayExecutorRequestData()
        request.ParseFromString(message.payload)
        await self.requests.put(request)


@pytest.fixture
async def hubs(storage: Storage) -> AsyncIterator[tuple[Hub, Hub]]:
    supervisor = Supervisor()
    owner = Hub(lease_seconds=2, relay=Relay(storage, owner="owner"))
    caller = Hub(lease_seconds=2, relay=Relay(storage, owner="caller"))
    assert owner.relay is not None
    await owner.relay.start(owner, supervisor)
    yield owner, caller
    await owner.relay.stop()


def worker(socket: Socket, *, limit: int | None = None) -> Worker:
    return Worker(connection_id="01M90W3Q9S82EK4PVH1C9AB6KE", env_id="env1", instance_id="i1",
                  functions={"app": frozenset({"app-fn"})}, sdk="py:v0", send=socket.send,
                  max_concurrency=limit, connected_at=1)


async def test_a_call_through_another_process(hubs: tuple[Hub, Hub]) -> None:
    owner, caller = hubs
    before = metrics.connect_calls.summed(1)
    socket = Socket()
    w = worker(socket, limit=2)
    await owner.add(w)
    assert caller.relay is not None
    [listed] = await caller.relay.listed("env1")
    assert (listed.instance_id, listed.owner, listed.capacity, listed.status) == (
        "i1", "owner", 2, "ready")

    call = asyncio.create_task(caller.post(URL, b'{"x":1}', {"x-run-id": "run1"}))
    request = await asyncio.wait_for(socket.requests.get(), 10)
    assert (request.function_slug, request.run_id, request.request_payload) == (
        "app-fn", "run1", b'{"x":1}')
    assert owner.in_flight("env1", "i1") == 1
    assert await owner.acked(w, request.request_id)
    lease = await owner.extend(w, request.request_id, request.lease_id)
    assert lease is not None and lease != request.lease_id
    assert await owner.extend(w, request.request_id, request.lease_id) == lease  # a repeat
    assert await owner.replied(w, "env1", pb.SDKResponse(
        request_id=request.request_id, status=pb.DONE, body=b'"done"', sdk_version="py:v0"))
    answer = await asyncio.wait_for(call, 10)
    assert (answer.status, answer.body, answer.authenticated) == (200, b'"done"', True)
    assert owner.in_flight("env1", "i1") == 0
    after = metrics.connect_calls.summed(1)
    for route in ("relayed", "forwarded"):  # counted once by each side
        key = (route, "replied")
        assert after[key][0] - before.get(key, [0.0])[0] == 1


async def test_the_lease_and_the_reply_are_the_instances(hubs: tuple[Hub, Hub]) -> None:
    owner, caller = hubs
    socket = Socket()
    w = worker(socket)
    await owner.add(w)
    call = asyncio.create_task(caller.post(URL, b"", {}))
    request = await asyncio.wait_for(socket.requests.get(), 10)
    await owner.acked(w, request.request_id)
    # Another instance, connected to the caller's process, cannot take the call over.
    other = Worker(connection_id="01M90W3Q9S82EK4PVH1C9AB6KF", env_id="env1",
                   instance_id="i2", functions={"app": frozenset({"app-fn"})}, sdk="py:v0",
                   send=Socket().send)
    assert await caller.extend(other, request.request_id, request.lease_id) is None
    assert not await caller.replied(other, "env1", pb.SDKResponse(request_id=request.request_id))
    # The same instance, reconnected to the caller's process after a drain, can.
    again = Worker(connection_id="01M90W3Q9S82EK4PVH1C9AB6KG", env_id="env1",
                   instance_id="i1", functions={"app": frozenset({"app-fn"})}, sdk="py:v0",
                   send=Socket().send)
    assert await caller.extend(again, request.request_id, request.lease_id) is not None
    assert await caller.replied(again, "env1", pb.SDKResponse(
        request_id=request.request_id, status=pb.NOT_COMPLETED, body=b"[]"))
    assert (await asyncio.wait_for(call, 10)).status == 206


async def test_a_lapsed_lease_fails_the_call_for_its_caller(
        hubs: tuple[Hub, Hub], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tidings.connect.hub.LEASE_GRACE", 0.0)
    owner, caller = hubs
    socket = Socket()
    w = worker(socket)
    await owner.add(w)
    call = asyncio.create_task(caller.post(URL, b"", {}))
    request = await asyncio.wait_for(socket.requests.get(), 10)
    await owner.acked(w, request.request_id)
    with pytest.raises(CallFailed, match="lease expired"):
        await asyncio.wait_for(call, 20)
    assert await owner.extend(w, request.request_id, request.lease_id) is None


async def test_a_gone_connection_is_not_offered(hubs: tuple[Hub, Hub]) -> None:
    owner, caller = hubs
    w = worker(Socket())
    await owner.add(w)
    await owner.remove(w)
    assert caller.relay is not None
    assert await caller.relay.remotes("env1", "app", "app-fn") == []
    await owner.add(w)
    await owner.pause(w)
    assert await caller.relay.remotes("env1", "app", "app-fn") == []


def again(instance: str = "i1") -> Worker:
    """The same worker instance, on a new socket to another process."""
    return Worker(connection_id="01M90W3Q9S82EK4PVH1C9AB6KH", env_id="env1",
                  instance_id=instance, functions={"app": frozenset({"app-fn"})}, sdk="py:v0",
                  send=Socket().send)


async def test_a_worker_that_drains_mid_call_replies_through_another_process(
        hubs: tuple[Hub, Hub]) -> None:
    """A call made in-process: its worker leaves the socket after acknowledging it and
    reconnects to another process, which extends its lease and takes its reply for the
    process still waiting on it."""
    first, second = hubs
    socket = Socket()
    w = worker(socket)
    await first.add(w)
    call = asyncio.create_task(first.post(URL, b"", {"x-run-id": "run1"}))
    request = await asyncio.wait_for(socket.requests.get(), 10)
    assert await first.acked(w, request.request_id)
    await first.remove(w)  # drained: the socket closes, the call goes on
    moved = again()
    lease = await second.extend(moved, request.request_id, request.lease_id)
    assert lease is not None and lease != request.lease_id
    # Another instance still cannot speak for it.
    assert await second.extend(again("i2"), request.request_id, lease) is None
    assert await second.replied(moved, "env1", pb.SDKResponse(
        request_id=request.request_id, status=pb.DONE, body=b'"moved"'))
    answer = await asyncio.wait_for(call, 10)
    assert (answer.status, answer.body) == (200, b'"moved"')
    assert first.in_flight("env1", "i1") == 0
    assert first.relay is not None
    assert await first.relay.state(request.request_id) is None  # the row is gone with the call


async def test_a_reply_that_outruns_the_hand_over_is_kept(hubs: tuple[Hub, Hub]) -> None:
    """The worker's reply reaches the other process before the first one noticed the socket
    close: it waits for the call to be written down instead of being refused."""
    first, second = hubs
    socket = Socket()
    w = worker(socket)
    await first.add(w)
    call = asyncio.create_task(first.post(URL, b"", {}))
    request = await asyncio.wait_for(socket.requests.get(), 10)
    assert await first.acked(w, request.request_id)
    early = asyncio.create_task(second.replied(again(), "env1", pb.SDKResponse(
        request_id=request.request_id, status=pb.NOT_COMPLETED, body=b"[]")))
    await first.remove(w)
    assert await asyncio.wait_for(early, 10)
    assert (await asyncio.wait_for(call, 10)).status == 206


async def test_a_reply_flushed_over_http_to_another_process_is_kept(
        hubs: tuple[Hub, Hub]) -> None:
    """The SDKs flush a reply no socket acknowledged through ``/v0/connect/flush`` of
    whichever process answers."""
    first, second = hubs
    socket = Socket()
    w = worker(socket)
    await first.add(w)
    call = asyncio.create_task(first.post(URL, b"", {}))
    request = await asyncio.wait_for(socket.requests.get(), 10)
    assert await first.acked(w, request.request_id)
    await first.remove(w)
    assert await second.replied(None, "env1", pb.SDKResponse(
        request_id=request.request_id, status=pb.DONE, body=b'"flushed"'))
    assert (await asyncio.wait_for(call, 10)).body == b'"flushed"'
    # A reply for a call nobody made is still refused (after the hand-over wait).
    assert not await second.replied(None, "env1", pb.SDKResponse(request_id="nope"))


@pytest.mark.postgres
async def test_notices_wake_both_processes_on_postgres(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL the caller's new call wakes the owner and the owner's acknowledgement and
    reply wake the caller (``NOTIFY``, heard by each process's listener): with the rows'
    safety poll set to a minute, the call still ends at once."""
    monkeypatch.setattr("tidings.connect.relay.POLL", 60.0)
    monkeypatch.setattr("tidings.connect.relay.POLL_NOTIFIED", 60.0)
    stores, listeners, hubs = [], [], []
    for name in ("owner", "caller"):
        store = storage_for(pg_url)
        await store.open()
        wakers, listening = Wakers(), asyncio.Event()
        listeners.append(asyncio.create_task(
            store.subscribe(wakers.wake, lambda: None, listening.set)))
        await asyncio.wait_for(listening.wait(), 10)
        stores.append(store)
        hubs.append(Hub(relay=Relay(store, owner=name, wakers=wakers)))
    owner, caller = hubs
    assert owner.relay is not None
    await owner.relay.start(owner, Supervisor())
    try:
        socket = Socket()
        w = worker(socket)
        await owner.add(w)
        call = asyncio.create_task(caller.post(URL, b"", {}))
        request = await asyncio.wait_for(socket.requests.get(), 10)
        assert await owner.acked(w, request.request_id)
        assert await owner.replied(w, "env1", pb.SDKResponse(
            request_id=request.request_id, status=pb.DONE, body=b'"woken"'))
        assert (await asyncio.wait_for(call, 10)).body == b'"woken"'
    finally:
        await owner.relay.stop()
        for task in listeners:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for store in stores:
            await store.close()


class _LookedDuring:
    """The owner's store, on which a call arrives, with its notice, while the owner is in the
    middle of a look (after its read, before its nap): the notice must not be lost."""

    notifies = True

    def __init__(self, storage: Storage, during: Callable[[], Awaitable[None]]) -> None:
        self._storage = storage
        self._during: Callable[[], Awaitable[None]] | None = during

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    async def read(self, fn: Callable[[Any], Any]) -> Any:
        result = await self._storage.read(fn)
        during, self._during = self._during, None
        if during is not None:
            await during()
        return result


async def test_a_notice_heard_during_a_look_is_not_lost(
        storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    """A notice that lands while the owner reads its calls wakes its next nap at once: with the
    safety poll at a minute, the call still reaches the worker (it waited the minute when the
    nap took a fresh event after the look)."""
    caller = Hub(lease_seconds=2, relay=Relay(storage, owner="caller"))
    wakers = Wakers()
    call: list[asyncio.Task[Answer]] = []

    async def arrives() -> None:
        call.append(asyncio.create_task(caller.post(URL, b"", {})))
        for _ in range(200):
            if await storage.read(lambda tx: tx.all("connect_calls_for_owner", ("owner",))):
                break
            await asyncio.sleep(0.05)
        wakers.wake(channel("owner"))

    store = cast(Storage, _LookedDuring(storage, arrives))
    owner = Hub(lease_seconds=2, relay=Relay(store, owner="owner", wakers=wakers))
    assert owner.relay is not None
    monkeypatch.setattr("tidings.connect.relay.POLL", 60.0)
    socket = Socket()
    w = worker(socket)
    await owner.add(w)
    await owner.relay.start(owner, Supervisor())
    try:
        request = await asyncio.wait_for(socket.requests.get(), 10)
        assert await owner.acked(w, request.request_id)
        assert await owner.replied(w, "env1", pb.SDKResponse(
            request_id=request.request_id, status=pb.DONE, body=b'"heard"'))
        assert (await asyncio.wait_for(call[0], 10)).body == b'"heard"'
    finally:
        await owner.relay.stop()
