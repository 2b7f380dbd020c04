"""A keyed concurrency limit holds across three worker processes on one PostgreSQL: the most
steps of one key running at the same moment, measured from the steps' own start and end times
outside the processes, never passes the limit, and every run finishes."""

from __future__ import annotations

import collections
from pathlib import Path

import httpx
import pytest

from tests.worker_pool import pool, wait_completed

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
    log = tmp_path / "steps.log"
    total = len(KEYS) * PER_KEY
    with pool(tmp_path, pg_url, "limitedapp", APP, {"STEPS_LOG": str(log)}, workers=3,
              concurrency=8) as started:
        events = [{"name": "limited/go", "data": {"key": key, "n": n}}
                  for n in range(PER_KEY) for key in KEYS]
        assert httpx.post(f"{started.server.url}/e/key", json=events).status_code == 200
        wait_completed(pg_url, total, 180)

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
