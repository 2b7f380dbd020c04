"""A keyed concurrency limit holds across three worker processes on one PostgreSQL: the most
steps of one key running at the same moment, measured from the steps' own start and end times
outside the processes, never passes the limit, and every run finishes."""

from __future__ import annotations

import collections
import os
import subprocess
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import TIDINGS, start_server, stop_server

APP = '''
import os, time
import tidings

client = tidings.Tidings(app_id="limited")
LOG = os.environ["STEPS_LOG"]


def work(key, step):
    start = time.time()
    time.sleep(0.03)
    end = time.time()
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{os.getpid()} {key} {step} {start} {end}\\n".encode())
    finally:
        os.close(fd)
    return step


@client.function(id="limited", trigger=tidings.TriggerEvent(event="limited/go"),
                 concurrency=tidings.Concurrency(limit=2, key="event.data.key"))
def limited(ctx):
    key = ctx.event.data["key"]
    ctx.step.run("a", work, key, "a")
    ctx.step.sleep("breathe", "1s")
    return ctx.step.run("b", work, key, "b")
'''

KEYS = ("k1", "k2", "k3")
PER_KEY = 20
LIMIT = 2


def _worker(tmp_path: Path, db: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(tmp_path / f"worker-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
    try:
        return subprocess.Popen(
            [TIDINGS, "worker", "limitedapp:client", "--db", db, "--env", "dev",
             "--concurrency", "8"],
            cwd=tmp_path, env={**os.environ, "TIDINGS_DATA_DIR": str(tmp_path / "server"), **env},
            stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of spans open at the same instant (an end before a start at a tie)."""
    marks = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans],
                   key=lambda mark: (mark[0], mark[1]))
    most = now = 0
    for _, change in marks:
        now += change
        most = max(most, now)
    return most


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_keyed_limit_holds_across_three_workers(pg_url: str, tmp_path: Path) -> None:
    (tmp_path / "limitedapp.py").write_text(APP)
    log = tmp_path / "steps.log"
    env = {"STEPS_LOG": str(log),
           "PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = start_server(tmp_path, "--db", pg_url, env=env)
    workers = [_worker(tmp_path, pg_url, env) for _ in range(3)]
    total = len(KEYS) * PER_KEY
    try:
        deadline = time.monotonic() + 30
        registered = 0
        while time.monotonic() < deadline and not registered:
            with psycopg.connect(pg_url) as conn:
                found = conn.execute("SELECT count(*) FROM functions").fetchone()
                registered = found[0] if found else 0
            time.sleep(0.05)
        assert registered, "the workers did not register their functions"
        events = [{"name": "limited/go", "data": {"key": key, "n": n}}
                  for n in range(PER_KEY) for key in KEYS]
        assert httpx.post(f"{server.url}/e/key", json=events).status_code == 200
        deadline = time.monotonic() + 180
        done = 0
        while time.monotonic() < deadline:
            with psycopg.connect(pg_url) as conn:
                row = conn.execute("SELECT count(*) FROM runs WHERE status = 'Completed'")
                done = row.fetchone()[0]  # type: ignore[index]
            if done == total:
                break
            time.sleep(0.2)
        assert done == total
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=30)
        stop_server(server)

    spans: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    pids: collections.Counter[str] = collections.Counter()
    for line in log.read_text().splitlines():
        pid, key, _, start, end = line.split()
        spans[key].append((float(start), float(end)))
        pids[pid] += 1
    assert sum(len(s) for s in spans.values()) >= 2 * total
    assert len(pids) >= 2, f"the work should be shared between workers: {pids}"
    most = {key: most_at_once(found) for key, found in spans.items()}
    assert all(value <= LIMIT for value in most.values()), most
    assert any(value == LIMIT for value in most.values()), most  # the limit was reached
