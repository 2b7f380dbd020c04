"""Scenario: a process stopped while it waits on a call it made itself. Two ``tidings serve``
processes on one PostgreSQL database behind a load balancer, and a Connect worker (the
official ``inngest`` SDK for Python, ``connect()``) that reaches them through it. The first
holds the worker's socket and is the only one that calls SDK apps (the second runs with
``--no-http``), so it claims the run and calls the worker down its own socket. While the run's
long step is held in the worker, the first is stopped with SIGTERM (``--grace 25``): it tells
the worker ``GATEWAY_CLOSING`` at once and hands the call over to the database, and the worker
reconnects to the second while the first still waits on the call. The worker replies there;
the first reads the reply from the database, the run completes within the grace, and no step
runs twice."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.connect_stack import ConnectStack
from tests.acceptance.sdk_apps import wait_for
from tests.acceptance.test_inngest_py_connect_failover import (
    Balancer,
    behind_balancer,
    hold_a_run,
    sockets_held,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def handing(tmp_path: Path) -> Iterator[tuple[ConnectStack, ConnectStack, Balancer]]:
    with behind_balancer(tmp_path, "--grace", "25", second_args=("--no-http",)) as stacks:
        yield stacks


def test_a_call_made_by_a_stopping_process_is_answered_through_the_next(
        handing: tuple[ConnectStack, ConnectStack, Balancer], tmp_path: Path) -> None:
    first, second, balancer = handing
    worker = first.start_worker("w1", INNGEST_BASE_URL=balancer.url)
    held = hold_a_run(first, second, tmp_path / "gate")
    first_log = first.server.data_dir / "server.log"

    first.server.process.send_signal(signal.SIGTERM)
    # The worker leaves at once, not when the first's grace is over, and its call goes with it.
    wait_for(lambda: True if sockets_held(second.server.url, second.api_key) == 1 else None,
             timeout=60, what="the worker to reconnect to the second process", logs=held.logs)
    wait_for(lambda: True if "may come through any process" in first_log.read_text(
        errors="replace") else None, timeout=30, what="the first to hand its call over",
        logs=held.logs)
    assert held.ran("long-end") == 0

    # The reply came through the second; the run was not handed back and called again.
    held.ends_once(worker)
    assert first.server.process.wait(timeout=60) in (0, -signal.SIGTERM), held.logs()
