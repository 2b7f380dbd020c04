"""Scenario: two ``tidings serve`` processes on one PostgreSQL database, and a Connect worker
(official ``inngest`` Python SDK, ``connect()``) connected to the first only. The first takes
no calls of SDK apps itself (``--no-http``), so every call of the worker's functions is claimed
by the second, which reaches the worker through the database and the first's socket; both list
the worker. When the first is killed with SIGKILL in the middle of a step and started again,
the worker reconnects to it and the run completes: nothing is lost."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.connect_stack import APP, ConnectStack, gateway_port
from tests.acceptance.sdk_apps import Api, production_keys, wait_for
from tests.acceptance.test_inngest_py_connect import check_flow, check_metrics, send
from tests.conftest import LiveServer, fresh_schema, start_server, stop_server

pytestmark = pytest.mark.postgres


def serve(tmp_path: Path, name: str, db: str, env: dict[str, str], *args: str,
          port: int | None = None) -> LiveServer:
    return start_server(tmp_path / name, "--db", db, "--env", "production",
                        "--retry-interval", "0.2", *args, env=env, command="serve", port=port)


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[ConnectStack, LiveServer]]:
    with fresh_schema() as db:
        keys = production_keys(tmp_path, db=db)
        first = serve(tmp_path, "first", db, keys.env, "--no-http")
        second = serve(tmp_path, "second", db, keys.env)
        bearer = {"authorization": f"Bearer {keys.signing_key}"}
        stack = ConnectStack(first, gateway_port(first.url, bearer), tmp_path, [],
                             {"INNGEST_DEV": "0", "INNGEST_SIGNING_KEY": keys.signing_key},
                             keys.api_key, keys.event_key, keys)
        try:
            yield stack, second
        finally:
            for worker in stack.workers:
                worker.stop()
            stop_server(second)
            stop_server(stack.server)


def test_calls_claimed_by_one_process_run_on_a_worker_connected_to_another(
        two: tuple[ConnectStack, LiveServer]) -> None:
    stack, second = two
    check_flow(stack)  # every call was made by the second process, through the first
    api_key = stack.api_key
    [app] = [a for a in Api(second.url, api_key).apps() if a["app_id"] == APP]
    [connection] = app["connections"]
    assert connection["instance_id"] == "w1" and connection["status"] == "ready"
    # The calls, seen from both ends: forwarded down the first's socket, relayed by the second.
    check_metrics(stack.server.url, api_key, route="forwarded", sockets=1)
    check_metrics(second.url, api_key, route="relayed", sockets=0)


def test_the_owner_killed_mid_step_loses_nothing(two: tuple[ConnectStack, LiveServer],
                                                 tmp_path: Path) -> None:
    stack, _ = two
    stack.start_worker("w1")
    stack.connected(1)
    run = stack.api.run_of(send(stack, "connect/slow", {"seconds": 6}), f"{APP}-slow")

    def long_step_started() -> bool | None:
        return True if any(s[2] == "long-start" for s in stack.steps()) else None

    wait_for(long_step_started, timeout=30, what="the long step to start", logs=stack.logs)
    first = stack.server
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    first.log.close()
    keys = stack.keys
    assert keys is not None
    stack.server = serve(tmp_path, "first-again", keys.db, keys.env, "--no-http",
                         port=first.port)

    done = stack.api.finished(run["id"], timeout=120, logs=stack.logs)
    assert done["status"] == "Completed", done
    assert done["output"] == {"recorded_by": "w1", "long_by": "w1"}
    ran = [step for _, run_id, step, _ in stack.steps() if run_id == run["id"]]
    assert ran.count("recorded") == 1, ran
