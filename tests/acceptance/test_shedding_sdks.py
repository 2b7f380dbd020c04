"""Scenario: a live ``tidings dev`` that sheds load answers the official SDKs' ``send`` with
``503`` and ``Retry-After``, and the SDKs retry it by themselves: the real inngest-py and npm
``inngest`` send an event while the server's body budget is held by another request, get
refused, and succeed on a retry once the budget is free — the event stored once.

The SDKs' retries (read in their sources, see docs/HTTP_API.md "Overload"): both make up to 5
attempts with exponential backoff from 100 ms plus jitter (inngest-py on a 5xx or a transport
error, inngest-js on any failure), ignore ``Retry-After``, and repeat the same
``x-inngest-event-id-seed``, so a retried request gets the ids of the first.

The budget is held by a raw loopback request that declares a 64,000-byte body and sends one
byte of it (probes show when it is counted); the test waits until the SDK has been refused once
(it watches the SDK's answers), then sends the rest, which frees the budget.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import inngest
import pytest

from tests.acceptance.test_inngest_node import NODE_DIR, node_bin  # noqa: F401 (a fixture)
from tests.conftest import LiveServer, start_server, stop_server

HELD = 64_000


@pytest.fixture
def shedding(tmp_path: Path) -> Iterator[LiveServer]:
    server = start_server(tmp_path, "--max-inflight-bytes", "64k", "--retry-after", "1")
    yield server
    stop_server(server)


class Holder:
    """A request that holds ``HELD`` bytes of the server's body budget until ``release``."""

    def __init__(self, server: LiveServer) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        self.sock.sendall(b"POST /e/key HTTP/1.1\r\nhost: tidings\r\ncontent-type: "
                          b"application/json\r\ncontent-length: %d\r\n\r\n[" % HELD)
        # Once a probe of 2,000 bytes is refused, the held bytes are counted.
        deadline = time.monotonic() + 30
        while httpx.post(f"{server.url}/e/key", content=b" " * 2000,
                         timeout=10).status_code != 503:
            assert time.monotonic() < deadline, "the holding request was never admitted"

    def release(self) -> None:
        """Send the rest of the body (not JSON: nothing is stored) and read the answer."""
        self.sock.sendall(b" " * (HELD - 1))
        assert self.sock.recv(65536).startswith(b"HTTP/1.1 400 ")

    def close(self) -> None:
        self.sock.close()


def stored(server: LiveServer, name: str) -> list[dict[str, Any]]:
    reply = httpx.get(f"{server.url}/v1/events", params={"name": name, "limit": 100},
                      timeout=10)
    assert reply.status_code == 200, reply.text
    events: list[dict[str, Any]] = reply.json()["data"]
    return events


def test_inngest_py_send_retries_a_503(shedding: LiveServer,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("INNGEST_")]:
        monkeypatch.delenv(name)
    client = inngest.Inngest(app_id="shed-py", is_production=False,
                             event_api_base_url=shedding.url)
    refused = threading.Event()

    def seen(response: httpx.Response) -> None:
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1"
            refused.set()

    # The SDK sends with this httpx client (an attribute of its own, hence the underscores).
    sync_http = client._http_client._http_client_sync
    sync_http.event_hooks = {"request": [], "response": [seen]}
    try:
        with closing(Holder(shedding)) as holder, ThreadPoolExecutor(1) as pool:
            sending = pool.submit(client.send_sync, inngest.Event(
                name="py/shed", data={"pad": "x" * 2000}))
            assert refused.wait(30), "the server never refused the SDK's request"
            holder.release()
            ids = sending.result(timeout=60)
    finally:
        sync_http.close()
    [event] = stored(shedding, "py/shed")
    assert [event["id"]] == ids


def send_while_held(node: str, env: dict[str, str], server: LiveServer,
                    holder: Holder) -> tuple[str, str]:
    """Run ``send.mjs shed``; release the holder once the SDK has been refused."""
    sender = subprocess.Popen([node, "send.mjs", server.url, "shed"], cwd=NODE_DIR,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        assert sender.stderr is not None
        for line in sender.stderr:  # one line per answer, as the SDK gets it
            if line.strip() == "answered 503":
                break
        holder.release()
        return sender.communicate(timeout=60)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait()


@pytest.mark.node
def test_inngest_js_send_retries_a_503(shedding: LiveServer, node_bin: str) -> None:  # noqa: F811
    env = {k: v for k, v in os.environ.items() if not k.startswith("INNGEST_")}
    with closing(Holder(shedding)) as holder:
        out, err = send_while_held(node_bin, env, shedding, holder)
    result = json.loads(out or "{}")
    assert "ids" in result, (out, err)
    statuses = [(r["status"], r["retryAfter"]) for r in result["requests"]]
    assert statuses[0] == (503, "1")
    assert statuses[-1] == (200, None)
    assert all(status == 503 for status, _ in statuses[:-1])
    seeds = {r["headers"]["x-inngest-event-id-seed"] for r in result["requests"]}
    assert len(seeds) == 1  # every attempt is the same request
    [event] = stored(shedding, "node/shed")
    assert [event["id"]] == result["ids"]["one"]
