"""Scenario: the curl examples of Inngest's docs, run with the real ``curl`` binary against a live
``tidings dev``; every event sent is read back through ``/v1/events``."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.sdk_apps import listed_ids, stored
from tests.conftest import LiveServer
from tidings.ids import now_ms

EVENT_KEY = "test-event-key"


@pytest.fixture(scope="module")
def curl_bin() -> str:
    found = shutil.which("curl")
    if found is None:
        pytest.fail("the curl binary is required by the acceptance tests and is not on PATH")
    return found


def curl(curl_bin: str, *args: str) -> tuple[int, dict[str, Any]]:
    """Run curl; return the HTTP status and the JSON body it printed."""
    done = subprocess.run(
        [curl_bin, "--silent", "--show-error", "--max-time", "30",
         "--write-out", "\n%{http_code}", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, f"curl failed ({done.returncode}): {done.stderr}"
    body, _, status = done.stdout.rpartition("\n")
    return int(status), json.loads(body)


def test_docs_curl_example_stores_the_event(live_server: LiveServer, curl_bin: str) -> None:
    before = now_ms()
    status, answer = curl(
        curl_bin, "-X", "POST", f"{live_server.url}/e/{EVENT_KEY}",
        "-H", "Content-Type: application/json",
        "--data", '{"name": "test/hello.world", "data": {"email": "test@example.com"}}',
    )
    after = now_ms()

    assert status == 200
    assert answer["status"] == 200
    [event_id] = answer["ids"]
    record = stored(live_server, event_id)
    assert record["id"] == event_id
    assert record["name"] == "test/hello.world"
    assert record["data"] == {"email": "test@example.com"}
    assert record["user"] == {}
    assert record["event_id"] == event_id
    assert record["idempotency_key"] is None
    assert before <= record["ts"] <= after
    assert listed_ids(live_server, "test/hello.world") == [event_id]


def test_curl_array_body_stores_every_event(live_server: LiveServer, curl_bin: str) -> None:
    events = [
        {"name": "test/signup", "data": {"email": "a@example.com"},
         "user": {"external_id": "user-a"}},
        {"name": "test/signup", "data": {"email": "b@example.com"}, "id": "signup-b",
         "ts": 1700000000000, "v": "2024-01-01.1"},
    ]
    before = now_ms()
    status, answer = curl(
        curl_bin, "-X", "POST", f"{live_server.url}/e/{EVENT_KEY}",
        "-H", "Content-Type: application/json", "--data", json.dumps(events),
    )
    after = now_ms()

    assert status == 200
    assert answer["status"] == 200
    first_id, second_id = answer["ids"]
    assert first_id != second_id

    first = stored(live_server, first_id)
    assert first["name"] == "test/signup"
    assert first["data"] == {"email": "a@example.com"}
    assert first["user"] == {"external_id": "user-a"}
    assert first["event_id"] == first_id
    assert first["idempotency_key"] is None
    assert before <= first["ts"] <= after

    second = stored(live_server, second_id)
    assert second["name"] == "test/signup"
    assert second["data"] == {"email": "b@example.com"}
    assert second["user"] == {}
    assert second["event_id"] == "signup-b"
    assert second["idempotency_key"] == "signup-b"
    assert second["ts"] == 1700000000000
    assert second["v"] == "2024-01-01.1"

    assert sorted(listed_ids(live_server, "test/signup")) == sorted([first_id, second_id])


def test_curl_gzip_body_is_decompressed(
    live_server: LiveServer, curl_bin: str, tmp_path: Path
) -> None:
    events = [
        {"name": "test/compressed", "data": {"n": n, "text": "repeat " * 50}} for n in range(3)
    ]
    body = tmp_path / "events.json.gz"
    body.write_bytes(gzip.compress(json.dumps(events).encode()))

    status, answer = curl(
        curl_bin, "-X", "POST", f"{live_server.url}/e/{EVENT_KEY}",
        "-H", "Content-Type: application/json", "-H", "Content-Encoding: gzip",
        "--data-binary", f"@{body}",
    )

    assert status == 200
    assert answer["status"] == 200
    ids = answer["ids"]
    assert len(ids) == len(set(ids)) == 3
    for n, event_id in enumerate(ids):
        record = stored(live_server, event_id)
        assert record["name"] == "test/compressed"
        assert record["data"] == {"n": n, "text": "repeat " * 50}
    assert sorted(listed_ids(live_server, "test/compressed")) == sorted(ids)
