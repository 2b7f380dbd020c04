"""The dashboard's pages with a big database: server time of each list page's first page (with
and without filters), of the detail pages, and of a run of 1,000 steps (its timeline).

A SQLite database (PostgreSQL with ``--postgres URL``) gets ``--events`` events and ``--runs``
runs (default 1,000,000 each, written in batches straight through the storage, without
routing), one run with ``--steps`` steps, then each page is requested ``--repeat`` times in
process (``httpx.ASGITransport``: the server's time, no network) and its p50/p95 reported.
Goal: p95 <= 50 ms for list and detail pages, <= 200 ms for the 1,000-step timeline.

``python -m bench.dashboard [--events 1000000] [--runs 1000000] [--steps 1000] [--repeat 30]
[--postgres URL]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

from tidings.core import Core
from tidings.functions.model import dumps
from tidings.functions.registration import FunctionDef, register
from tidings.ids import new_ids, now_ms
from tidings.server import create_app
from tidings.settings import Settings
from tidings.storage.base import EventRow
from tidings.storage.tx import Tx

BATCH = 20_000
GOALS_MS = {"timeline": 200.0}
DEFAULT_GOAL_MS = 50.0


async def fill(core: Core, events: int, runs: int, steps: int) -> dict[str, str]:
    env = await core.gate.env_for("dev", "api")
    now = now_ms()

    def functions(tx: Tx) -> str:
        [fn] = register(tx, env_id=env.id, app_id="bench", queue="bench", now=now, defs=[
            FunctionDef(slug="bench-f", name="f", url=None,
                        config={"triggers": [{"event": "bench/e1"}], "retries": 0})])
        return fn.id

    function_id = await core.storage.write(functions)
    names = [f"bench/e{i % 10}" for i in range(10)]
    event_ids: list[str] = []
    start = now - events  # one event per ms, in the past
    for first in range(0, events, BATCH):
        count = min(BATCH, events - first)
        ids = new_ids(count, start + first)
        rows = [EventRow(id=i, env_id=env.id, name=names[(first + n) % 10],
                         data=msgspec.json.encode({"n": first + n, "plan": "pro" if n % 7
                                                   else "free"}),
                         user=None, user_subject=None, key=None, ts=start + first + n, v=None,
                         source="bench", context=None, account_id=None,
                         received_at=start + first + n, deliver_at=None,
                         delivered_at=start + first + n)
                for n, i in enumerate(ids)]
        await core.storage.append_events(rows, now)
        event_ids.extend(ids[:1])
    run_ids: list[str] = []
    for first in range(0, runs, BATCH):
        count = min(BATCH, runs - first)
        ids = new_ids(count, start + first)
        params = [(i, env.id, function_id, "bench", event_ids[0], None, i, None,
                   start + first + n, start + first + n, None, None, None, None)
                  for n, i in enumerate(ids)]
        await core.storage.write(lambda tx, p=params: tx.many("insert_run", p))
        run_ids.extend(ids[-1:])
    target = run_ids[-1]
    step_rows = [(target, f"s{n:04d}", f"step {n}", n, "completed", dumps({"data": n}), 0,
                  now + n, now + n + 1, "run") for n in range(steps)]
    await core.storage.write(lambda tx: tx.many("insert_step", step_rows))
    return {"event": event_ids[0], "run": target}


SPREAD = ("UPDATE runs SET status = CASE WHEN substr(id, 26, 1) IN ('0', '1', '2', '3') "
          "THEN 'Failed' WHEN substr(id, 26, 1) IN ('4', '5', '6') THEN 'Cancelled' "
          "WHEN substr(id, 26, 1) = '7' THEN 'Queued' ELSE 'Completed' END")


def spread_statuses(url: str, folder: Path) -> None:
    """Runs in every status (the bench's own database, written directly)."""
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(folder / "bench.db") as conn:
            conn.execute(SPREAD)
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SPREAD)


async def measure(app: Any, path: str, repeat: int) -> tuple[float, float, float]:
    """p50 and p95 of the wall time, and the median CPU time of this process (which a
    machine shared with other work does not inflate; the database's reads are in it, SQLite
    being in process), in ms."""
    times, cpu = [], []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://bench") as http:
        for _ in range(repeat + 2):
            began, began_cpu = time.perf_counter(), time.process_time()
            reply = await http.get(path)
            times.append((time.perf_counter() - began) * 1000)
            cpu.append((time.process_time() - began_cpu) * 1000)
            if reply.status_code != 200:
                raise SystemExit(f"{path}: {reply.status_code} {reply.text[:300]}")
    times = sorted(times[2:])  # two warm-up requests
    return (statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)],
            statistics.median(cpu[2:]))


async def run(args: argparse.Namespace) -> int:
    folder = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    url = args.postgres or f"sqlite:///{folder / 'bench.db'}"
    settings = Settings(mode="dev", database_url=url, data_dir=folder)
    core = await Core.start(settings)
    try:
        began = time.perf_counter()
        ids = await fill(core, args.events, args.runs, args.steps)
        spread_statuses(url, folder)
        print(f"filled {args.events:,} events, {args.runs:,} runs in "
              f"{time.perf_counter() - began:.0f} s ({url.split('://')[0]})", file=sys.stderr)
        app = create_app(settings, core)
        pages = {
            "events": "/",
            "events name": "/?name=bench/e3",
            "events prefix": "/?name=bench/*",
            "events if": "/?if=event.data.plan+%3D%3D+%27free%27",
            "event": f"/events/{ids['event']}",
            "runs": "/runs",
            "runs status": "/runs?function=bench-f&status=failed",
            "timeline": f"/runs/{ids['run']}",
            "functions": "/functions",
            "apps": "/apps",
        }
        failed = 0
        print(f"{'page':<16}{'p50 ms':>9}{'p95 ms':>9}{'cpu ms':>9}{'goal':>8}")
        for name, path in pages.items():
            p50, p95, cpu = await measure(app, path, args.repeat)
            goal = GOALS_MS.get(name, DEFAULT_GOAL_MS)
            failed |= p95 > goal
            print(f"{name:<16}{p50:>9.1f}{p95:>9.1f}{cpu:>9.1f}{goal:>8.0f}"
                  f"{'' if p95 <= goal else '  !'}")
        return 1 if failed else 0
    finally:
        await core.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--postgres", default=None)
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
