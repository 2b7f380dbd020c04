"""Scenario: a worker written with the official ``inngest`` Python SDK serves its functions over
Connect (``connect()``: it dials out to the gateway, no HTTP server of its own). Its app is
synced over the socket and listed with its connection; a run of its function goes through a
step, a sleep and a ``wait_for_event`` and completes, every step having run once."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import httpx

from tests.acceptance.connect_stack import APP, ConnectStack, connect_stack
from tests.acceptance.sdk_apps import wait_for
from tidings.connect import wire_pb2 as pb
from tidings.server.connect_api import INNGEST_DEV_ENV_ID as DEV_ENV_ID

__all__ = ["connect_stack"]


def send(stack: ConnectStack, name: str, data: dict[str, object]) -> str:
    sent = httpx.post(f"{stack.server.url}/e/{stack.event_key}",
                      json={"name": name, "data": data}, timeout=10)
    assert sent.status_code == 200, sent.text
    [event_id] = sent.json()["ids"]
    return str(event_id)


def test_start_names_the_gateway(connect_stack: ConnectStack) -> None:
    answer = httpx.post(f"{connect_stack.server.url}/v0/connect/start",
                        content=pb.StartRequest().SerializeToString(),
                        headers={"content-type": "application/protobuf"}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/protobuf"
    start = pb.StartResponse()
    start.ParseFromString(answer.content)
    assert start.gateway_endpoint == (
        f"ws://127.0.0.1:{connect_stack.gateway_port}/v0/connect")
    assert len(start.connection_id) == 26
    assert start.gateway_group == "gw-dev"
    assert start.session_token.count(".") == 2


def test_connect_worker_runs_steps_sleeps_and_waits(connect_stack: ConnectStack) -> None:
    check_flow(connect_stack)
    check_metrics(connect_stack.server.url, None, route="local", sockets=1)


def check_flow(stack: ConnectStack) -> None:
    """A worker connects, its app syncs over the socket, and a run of its flow goes through a
    step, a sleep and a wait, on that worker."""
    stack.start_worker("w1")
    [connection] = stack.connected()
    assert connection["instance_id"] == "w1"
    assert connection["sdk"].startswith("py:v0.5.")
    assert connection["capacity"] is None
    [app] = [a for a in stack.api.apps() if a["app_id"] == APP]
    assert app["framework"] == "connect"
    assert app["url"].startswith("ws://connect?")
    assert app["functions"] == 2

    flow = stack.api.run_of(send(stack, "connect/flow", {"id": 7}), f"{APP}-flow")

    def waiting() -> bool | None:
        pauses = stack.api.run(flow["id"])["pauses"]
        return True if any(p["kind"] == "wait" for p in pauses) else None

    wait_for(waiting, timeout=30, what="the flow to wait for its approval", logs=stack.logs)
    send(stack, "connect/approved", {"id": 8, "by": "mallory"})
    send(stack, "connect/approved", {"id": 7, "by": "ana"})
    done = stack.api.finished(flow["id"], logs=stack.logs)
    assert done["status"] == "Completed", done
    assert done["output"] == {"first": "A", "approved_by": "ana", "worker": "w1"}
    assert [s["name"] for s in done["steps"]] == ["first", "nap", "approval"]
    assert [s[:3] for s in stack.steps()] == [("w1", flow["id"], "first")]
    [connection] = stack.connected()
    assert connection["in_flight"] == 0


def check_metrics(url: str, api_key: str | None, *, route: str, sockets: int) -> None:
    """``/metrics`` of the process at ``url``: its own sockets (``sockets``), every process's
    (one), and the calls of the flow (a step, the sleep, the wait and the end: four at least)
    answered by ``route``, none failed, none left in flight."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    text = httpx.get(f"{url}/metrics", headers=headers, timeout=10).text
    lines = [line for line in text.splitlines() if line.startswith("tidings_connect")]
    series = {name: float(value) for name, value in (line.rsplit(" ", 1) for line in lines)}
    assert series['tidings_connect_workers{state="ready"}'] == sockets, text
    assert series['tidings_connect_workers{state="draining"}'] == 0
    assert series['tidings_connect_workers_shared{status="ready"}'] == 1
    for flight in ("local", "forwarded", "handed"):
        assert series[f'tidings_connect_calls_in_flight{{route="{flight}"}}'] == 0
    assert series[f'tidings_connect_calls_total{{outcome="replied",route="{route}"}}'] >= 4
    assert not [name for name in series if 'outcome="failed"' in name], text


def check_apps_page(stack: ConnectStack, listed: dict[str, Any]) -> None:
    """The dashboard's apps page lists the worker under its app as ``GET /v1/apps`` does:
    instance, SDK and version, connected since, state, calls in flight, capacity."""
    page = httpx.get(f"{stack.server.url}/apps", timeout=10)
    assert page.status_code == 200, page.text
    row = re.search(r'<tr data-connection="(\w+)">(.*?)</tr>', page.text, re.S)
    assert row is not None, page.text
    cells = [re.sub(r"<[^>]+>", "", c).strip()
             for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(2), re.S)]
    [app] = [a for a in stack.api.apps() if a["app_id"] == APP]
    [connection] = app["connections"]
    language, version = connection["sdk"].split(":")
    assert row.group(1) == connection["connection_id"] == listed["connection_id"]
    since = datetime.fromisoformat(connection["connected_at"].replace("Z", "+00:00"))
    shown = since.strftime("%Y-%m-%d %H:%M:%S.") + f"{since.microsecond // 1000:03d}"
    assert cells == [connection["instance_id"], language, version, shown, "ready", "0",
                     "no limit"], cells
    assert (language, connection["instance_id"]) == ("py", "w1")


def test_the_connections_of_an_environment_are_listed(connect_stack: ConnectStack) -> None:
    """As the Inngest Dev Server lists them (the SDK's own tests ask for them by its dev
    environment's id); a worker that stops is no longer listed."""
    url = f"{connect_stack.server.url}/v0/connect/envs"
    worker = connect_stack.start_worker("w1")
    connect_stack.connected()
    [listed] = httpx.get(f"{url}/{DEV_ENV_ID}/conns", timeout=10).json()["data"]
    assert (listed["instance_id"], listed["apps"], listed["status"]) == ("w1", [APP], "ready")
    assert httpx.get(f"{url}/dev/conns", timeout=10).json()["data"] == [listed]
    check_apps_page(connect_stack, listed)
    unknown = httpx.get(f"{url}/01ARZ3NDEKTSV4RRFFQ69G5FAV/conns", timeout=10)
    assert unknown.status_code == 404 and "environment" in unknown.json()["error"]
    worker.stop()  # SIGTERM: the SDK closes its connection

    def gone() -> bool | None:
        return True if httpx.get(f"{url}/{DEV_ENV_ID}/conns", timeout=10).json()[
            "data"] == [] else None

    wait_for(gone, timeout=30, what="the stopped worker to leave the list", logs=connect_stack.logs)
