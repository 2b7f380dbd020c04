"""The Connect hub on its own: routing within each instance's concurrency, leases extended by
the instance that holds them (from any of its sockets) and refused to others, a reply taken
once, a call offered elsewhere when its socket closes before the ack, a lapsed lease failing
the call; and the session tokens ``/v0/connect/start`` hands out."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

import pytest

from tidings.connect import tokens
from tidings.connect import wire_pb2 as pb
from tidings.connect.hub import Hub, function_url
from tidings.connect.request_ids import RequestIds
from tidings.connect.worker import Worker
from tidings.crypto import Keyring, new_key_text
from tidings.engine.http_client import CallFailed
from tidings.ids import floor_id, now_ms

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

URL = function_url("env1", "app", "app-fn")


class Socket:
    """The worker's end of one connection: what the gateway sent it."""

    def __init__(self) -> None:
        self.requests: asyncio.Queue[pb.GatewayExecutorRequestData] = asyncio.Queue()

    async def send(self, data: bytes) -> None:
        message = pb.ConnectMessage()
        message.ParseFromString(data)
        assert message.kind == pb.GATEWAY_EXECUTOR_REQUEST
        request = pb.GatewayExecutorRequestData()
        request.ParseFromString(message.payload)
        await self.requests.put(request)


def worker(socket: Socket, instance: str = "i1", *, limit: int | None = None,
           env: str = "env1") -> Worker:
    return Worker(connection_id=f"c-{instance}-{id(socket)}", env_id=env, instance_id=instance,
                  functions={"app": frozenset({"app-fn"})}, sdk="py:v0", send=socket.send,
                  max_concurrency=limit)


def reply(request_id: str, status: int = pb.DONE, body: bytes = b'"ok"') -> pb.SDKResponse:
    return pb.SDKResponse(request_id=request_id, status=status, body=body,  # type: ignore[arg-type]
                          sdk_version="py:v0", request_version=1)


async def test_a_call_goes_down_the_socket_and_comes_back_as_an_answer() -> None:
    hub, socket = Hub(), Socket()
    w = worker(socket)
    await hub.add(w)
    call = asyncio.create_task(hub.post(URL, b'{"event":{}}', {"x-run-id": "run1"}))
    request = await socket.requests.get()
    assert (request.app_name, request.function_slug, request.step_id, request.run_id) == (
        "app", "app-fn", "step", "run1")
    assert request.request_payload == b'{"event":{}}'
    assert await hub.acked(w, request.request_id)
    assert hub.in_flight("env1", "i1") == 1
    assert await hub.replied(w, "env1", reply(request.request_id, pb.NOT_COMPLETED, b"[]"))
    answer = await call
    assert (answer.status, answer.body, answer.authenticated) == (206, b"[]", True)
    assert answer.headers["x-inngest-sdk"] == "py:v0"
    assert hub.in_flight("env1", "i1") == 0
    # A late repeat of the reply is no offence; a reply for a call never made is.
    assert await hub.replied(w, "env1", reply(request.request_id))
    assert not await hub.replied(w, "env1", reply("01M90W3Q9S82EK4PVH1C9AB6KF"))


async def test_no_more_calls_than_an_instance_allows() -> None:
    hub, socket = Hub(lease_seconds=30), Socket()
    w = worker(socket, limit=1)
    await hub.add(w)
    first = asyncio.create_task(hub.post(URL, b"1", {}))
    second = asyncio.create_task(hub.post(URL, b"2", {}))
    request = await socket.requests.get()
    await hub.acked(w, request.request_id)
    await asyncio.sleep(0.2)  # the second call has had every chance to be sent
    assert socket.requests.empty()
    assert hub.in_flight("env1", "i1") == 1
    await hub.replied(w, "env1", reply(request.request_id))
    assert (await first).status == 200
    queued = await asyncio.wait_for(socket.requests.get(), 5)
    assert queued.request_payload == b"2"
    await hub.replied(w, "env1", reply(queued.request_id))
    assert (await second).status == 200


async def test_leases_are_the_instances_and_follow_it_to_a_new_socket() -> None:
    hub, old_socket, new_socket, other_socket = Hub(), Socket(), Socket(), Socket()
    old, new, other = worker(old_socket), worker(new_socket), worker(other_socket, "i2")
    await hub.add(old)
    call = asyncio.create_task(hub.post(URL, b"", {}))
    request = await old_socket.requests.get()
    await hub.acked(old, request.request_id)
    await hub.remove(old)  # a drain: the worker reconnects and carries on
    await hub.add(new)
    assert await hub.extend(other, request.request_id, request.lease_id) is None
    lease = await hub.extend(new, request.request_id, request.lease_id)
    assert lease is not None and lease != request.lease_id
    assert await hub.extend(new, request.request_id, request.lease_id) == lease  # a repeat
    assert await hub.extend(new, request.request_id, "01M90W3Q9S82EK4PVH1C9AB6KF") is None
    await hub.replied(new, "env1", reply(request.request_id))
    assert (await call).status == 200


async def test_a_socket_closed_before_the_ack_sends_the_call_elsewhere() -> None:
    hub, first_socket, second_socket = Hub(), Socket(), Socket()
    first, second = worker(first_socket, "i1"), worker(second_socket, "i2")
    await hub.add(first)
    call = asyncio.create_task(hub.post(URL, b"", {}))
    await first_socket.requests.get()
    await hub.remove(first)
    await hub.add(second)
    request = await asyncio.wait_for(second_socket.requests.get(), 5)
    await hub.acked(second, request.request_id)
    await hub.replied(second, "env1", reply(request.request_id))
    assert (await call).status == 200


async def test_a_lapsed_lease_fails_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tidings.connect.hub.LEASE_GRACE", 0.0)
    hub, socket = Hub(lease_seconds=1), Socket()
    w = worker(socket)
    await hub.add(w)
    call = asyncio.create_task(hub.post(URL, b"", {}))
    request = await socket.requests.get()
    await hub.acked(w, request.request_id)
    with pytest.raises(CallFailed, match="lease expired"):
        await asyncio.wait_for(call, 10)
    assert await hub.extend(w, request.request_id, request.lease_id) is None
    assert hub.in_flight("env1", "i1") == 0


async def test_a_call_not_acknowledged_in_time_goes_to_another_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tidings.connect.hub.ACK_TIMEOUT", 0.3)
    hub, mute, able = Hub(), Socket(), Socket()
    silent, w = worker(mute, "i1"), worker(able, "i2")
    await hub.add(silent)
    call = asyncio.create_task(hub.post(URL, b"", {}))
    first = await mute.requests.get()
    await hub.add(w)  # the call is offered here once the first worker stays mute
    request = await asyncio.wait_for(able.requests.get(), 10)
    assert request.request_id != first.request_id
    assert await hub.acked(w, request.request_id)
    assert await hub.replied(w, "env1", reply(request.request_id))
    assert (await asyncio.wait_for(call, 10)).status == 200
    assert hub.in_flight("env1", "i1") == hub.in_flight("env1", "i2") == 0


async def test_an_extended_lease_keeps_the_call_past_its_first_expiry(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tidings.connect.hub.LEASE_GRACE", 0.0)
    monkeypatch.setattr("tidings.connect.hub.ACK_TIMEOUT", 0.1)
    hub, socket = Hub(lease_seconds=2), Socket()
    w = worker(socket)
    await hub.add(w)
    call = asyncio.create_task(hub.post(URL, b"", {}))
    request = await socket.requests.get()
    await hub.acked(w, request.request_id)
    lease, ends = request.lease_id, time.monotonic() + 4.5
    while time.monotonic() < ends:  # the worker's pace: well within each 2 s lease
        lease = await hub.extend(w, request.request_id, lease)
        assert lease is not None
        assert not call.done()
        await asyncio.sleep(0.25)
    assert await hub.replied(w, "env1", reply(request.request_id))
    assert (await asyncio.wait_for(call, 10)).status == 200


async def test_no_worker_for_the_function_fails_after_a_wait() -> None:
    hub = Hub(lease_seconds=2)
    await hub.add(worker(Socket(), env="env2"))  # another environment's
    with pytest.raises(CallFailed, match="no healthy connection"):
        await hub.post(URL, b"", {})


def test_session_tokens_name_their_environment_and_expire() -> None:
    keyring = Keyring.parse(new_key_text())
    token = tokens.issue(keyring, "env1")
    assert tokens.env_of(keyring, token) == "env1"
    assert tokens.env_of(keyring.rotated(), token) == "env1"  # an older key still reads it
    with pytest.raises(tokens.BadToken, match="expired"):
        tokens.env_of(keyring, token, now=time.time() + tokens.LIFETIME_SECONDS + 1)
    with pytest.raises(tokens.BadToken, match="not issued here"):
        tokens.env_of(Keyring.parse(new_key_text()), token)
    with pytest.raises(tokens.BadToken, match="not a JWT"):
        tokens.env_of(keyring, "nope")


async def test_the_gauges_count_sockets_and_calls_in_flight() -> None:
    """What ``/metrics`` shows of the hub: its sockets by state, its calls by route."""
    from prometheus_client import generate_latest

    from tidings.server.metrics_api import ConnectGauges

    hub, socket = Hub(), Socket()
    w, paused = worker(socket), worker(Socket(), "i2")
    await hub.add(w)
    await hub.add(paused)
    await hub.pause(paused)
    call = asyncio.create_task(hub.post(URL, b"", {}))
    request = await socket.requests.get()
    assert hub.gauges() == ({"ready": 1, "draining": 1},
                            {"local": 1, "forwarded": 0, "handed": 0})
    text = generate_latest(ConnectGauges(hub)).decode()  # type: ignore[arg-type]
    assert 'tidings_connect_workers{state="draining"} 1.0' in text
    assert 'tidings_connect_calls_in_flight{route="local"} 1.0' in text
    assert await hub.replied(w, "env1", reply(request.request_id))
    await call
    assert hub.gauges()[1]["local"] == 0


async def test_a_reply_for_a_call_its_caller_gave_up_is_taken_and_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    """Another process of the deployment made the call and is gone: the id is one of ours, so
    the reply is taken (the socket stays) and a warning names it; an id nobody issued is not."""
    keyring = Keyring.parse(new_key_text())
    gone = RequestIds.of(keyring).new()  # what the dead process gave the worker
    hub, socket = Hub(ids=RequestIds.of(keyring.rotated())), Socket()
    w = worker(socket)
    await hub.add(w)
    assert not await hub.replied(w, "env1", reply("01M90W3Q9S82EK4PVH1C9AB6KF"))
    assert not caplog.records
    assert await hub.replied(w, "env1", reply(gone))
    [record] = caplog.records
    assert record.levelname == "WARNING" and gone in record.getMessage()
    assert "i1" in record.getMessage()
    assert await hub.replied(w, "env1", reply(gone))  # a repeat is taken without a word
    assert len(caplog.records) == 1
    assert hub.in_flight("env1", "i1") == 0


def test_request_ids_made_in_one_millisecond_differ() -> None:
    ids = RequestIds.of_process()
    made = [ids.new() for _ in range(2000)]
    assert len(set(made)) == len(made)
    assert all(ids.issued(i) for i in made)


async def test_calls_made_at_once_each_get_their_own_reply() -> None:
    hub, socket = Hub(), Socket()
    w = worker(socket)
    await hub.add(w)
    calls = [asyncio.create_task(hub.post(URL, str(n).encode(), {})) for n in range(30)]
    for _ in calls:
        request = await asyncio.wait_for(socket.requests.get(), 10)
        assert await hub.acked(w, request.request_id)
        assert await hub.replied(w, "env1", reply(request.request_id,
                                                  body=request.request_payload))
    answers = await asyncio.wait_for(asyncio.gather(*calls), 10)
    assert [a.body for a in answers] == [str(n).encode() for n in range(30)]
    assert hub.in_flight("env1", "i1") == 0


def test_request_ids_are_ulids_only_the_deployment_recognises() -> None:
    keyring = Keyring.parse(new_key_text())
    ids = RequestIds.of(keyring)
    made = ids.new()
    assert len(made) == 26 and set(made) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    assert RequestIds.of(keyring).issued(made)  # another process with the same keyring
    assert RequestIds.of(keyring.rotated()).issued(made)  # after a rotation
    assert not RequestIds.of(Keyring.parse(new_key_text())).issued(made)
    assert not ids.issued(made[:-1] + ("0" if made[-1] != "0" else "1"))
    assert not ids.issued("nope")


def test_a_call_gets_its_request_and_lease_ids_from_one_draw() -> None:
    """``new_call`` mints both ids at once: the request id is still one the deployment
    recognises (and its tag is the one earlier releases wrote, so ids of a process not yet
    upgraded are recognised), and the lease is a ULID of its expiry, fresh for each call."""
    keyring = Keyring.parse(new_key_text())
    ids = RequestIds.of(keyring)
    expiry = now_ms() + 60_000
    made = [ids.new_call(expiry) for _ in range(2000)]
    requests, leases = [r for r, _ in made], [lease for _, lease in made]
    assert len(set(requests)) == len(requests) and len(set(leases)) == len(leases)
    assert all(RequestIds.of(keyring).issued(r) for r in requests)
    assert all(len(lease) == 26 and lease[:10] == floor_id(expiry)[:10] for lease in leases)
    # The lease's random part is not the request id's.
    assert all(r[10:18] not in lease for r, lease in made)
    # The tag, written as before: eight base32 characters of a 40-bit keyed BLAKE2b.
    key = hmac.new(keyring.keys[keyring.active], b"tidings connect request id v1",
                   hashlib.sha256).digest()
    for r in requests[:50]:
        value = int.from_bytes(hashlib.blake2b(r[:18].encode(), key=key, digest_size=5).digest())
        assert r[18:] == "".join(ALPHABET[(value >> s) & 31] for s in range(35, -1, -5))
