"""Crash safety: a server running a 3-step function over 2,000 events is killed with SIGKILL five
times at random moments and restarted. Nothing acknowledged is lost, every run completes, and a
step whose result was recorded never runs again. (``python -m bench.crash`` runs the same
function, ``bench/crash_app.py``, with a worker beside ``tidings serve`` too, and reports the
counts.)"""

from __future__ import annotations

import base64
import collections
import json
import os
import random
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import ROOT, LiveServer, start_server, stop_server

EVENTS = 2000
BATCH = 50
KILLS = 5



def _seed() -> str:
    return f"{int(time.time() * 1000)},{base64.b64encode(os.urandom(10)).decode()}"


class Producer:
    """Sends the events in batches; a batch is retried with the same seed until acknowledged."""

    def __init__(self) -> None:
        self.acked: list[str] = []
        self.next = 0
        self.pending: tuple[list[dict[str, Any]], str] | None = None

    def step(self, url: str) -> bool:
        if self.pending is None:
            if self.next >= EVENTS:
                return False
            batch = [{"name": "crash/go", "data": {"n": n}}
                     for n in range(self.next, min(self.next + BATCH, EVENTS))]
            self.pending = (batch, _seed())
        batch, seed = self.pending
        try:
            reply = httpx.post(f"{url}/e/key", json=batch, timeout=5,
                               headers={"x-inngest-event-id-seed": seed})
        except httpx.TransportError:
            return True
        if reply.status_code == 200:
            self.acked.extend(reply.json()["ids"])
            self.next += len(batch)
            self.pending = None
        return True


def _query(db: str, sql: str) -> list[tuple[Any, ...]]:
    if db.startswith("postgresql"):
        with psycopg.connect(db) as conn:
            return conn.execute(sql).fetchall()
    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_loses_and_repeats_nothing(db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "effects.log"
    env = {"TIDINGS_BENCH_EFFECTS": str(log), "TIDINGS_LEASE_SECONDS": "2",
           "PYTHONPATH": str(ROOT)}
    args = ("--db", db_url, "-a", "bench.crash_app:client", "--retry-interval", "0.2")
    rng = random.Random(7)
    producer = Producer()
    server: LiveServer = start_server(tmp_path, *args, env=env)
    port = server.port
    try:
        for _ in range(KILLS):
            deadline = time.monotonic() + rng.uniform(0.3, 1.5)
            while time.monotonic() < deadline and producer.step(server.url):
                pass
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait()
            server.log.close()
            server = start_server(tmp_path, *args, env=env, port=port)
        while producer.step(server.url):
            pass
        assert len(producer.acked) == EVENTS

        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            done = _query(db_url, "SELECT count(*) FROM runs WHERE status = 'Completed'")[0][0]
            if done >= EVENTS:
                break
            time.sleep(0.2)
    finally:
        stop_server(server)

    runs = _query(db_url, "SELECT id, event_id, status FROM runs")
    by_event = collections.Counter(event_id for _, event_id, _ in runs)
    assert set(by_event) == set(producer.acked), "an acknowledged event has no run"
    assert max(by_event.values()) == 1, "an event started two runs"
    assert {status for _, _, status in runs} == {"Completed"}

    recorded = {(run_id, name): output for run_id, name, output in
                _query(db_url, "SELECT run_id, name, output FROM steps")}
    assert len(recorded) == 3 * EVENTS
    effects: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for line in log.read_text().splitlines():
        run_id, step, token = line.split()
        effects[(run_id, step)].append(token)
    repeated = 0
    for key, output in recorded.items():
        token = (output if isinstance(output, dict) else json.loads(output))["data"]
        tokens = effects[key]
        assert token in tokens, f"{key}: the recorded result's side effect never happened"
        assert tokens[-1] == token, f"{key}: ran again after its result was recorded"
        repeated += len(tokens) - 1
    # Only steps in flight at a kill may run twice.
    assert repeated <= KILLS * 100
