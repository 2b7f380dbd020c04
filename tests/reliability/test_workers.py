"""Several worker processes on one PostgreSQL: they share the work, never run the same step of
the same run at once, and a worker stopped with SIGTERM hands its work back."""

from __future__ import annotations

import collections
import itertools
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.worker_pool import pool, wait_completed

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


def _pids(log: Path) -> set[str]:
    """The workers that have run a step so far."""
    if not log.exists():
        return set()
    return {line.split()[0] for line in log.read_text().splitlines() if line}


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_workers_share_runs_without_overlap(pg_url: str, tmp_path: Path) -> None:
    log = tmp_path / "steps.log"
    # Leases are renewed every third of their term: at 2 s, a worker starved for over a second
    # on a loaded machine lost runs it was still driving, and the overlap assertion below
    # failed although nothing but the lease's term was wrong (a lease that lapses is what lets
    # another worker run a step again: docs/EXECUTION_MODEL.md, section 3).
    env = {"STEPS_LOG": str(log), "TIDINGS_LEASE_SECONDS": "10"}
    with pool(tmp_path, pg_url, "poolapp", APP, env, workers=3, concurrency=8) as started:
        for start in range(0, EVENTS, 50):
            batch = [{"name": "pool/go", "data": {"n": n}} for n in range(start, start + 50)]
            assert httpx.post(f"{started.server.url}/e/key", json=batch).status_code == 200
        # Stop one worker once every worker has run a step (each holds work then, the
        # leaving one too), or at the deadline (the assertions below then say who took none).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_pids(log)) < len(started.workers):
            time.sleep(0.05)
        leaving = started.workers[0]
        leaving.send_signal(signal.SIGTERM)
        assert leaving.wait(timeout=60) == 0
        wait_completed(pg_url, EVENTS, 120)

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
