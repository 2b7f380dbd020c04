"""Scenario: the official ``inngest`` npm package (pinned in tests/node/package.json) sends events
from Node to a live ``tidings dev``; the ids ``send()`` returns are the ids ``/v1/events`` shows.

``tests/node/send.mjs`` does the sending and also reports every HTTP request the SDK made, so
these tests can state what the real client puts on the wire.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from tests.acceptance.sdk_apps import NODE_DIR, listed, node_binary, stored
from tests.conftest import LiveServer
from tidings.ids import now_ms

pytestmark = pytest.mark.node

SEED_HEADER = "x-inngest-event-id-seed"


@pytest.fixture(scope="module")
def node_bin() -> str:
    return node_binary()


def run_send(node_bin: str, server: LiveServer, scenario: str) -> subprocess.CompletedProcess[str]:
    # INNGEST_* variables (INNGEST_ENV, INNGEST_EVENT_KEY, ...) would redirect the SDK.
    env = {k: v for k, v in os.environ.items() if not k.startswith("INNGEST_")}
    return subprocess.run(
        [node_bin, "send.mjs", server.url, scenario],
        cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=60, check=False,
    )


def output(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"send.mjs exited {done.returncode} without JSON output;\n"
                    f"stdout: {done.stdout}\nstderr: {done.stderr}")
    return result


def test_node_sdk_send_returns_the_stored_ids(live_server: LiveServer, node_bin: str) -> None:
    before = now_ms()
    done = run_send(node_bin, live_server, "send")
    after = now_ms()
    result = output(done)
    assert done.returncode == 0, f"{result.get('error')}\nstderr: {done.stderr}"

    [one_id] = result["ids"]["one"]
    one = stored(live_server, one_id)
    assert one["id"] == one_id
    assert one["name"] == "node/hello.world"
    assert one["data"] == {"email": "node@example.com"}
    assert one["user"] == {}
    assert one["event_id"] == one_id
    assert one["idempotency_key"] is None
    assert before <= one["ts"] <= after
    assert [r["id"] for r in listed(live_server, "node/hello.world")] == [one_id]

    first_id, second_id = result["ids"]["many"]
    assert len({one_id, first_id, second_id}) == 3
    first = stored(live_server, first_id)
    assert first["name"] == "node/order.created"
    assert first["data"] == {"order": 1, "items": ["a", "b"]}
    assert first["event_id"] == "node-order-1"
    assert first["idempotency_key"] == "node-order-1"
    assert first["ts"] == 1700000000000
    assert first["v"] == "2024-01-01.1"
    second = stored(live_server, second_id)
    assert second["name"] == "node/order.created"
    assert second["data"] == {"order": 2}
    assert second["event_id"] == second_id
    assert second["idempotency_key"] is None
    assert before <= second["ts"] <= after
    assert sorted(r["id"] for r in listed(live_server, "node/order.created")) == sorted(
        [first_id, second_id]
    )


def test_node_sdk_wire_format(live_server: LiveServer, node_bin: str) -> None:
    """What the SDK sends: one POST per send() to /e/<dummy dev key>, a seed header each, and
    events with ``ts`` filled in by the SDK (so the stored ts is the client's)."""
    done = run_send(node_bin, live_server, "send")
    result = output(done)
    assert done.returncode == 0, f"{result.get('error')}\nstderr: {done.stderr}"

    one, many = result["requests"]
    for request in (one, many):
        assert request["method"] == "POST"
        assert request["url"] == f"{live_server.url}/e/NO_EVENT_KEY_SET"
        millis, _, entropy = request["headers"][SEED_HEADER].partition(",")
        assert millis.isdigit()
        assert entropy
    assert one["headers"][SEED_HEADER] != many["headers"][SEED_HEADER]
    [sent] = one["body"]
    assert set(sent) == {"name", "data", "ts"}
    [one_id] = result["ids"]["one"]
    assert stored(live_server, one_id)["ts"] == sent["ts"]
    assert [set(event) for event in many["body"]] == [
        {"name", "data", "id", "ts", "v"}, {"name", "data", "ts"},
    ]


def test_node_sdk_event_meta_is_stored_and_listed(live_server: LiveServer, node_bin: str) -> None:
    """SDK v4 events may carry ``meta`` (``meta.sessions``), which the SDK passes through to the
    wire: Tidings accepts it on the first request and keeps it, as ``/v1/events`` shows."""
    done = run_send(node_bin, live_server, "meta")
    result = output(done)
    assert done.returncode == 0, f"{result.get('error')}\nstderr: {done.stderr}"

    [request] = result["requests"]
    [sent] = request["body"]
    assert sent["meta"] == {"sessions": {"user": "user-1"}}
    [event_id] = result["ids"]["one"]
    [listed_event] = listed(live_server, "node/session.event")
    assert listed_event["id"] == event_id
    assert listed_event["meta"] == sent["meta"]
    assert listed_event["data"] == {"step": 1}
    assert stored(live_server, event_id)["meta"] == sent["meta"]
