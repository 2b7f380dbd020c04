"""Several worker processes on one PostgreSQL: they share the work, never run the same step of
the same run at once, and a worker stopped with SIGTERM hands its work back."""

from __future__ import annotations

import collections
import itertools
import os
import signal
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

client = tidings.Tidings(app_id="pool")
LOG = os.environ["STEPS_LOG"]


def work(run_id, step):
    start = time.time()
    time.sleep(0.02)
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{os.getpid()} {run_id} {step} {start} {time.time()}\\n".encode())
    finally:
        os.close(fd)
    return step


@client.function(id="steps", trigger=tidings.TriggerEvent(event="pool/go"))
def steps(ctx):
    return [ctx.step.run(s, work, ctx.run_id, s) for s in ("a", "b", "c")]
'''

EVENTS = 150


def _worker(tmp_path: Path, db: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(tmp_path / f"worker-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
    try:
        return subprocess.Popen(
            [TIDINGS, "worker", "poolapp:client", "--db", db, "--env", "dev",
             "--concurrency", "8"],
            cwd=tmp_path, env={**os.environ, "TIDINGS_DATA_DIR": str(tmp_path / "server"), **env},
            stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_workers_share_runs_without_overlap(pg_url: str, tmp_path: Path) -> None:
    (tmp_path / "poolapp.py").write_text(APP)
    log = tmp_path / "steps.log"
    env = {"STEPS_LOG": str(log), "TIDINGS_LEASE_SECONDS": "2",
           "PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = start_server(tmp_path, "--db", pg_url, env=env)
    workers = [_worker(tmp_path, pg_url, env) for _ in range(3)]
    try:
        deadline = time.monotonic() + 30
        registered = 0
        while time.monotonic() < deadline and not registered:
            with psycopg.connect(pg_url) as conn:
                found = conn.execute("SELECT count(*) FROM functions").fetchone()
                registered = found[0] if found else 0
            time.sleep(0.05)
        assert registered, "the workers did not register their functions"
        for start in range(0, EVENTS, 50):
            batch = [{"name": "pool/go", "data": {"n": n}} for n in range(start, start + 50)]
            assert httpx.post(f"{server.url}/e/key", json=batch).status_code == 200
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not log.exists():
            time.sleep(0.05)
        time.sleep(0.3)  # let the leaving worker hold some work when it is told to stop
        leaving = workers[0]
        leaving.send_signal(signal.SIGTERM)
        assert leaving.wait(timeout=60) == 0
        deadline = time.monotonic() + 120
        done = 0
        while time.monotonic() < deadline:
            with psycopg.connect(pg_url) as conn:
                row = conn.execute("SELECT count(*) FROM runs WHERE status = 'Completed'")
                done = row.fetchone()[0]  # type: ignore[index]
            if done == EVENTS:
                break
            time.sleep(0.2)
        assert done == EVENTS
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=30)
        stop_server(server)

    spans: dict[tuple[str, str], list[tuple[float, float, str]]] = collections.defaultdict(list)
    pids = collections.Counter()
    for line in log.read_text().splitlines():
        pid, run_id, step, start, end = line.split()
        spans[(run_id, step)].append((float(start), float(end), pid))
        pids[pid] += 1
    assert len(spans) == 3 * EVENTS
    assert len(pids) == 3, f"every worker should have taken work: {pids}"
    for key, runs in spans.items():
        runs.sort()
        for (_, end, _), (start, _, _) in itertools.pairwise(runs):
            assert start >= end, f"{key} ran twice at the same time"
