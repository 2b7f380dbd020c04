"""Bad input to the Connect gateway and its HTTP side, on a live ``tidings dev``: each breach of
the protocol closes that one socket with a close code and a reason the worker can read, and
nothing else is affected (the server stays healthy, a good worker still connects); a malformed
body to ``/v0/connect/start`` or ``/flush`` is a 4xx naming what was wrong, never a 5xx."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.acceptance.connect_stack import ConnectStack, start_stack
from tests.conftest import stop_server
from tidings.connect import wire_pb2 as pb

SUBPROTOCOL = "v0.connect.inngest.com"
FUNCTIONS = [{"id": "bad-app-fn", "name": "fn", "triggers": [{"event": "bad/go"}],
              "steps": {"step": {"id": "step", "name": "step", "runtime": {
                  "type": "ws", "url": "wss://connect?fnId=bad-app-fn&stepId=step"}}}}]
CONN_ID = "01M90W3Q9S82EK4PVH1C9AB6KE"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnectStack]:
    running = start_stack(tmp_path_factory.mktemp("connect-bad"))
    yield running
    stop_server(running.server)


def message(kind: int, payload: bytes = b"") -> bytes:
    return pb.ConnectMessage(kind=kind, payload=payload).SerializeToString()  # type: ignore[arg-type]


@contextlib.contextmanager
def hello(stack: ConnectStack) -> Iterator[ClientConnection]:
    with connect(f"ws://127.0.0.1:{stack.gateway_port}/v0/connect",
                 subprotocols=[SUBPROTOCOL], max_size=None, open_timeout=10) as ws:
        assert ws.subprotocol == SUBPROTOCOL
        first = ws.recv(timeout=10)
        assert first == b""  # GATEWAY_HELLO: kind 0, no payload
        yield ws


def worker_connect(*, apps: list[pb.AppConfiguration] | None = None,
                   conn_id: str = CONN_ID, instance: str = "bad-worker") -> bytes:
    if apps is None:
        apps = [pb.AppConfiguration(app_name="bad-app",
                                    functions=json.dumps(FUNCTIONS).encode())]
    data = pb.WorkerConnectRequestData(connection_id=conn_id, instance_id=instance,
                                       apps=apps, sdk_language="test", sdk_version="1")
    return message(pb.WORKER_CONNECT, data.SerializeToString())


@contextlib.contextmanager
def ready(stack: ConnectStack) -> Iterator[ClientConnection]:
    with hello(stack) as ws:
        yield handshake(ws)


def handshake(ws: ClientConnection) -> ClientConnection:
    ws.send(worker_connect())
    answer = pb.ConnectMessage()
    answer.ParseFromString(ws.recv(timeout=30))
    assert answer.kind == pb.GATEWAY_CONNECTION_READY, answer
    intervals = pb.GatewayConnectionReadyData()
    intervals.ParseFromString(answer.payload)
    assert intervals.extend_lease_interval.endswith("s")
    assert intervals.extend_lease_interval[:-1].isdigit()  # the SDKs read only "<n>s"
    return ws


def closed(ws: ClientConnection, timeout: float = 30) -> tuple[int, str]:
    """Read until the gateway closes the socket: its close code and reason."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ws.recv(timeout=deadline - time.monotonic())
    except ConnectionClosed as exc:
        if exc.rcvd is None:
            raise AssertionError(f"the socket broke without a close frame: {exc}") from None
        return exc.rcvd.code, exc.rcvd.reason
    raise AssertionError("the gateway did not close the socket")


def still_fine(stack: ConnectStack) -> None:
    assert httpx.get(f"{stack.server.url}/health", timeout=10).status_code == 200
    with ready(stack) as ws:
        ws.send(message(pb.WORKER_HEARTBEAT))
        beat = pb.ConnectMessage()
        beat.ParseFromString(ws.recv(timeout=10))
        assert beat.kind == pb.GATEWAY_HEARTBEAT


@pytest.mark.parametrize(("name", "frames", "code", "reason"), [
    ("text frame", ["hello"], 1007, "text frame"),
    ("not protobuf", [b"\xff\xff\xff"], 1007, "not a protobuf"),
    ("heartbeat first", [message(pb.WORKER_HEARTBEAT)], 1008, "expected WORKER_CONNECT"),
    ("connection id not a ULID", [worker_connect(conn_id="nope")], 1008, "connection_id"),
    ("no instance id", [worker_connect(instance="")], 1008, "instance_id"),
    ("no apps", [worker_connect(apps=[])], 1008, "no apps"),
    ("too many apps", [worker_connect(apps=[pb.AppConfiguration(
        app_name=f"a{i}", functions=b"[]") for i in range(11)])], 1008, "too_many_apps"),
    ("connect payload not protobuf", [message(pb.WORKER_CONNECT, b"\xff\xff")], 1007,
     "WorkerConnectRequestData"),
])
def test_bad_opening_closes_the_socket(stack: ConnectStack, name: str, frames: list[object],
                                       code: int, reason: str) -> None:
    with hello(stack) as ws:
        for frame in frames:
            ws.send(frame)  # type: ignore[arg-type]
        got_code, got_reason = closed(ws)
    assert got_code == code, (got_code, got_reason)
    assert reason in got_reason
    still_fine(stack)


@pytest.mark.parametrize(("name", "functions", "reason"), [
    ("functions not JSON", b"{nope", "not JSON"),
    ("a function without triggers", json.dumps([{**FUNCTIONS[0], "triggers": []}]).encode(),
     "trigger"),
])
def test_bad_functions_are_a_sync_failure(stack: ConnectStack, name: str, functions: bytes,
                                          reason: str) -> None:
    with hello(stack) as ws:
        ws.send(worker_connect(apps=[pb.AppConfiguration(app_name="bad-app",
                                                         functions=functions)]))
        failed = pb.ConnectMessage()
        failed.ParseFromString(ws.recv(timeout=30))
        assert failed.kind == pb.SYNC_FAILED
        error = pb.SystemError()
        error.ParseFromString(failed.payload)
        assert reason in error.message
        code, why = closed(ws)
    assert code == 1008 and "connect_invalid_function_config" in why
    still_fine(stack)


@pytest.mark.parametrize(("name", "frame", "code", "reason"), [
    ("unknown kind", message(99), 1008, "unexpected message kind 99"),
    ("a gateway's kind", message(pb.GATEWAY_EXECUTOR_REQUEST), 1008, "unexpected message kind 3"),
    ("reply for a call it does not hold", message(pb.WORKER_REPLY, pb.SDKResponse(
        request_id="01M90W3Q9S82EK4PVH1C9AB6KF").SerializeToString()), 1008, "does not hold"),
    ("reply not protobuf", message(pb.WORKER_REPLY, b"\xff\xff"), 1007, "SDKResponse"),
    ("second connect", worker_connect(), 1008, "already open"),
    ("oversized", message(pb.WORKER_HEARTBEAT, b"x" * (9 * 1024 * 1024)), 1009, ""),
])
def test_bad_message_closes_the_socket(stack: ConnectStack, name: str, frame: bytes,
                                       code: int, reason: str) -> None:
    with ready(stack) as ws:
        ws.send(frame)
        got_code, got_reason = closed(ws)
    assert got_code == code, (got_code, got_reason)
    assert reason in got_reason
    still_fine(stack)


def test_silence_after_hello_is_cut(stack: ConnectStack) -> None:
    with hello(stack) as ws:
        code, reason = closed(ws, timeout=20)
    assert (code, "hello_timeout" in reason) == (1008, True)


def test_slow_opening_handshake_is_cut(stack: ConnectStack) -> None:
    with socket.create_connection(("127.0.0.1", stack.gateway_port), timeout=30) as sock:
        sock.sendall(b"GET /v0/connect HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        started = time.monotonic()
        assert sock.recv(1024) == b""  # the gateway hung up
        assert time.monotonic() - started < 25
    still_fine(stack)


def test_malformed_bodies_are_a_400(stack: ConnectStack) -> None:
    url = stack.server.url
    start = httpx.post(f"{url}/v0/connect/start", content=b"\xff\xff\xff", timeout=10)
    assert start.status_code == 400
    assert "protobuf StartRequest" in start.json()["error"]
    flush = httpx.post(f"{url}/v0/connect/flush", content=b"\xff\xff", timeout=10)
    assert flush.status_code == 400
    assert "protobuf SDKResponse" in flush.json()["error"]
    unknown = httpx.post(f"{url}/v0/connect/flush", content=pb.SDKResponse(
        request_id="01M90W3Q9S82EK4PVH1C9AB6KF").SerializeToString(), timeout=10)
    assert unknown.status_code == 404
    assert "request_id" in unknown.json()["error"]
    nameless = httpx.post(f"{url}/v0/connect/flush", content=b"", timeout=10)
    assert nameless.status_code == 400
    assert "request_id" in nameless.json()["error"]


def test_other_paths_are_a_404(stack: ConnectStack) -> None:
    with pytest.raises(InvalidStatus, match="404"), connect(
            f"ws://127.0.0.1:{stack.gateway_port}/elsewhere", open_timeout=10):
        pass
