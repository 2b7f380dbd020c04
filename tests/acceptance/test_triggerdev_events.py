"""Scenario: the official Trigger.dev v2 client (``@trigger.dev/sdk`` 2.3.18, pinned in
tests/node/package.json) sends, reschedules, cancels and reads events on a live Tidings, under
``tidings dev`` on SQLite and ``tidings serve`` on PostgreSQL with a minted ``tr_prod_`` key.
Native functions (``triggerdev_native.py``) subscribe to the events: v2's payload is their data.

``tests/node/trigger_events.mjs`` makes one client call per run and prints what the client
returned, after its zod schemas parsed the answer.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import httpx
import pytest

from tests.acceptance.sdk_apps import clean_env, production_keys, tidings_cli
from tests.acceptance.test_inngest_node import NODE_DIR, node_bin  # noqa: F401 (a fixture)
from tests.conftest import ROOT, LiveServer, fresh_schema, start_server, stop_server

pytestmark = pytest.mark.node
T = TypeVar("T")
NATIVE = "tests.acceptance.triggerdev_native:client"
ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


@dataclass
class V2:
    server: LiveServer
    key: str  # the trigger key the client uses
    api: dict[str, str]  # headers for /v1 reads
    node: str

    def call(self, operation: str, *args: Any, key: str | None = None) -> dict[str, Any]:
        done = subprocess.run(
            [self.node, "trigger_events.mjs", self.server.url, key or self.key, operation,
             *(json.dumps(arg) for arg in args)],
            cwd=NODE_DIR, env=clean_env(), capture_output=True, text=True, timeout=60,
            check=False)
        try:
            answer: dict[str, Any] = json.loads(done.stdout)
        except json.JSONDecodeError:
            pytest.fail(f"trigger_events.mjs {operation}: {done.stdout}\n{done.stderr}")
        return answer

    def ok(self, operation: str, *args: Any) -> Any:
        answer = self.call(operation, *args)
        assert "result" in answer, answer
        return answer["result"]

    def read(self, path: str) -> Any:
        reply = httpx.get(f"{self.server.url}{path}", headers=self.api, timeout=10)
        assert reply.status_code == 200, reply.text
        return reply.json()["data"]

    def internal(self, v2_id: str) -> dict[str, Any]:
        """The event's record in Tidings' own API, found by its v2 id."""
        events = self.read("/v1/events?limit=1000")
        found = [e for e in events if e["event_id"] == v2_id]
        assert len(found) == 1, (v2_id, events)
        return found[0]

    def delivered(self, v2_id: str) -> dict[str, Any]:
        """The event's record in Tidings' API, once it was delivered."""
        return poll(f"the delivery of {v2_id}",
                    lambda: next((e for e in [self.internal(v2_id)] if e["delivered_at"]), None))


def poll(what: str, check: Callable[[], T | None], timeout: float = 30) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


@pytest.fixture(scope="module", params=["dev-sqlite",
                                        pytest.param("serve-postgres", marks=pytest.mark.postgres)])
def v2(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
       node_bin: str) -> Iterator[V2]:  # noqa: F811
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "dev-sqlite":
        server = start_server(tmp, "--db", str(tmp / "v2.db"), "--no-discovery", "-a", NATIVE,
                              env={"PYTHONPATH": str(ROOT)})
        try:
            yield V2(server, "tr_dev_anyKeyWorks42", {}, node_bin)
        finally:
            stop_server(server)
        return
    with fresh_schema() as url:
        keys = production_keys(tmp, db=url)
        key = tidings_cli(tmp, keys.env, "keys", "create", "--env", "production", "--kind",
                          "trigger", "--db", url)
        server = start_server(tmp, "--db", url, "--env", "production", "-a", NATIVE,
                              command="serve", env={**keys.env, "PYTHONPATH": str(ROOT)})
        try:
            yield V2(server, key, {"authorization": f"Bearer {keys.api_key}"}, node_bin)
        finally:
            stop_server(server)


def runs_of(v2: V2, event: dict[str, Any]) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = v2.read(f"/v1/events/{event['id']}/runs")
    return runs


def test_the_seed_snippet_returns_the_record_and_triggers_native_functions(v2: V2) -> None:
    record = v2.ok("seed")

    assert set(record) == {"id", "name", "payload", "context", "timestamp", "deliverAt",
                           "deliveredAt", "cancelledAt"}
    assert ULID.fullmatch(record["id"])
    assert record["name"] == "new.user"
    assert record["payload"] == {"userId": "u_1234567890"}
    assert record["context"] is None and record["deliverAt"] is None
    assert record["cancelledAt"] is None
    assert abs(ms(record["timestamp"]) - time.time() * 1000) < 60_000
    # Sent without a delay: delivered once stored (with the runs it started, or routed by
    # the sweeper a moment later).
    event = v2.delivered(record["id"])
    run = poll("the run", lambda: [r for r in runs_of(v2, event)
                                   if r["status"] == "Completed"])[0]
    assert run["output"] == {"data": {"userId": "u_1234567890"}}

    got = v2.ok("get", record["id"])
    assert got["id"] == record["id"] and got["name"] == "new.user"
    assert [(r["id"], r["status"]) for r in got["runs"]] == [(run["id"], "SUCCESS")]
    read = v2.ok("run", run["id"])
    assert read["status"] == "SUCCESS" and read["output"] == run["output"]
    assert v2.ok("statuses", run["id"])["run"]["status"] == "SUCCESS"


def test_deliver_after_delivers_later_and_then_sets_delivered_at(v2: V2) -> None:
    record = v2.ok("send", {"name": "v2.later", "id": "later-1", "payload": {"n": 1}},
                   {"deliverAfter": 2})

    assert record["id"] == "later-1" and record["deliveredAt"] is None
    assert ms(record["deliverAt"]) - ms(record["timestamp"]) == 2000
    event = v2.delivered("later-1")
    [run] = poll("the run", lambda: runs_of(v2, event))
    assert ms(run["created_at"]) >= ms(record["deliverAt"])
    assert v2.ok("get", "later-1")["runs"][0]["id"] == run["id"]

    # Delivered: sending the id again changes nothing and starts nothing.
    again = v2.ok("send", {"name": "v2.later", "id": "later-1", "payload": {"n": 2}})
    assert again["payload"] == {"n": 1} and again["deliveredAt"] == v2.ok(
        "send", {"name": "v2.later", "id": "later-1"})["deliveredAt"]
    assert [r["id"] for r in runs_of(v2, event)] == [run["id"]]


def test_cancel_event_before_delivery_starts_nothing(v2: V2) -> None:
    # 8 s: room for the cancel's own Node process to start on a loaded machine.
    record = v2.ok("send", {"name": "v2.later", "id": "cancel-1", "payload": {"n": 1}},
                   {"deliverAfter": 8})
    cancelled = v2.ok("cancel", "cancel-1")
    assert cancelled["cancelledAt"] is not None and cancelled["deliveredAt"] is None
    # An event sent after it, due after it, is delivered: the sweeper has passed the first.
    v2.ok("send", {"name": "v2.later", "id": "cancel-marker"}, {"deliverAfter": 8})
    v2.delivered("cancel-marker")

    event = v2.internal("cancel-1")
    assert event["delivered_at"] is None and event["cancelled_at"] is not None
    assert runs_of(v2, event) == [] and v2.ok("get", "cancel-1")["runs"] == []
    # Sending it again does not revive it: the record says it is cancelled.
    again = v2.ok("send", {"name": "v2.later", "id": "cancel-1", "payload": {"n": 9}})
    assert again["cancelledAt"] == cancelled["cancelledAt"] and again["payload"] == {"n": 1}
    assert record["deliverAt"] == again["deliverAt"]


def test_resending_an_undelivered_id_reschedules_it(v2: V2) -> None:
    first = v2.ok("send", {"name": "v2.later", "id": "moved-1", "payload": {"n": 1}},
                  {"deliverAfter": 3600})
    moved = v2.ok("send", {"name": "v2.later", "id": "moved-1", "payload": {"n": 2},
                           "context": {"why": "moved"}}, {"deliverAfter": 1})

    assert moved["payload"] == {"n": 2} and moved["context"] == {"why": "moved"}
    assert ms(moved["deliverAt"]) < ms(first["deliverAt"])
    event = v2.delivered("moved-1")
    [run] = poll("the run", lambda: [r for r in runs_of(v2, event)
                                     if r["status"] == "Completed"])
    assert run["output"] == {"data": {"n": 2}}


def test_send_events_and_cancel_runs(v2: V2) -> None:
    records = v2.ok("sendMany", [{"name": "v2.later", "id": "bulk-1"},
                                 {"name": "v2.unheard", "payload": {"x": 1}}],
                    {"deliverAt": "2099-01-01T00:00:00.000Z"})
    assert records[0]["id"] == "bulk-1" and ULID.fullmatch(records[1]["id"])
    assert all(r["deliverAt"] == "2099-01-01T00:00:00.000Z" for r in records)

    assert v2.ok("cancelRuns", "bulk-1") == {"cancelledRunIds": [], "failedToCancelRunIds": []}
    seed = v2.ok("seed")
    event = v2.internal(seed["id"])
    [run] = poll("the run", lambda: [r for r in runs_of(v2, event)
                                     if r["status"] == "Completed"])
    assert v2.ok("cancelRuns", seed["id"]) == {"cancelledRunIds": [],
                                               "failedToCancelRunIds": [run["id"]]}


def test_bad_keys_and_bad_events_are_refused_with_the_reason(v2: V2) -> None:
    wrong = "tr_dev_wrongOne" if v2.api else "tr_prod_notDevKey"
    assert "Invalid API Key" in v2.call("seed", key=wrong)["error"]
    assert v2.call("send", {"name": "x", "payload": [1]})["error"].startswith(
        "event.payload: must be a JSON object")
    error = v2.call("sendMany", [{"name": "ok"}, {"name": "inngest/x"}])["error"]
    assert error.startswith("events[1].name:") and "reserved" in error
    assert "options.deliverAt" in v2.call("send", {"name": "x"}, {"deliverAt": "soon"})["error"]
    assert "not found" in v2.call("get", "no-such-event")["error"]
    assert v2.read("/v1/events?name=x") == [] and v2.read("/v1/events?name=ok") == []
