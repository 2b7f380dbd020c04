"""Connect across processes, on both backends: two hubs share one database, as two server
processes do. The worker is connected to the first (its *owner*); a call made by the second
goes through the database, down the owner's socket, and its reply comes back the same way.
Leases are extended through the rows, a reply from another process for a call it does not
hold is refused, and a call whose lease lapses fails for its caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tidings.connect import wire_pb2 as pb
from tidings.connect.hub import Hub, function_url
from tidings.connect.relay import Relay
from tidings.connect.worker import Worker
from tidings.engine.http_client import CallFailed
from tidings.storage import Storage
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
