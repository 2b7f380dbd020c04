"""Scenario: a gateway drained mid-call. Two ``tidings serve`` processes on one PostgreSQL
database behind a load balancer, and a Connect worker (the official ``inngest`` SDK for Python
or for TypeScript, ``connect()``) that reaches them through it. The first holds the worker's
socket and takes no calls of SDK apps itself (``--no-http``), so the second claims the run and
calls the worker through the first. While the run's long step is held in the worker, the first
is stopped with SIGTERM, as an orchestrator stops a pod: it stops answering HTTP, then tells
the worker ``GATEWAY_CLOSING``. The worker asks the balancer for a gateway again, reconnects to
the second, extends its lease and replies there: the reply is not lost, the run completes, and
neither step runs twice."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.connect_stack import APP, ConnectStack, Worker
from tests.acceptance.sdk_apps import wait_for
from tests.acceptance.test_inngest_node_connect import APP as NODE_APP
from tests.acceptance.test_inngest_node_connect import start_node_worker
from tests.acceptance.test_inngest_py_connect_failover import (
    Balancer,
    behind_balancer,
    hold_a_run,
    sockets_held,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def drained(tmp_path: Path) -> Iterator[tuple[ConnectStack, ConnectStack, Balancer]]:
    with behind_balancer(tmp_path, "--no-http") as stacks:
        yield stacks


@pytest.mark.parametrize("sdk", ["python", pytest.param("node", marks=pytest.mark.node)])
def test_a_gateway_drained_mid_call_loses_no_reply(
        drained: tuple[ConnectStack, ConnectStack, Balancer], tmp_path: Path, sdk: str) -> None:
    first, second, balancer = drained
    worker: Worker
    if sdk == "python":
        app, worker = APP, first.start_worker("w1", INNGEST_BASE_URL=balancer.url)
    else:
        app, worker = NODE_APP, start_node_worker(first, "w1", INNGEST_BASE_URL=balancer.url)
    event = "connect/slow" if sdk == "python" else "node-connect/slow"
    held = hold_a_run(first, second, tmp_path / "gate", event=event, app=app)
    assert sockets_held(second.server.url, second.api_key) == 0
    first_log = first.server.data_dir / "server.log"

    first.server.process.send_signal(signal.SIGTERM)
    # Stopped in good order (uvicorn ends by raising the signal again), not killed.
    assert first.server.process.wait(timeout=60) in (0, -signal.SIGTERM), held.logs()
    assert "told the gateway is closing" in first_log.read_text(errors="replace")

    # The worker went to the second process while its step was still held.
    wait_for(lambda: True if sockets_held(second.server.url, second.api_key) == 1 else None,
             timeout=60, what="the worker to reconnect to the second process", logs=held.logs)
    assert (second.server.url, "/v0/connect/start") in balancer.answered
    assert held.ran("long-end") == 0
    assert second.api.run(held.run_id)["status"] == "Running"

    # The long step's reply, sent over the new socket, is the one used.
    held.ends_once(worker)
