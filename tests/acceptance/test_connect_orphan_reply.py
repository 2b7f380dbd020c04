"""Scenario: a worker holds a call when the process that made it is killed with SIGKILL, and
replies for it after reconnecting to that process started again on the same database. Nobody
waits for that reply any more; the worker did nothing wrong. The gateway acknowledges the reply,
logs a warning naming the call's id, and keeps the socket open; the socket's other frames are
not held up while the gateway looks for the call. A reply naming an id that no
process issued still closes the socket (``test_connect_bad_input``)."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
from websockets.sync.client import ClientConnection

from tests.acceptance.connect_stack import ConnectStack, gateway_port, start_stack
from tests.acceptance.test_connect_bad_input import message, ready
from tests.conftest import start_server, stop_server
from tidings.connect import wire_pb2 as pb


def next_of(ws: ClientConnection, kind: int) -> pb.ConnectMessage:
    """The next frame of ``kind`` from the gateway (calls it sends meanwhile are passed over)."""
    while True:
        frame = pb.ConnectMessage()
        frame.ParseFromString(ws.recv(timeout=30))
        if frame.kind == kind:
            return frame
        assert frame.kind == pb.GATEWAY_EXECUTOR_REQUEST, frame


def next_word(ws: ClientConnection) -> int:
    """The kind of the gateway's next frame other than a call."""
    while True:
        frame = pb.ConnectMessage()
        frame.ParseFromString(ws.recv(timeout=30))
        if frame.kind != pb.GATEWAY_EXECUTOR_REQUEST:
            return int(frame.kind)


def test_a_reply_whose_caller_died_is_acknowledged_and_the_socket_kept(tmp_path: Path) -> None:
    first = start_stack(tmp_path)
    try:
        with ready(first) as ws:
            sent = httpx.post(f"{first.server.url}/e/any", json={"name": "bad/go", "data": {}},
                              timeout=10)
            assert sent.status_code == 200, sent.text
            request = pb.GatewayExecutorRequestData()
            request.ParseFromString(next_of(ws, pb.GATEWAY_EXECUTOR_REQUEST).payload)
            ws.send(message(pb.WORKER_REQUEST_ACK, pb.WorkerRequestAckData(
                request_id=request.request_id, app_id=request.app_id,
                function_slug=request.function_slug, run_id=request.run_id,
            ).SerializeToString()))
            # The caller dies while the worker holds its call.
            first.server.process.send_signal(signal.SIGKILL)
            first.server.process.wait()
    finally:
        stop_server(first.server)
    server = start_server(tmp_path, "--db", str(tmp_path / "dev.db"), "--no-discovery",
                          "--retry-interval", "0.2", port=first.server.port)
    again = ConnectStack(server, gateway_port(server.url), tmp_path, [])
    try:
        with ready(again) as ws:
            ws.send(message(pb.WORKER_REPLY, pb.SDKResponse(
                request_id=request.request_id, status=pb.DONE, body=b'"late"',
                sdk_version="test:v1", request_version=1).SerializeToString()))
            # The gateway looks for the call a while (another process may be writing it
            # down), but not on the socket's read loop: the beat sent after the reply is
            # answered first.
            ws.send(message(pb.WORKER_HEARTBEAT))
            assert next_word(ws) == pb.GATEWAY_HEARTBEAT
            ack = pb.WorkerReplyAckData()
            ack.ParseFromString(next_of(ws, pb.WORKER_REPLY_ACK).payload)
            assert ack.request_id == request.request_id
            ws.send(message(pb.WORKER_HEARTBEAT))  # the socket is still open
            next_of(ws, pb.GATEWAY_HEARTBEAT)
    finally:
        stop_server(server)
    log = (server.data_dir / "server.log").read_text(errors="replace")
    [warning] = [line for line in log.splitlines() if "nobody waits for" in line]
    assert "WARNING" in warning and request.request_id in warning, warning
    assert "bad-worker" in warning, warning  # the worker's instance
    assert "does not hold" not in log
