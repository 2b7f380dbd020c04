"""Scenario: a worker written with the official ``inngest`` npm package serves its functions
over Connect (``connect()`` from ``inngest/connect``, no HTTP server of its own) against a live
``tidings dev``: its app syncs over the socket and a run with a step, a sleep, a wait and
parallel steps completes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.connect_stack import ConnectStack, Worker, running_stack
from tests.acceptance.sdk_apps import NODE_DIR, clean_env, node_binary, wait_for
from tests.acceptance.test_inngest_py_connect import send

pytestmark = pytest.mark.node
APP = "node-connect"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ConnectStack]:
    with running_stack(tmp_path) as running:
        yield running


def start_node_worker(stack: ConnectStack, name: str, **env: str) -> Worker:
    node = node_binary()
    log_path = stack.tmp_path / f"{name}.log"
    log = open(log_path, "ab")  # noqa: SIM115
    process = subprocess.Popen(
        [node, "--experimental-websocket", "connect.mjs", name], cwd=NODE_DIR,
        env=clean_env(**{"INNGEST_DEV": "1", "INNGEST_BASE_URL": stack.server.url,
                         "STEP_LOG": str(stack.step_log), **stack.worker_env, **env}),
        stdout=log, stderr=subprocess.STDOUT)
    worker = Worker(name, process, log, log_path)
    stack.workers.append(worker)
    return worker


def test_node_connect_worker_runs_steps_sleeps_and_waits(stack: ConnectStack) -> None:
    start_node_worker(stack, "n1")

    def connected() -> dict[str, object] | None:
        for app in stack.api.apps():
            if app["app_id"] == APP and app["connections"]:
                return dict(app)
        return None

    app = wait_for(connected, timeout=60, what="the node worker to connect", logs=stack.logs)
    assert app["framework"] == "connect"
    [connection] = app["connections"]  # type: ignore[misc]
    assert connection["instance_id"] == "n1"
    assert connection["sdk"].startswith("typescript:v4.")

    flow = stack.api.run_of(send(stack, "node-connect/flow", {"id": 3}), f"{APP}-flow")

    def waiting() -> bool | None:
        pauses = stack.api.run(flow["id"])["pauses"]
        return True if any(p["kind"] == "wait" for p in pauses) else None

    wait_for(waiting, timeout=60, what="the flow to wait for its approval", logs=stack.logs)
    send(stack, "node-connect/approved", {"id": 3, "by": "bo"})
    done = stack.api.finished(flow["id"], logs=stack.logs)
    assert done["status"] == "Completed", done
    assert done["output"] == {"first": "A", "approvedBy": "bo", "parallel": [1, 2], "id": 3}
