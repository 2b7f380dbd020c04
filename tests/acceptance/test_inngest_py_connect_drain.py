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
from tests.acceptance.test_inngest_py_connect import send
from tests.acceptance.test_inngest_py_connect_failover import (
    Balancer,
    behind_balancer,
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
    first_log = first.server.data_dir / "server.log"
    second_log = second.server.data_dir / "server.log"

    def logs() -> str:
        return first.logs() + "\n--- second ---\n" + second_log.read_text(errors="replace")

    wait_for(lambda: True if sockets_held(first.server.url, first.api_key) == 1 else None,
             timeout=30, what="the worker to connect to the first process", logs=logs)
    assert sockets_held(second.server.url, second.api_key) == 0
    gate = tmp_path / "gate"
    event = "connect/slow" if sdk == "python" else "node-connect/slow"
    run = second.api.run_of(send(second, event, {"gate": str(gate)}), f"{app}-slow")

    def ran(step: str) -> int:
        return [s for _, run_id, s, _ in first.steps() if run_id == run["id"]].count(step)

    wait_for(lambda: True if ran("long-start") else None, timeout=60,
             what="the long step to start", logs=logs)

    first.server.process.send_signal(signal.SIGTERM)
    # Stopped in good order (uvicorn ends by raising the signal again), not killed.
    assert first.server.process.wait(timeout=60) in (0, -signal.SIGTERM), logs()
    assert "told the gateway is closing" in first_log.read_text(errors="replace")

    # The worker went to the second process while its step was still held.
    wait_for(lambda: True if sockets_held(second.server.url, second.api_key) == 1 else None,
             timeout=60, what="the worker to reconnect to the second process", logs=logs)
    assert (second.server.url, "/v0/connect/start") in balancer.answered
    assert ran("long-end") == 0
    assert second.api.run(run["id"])["status"] == "Running"

    gate.touch()
    done = second.api.finished(run["id"], timeout=120, logs=logs)
    assert done["status"] == "Completed", done
    assert done["output"] == {"recorded_by": "w1", "long_by": "w1"}
    # Each step ran once: the long step's reply, sent over the new socket, was the one used.
    assert (ran("recorded"), ran("long-start"), ran("long-end")) == (1, 1, 1), first.steps()
    assert worker.process.poll() is None  # the worker carried on
    assert "does not hold" not in second_log.read_text(errors="replace")
