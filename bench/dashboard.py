"""The dashboard's pages with a big database: server time of each list page's first page (with
and without filters), of the detail pages, and of a run of 1,000 steps (its timeline).

A SQLite database (``--db PATH``; PostgreSQL with ``--postgres URL``, in schema ``--schema``)
gets ``--events`` events and ``--runs`` runs (default 1,000,000 each; each run started by its
own event, over 10 functions of one app, 80 % Completed, 10 % Failed, 5 % Cancelled, 5 %
Queued), one run with ``--steps`` steps. The rows are written by bulk SQL (``executemany`` in
one SQLite transaction, ``COPY`` on PostgreSQL), not through the API, and kept: a database that
already holds them is measured as it is (seed once, measure many times). Then each page is
requested ``--repeat`` times in process (``httpx.ASGITransport``: the server's time, no
network) and its p50/p95 and the process's CPU time reported. Goal: p95 <= 50 ms for list and
detail pages, <= 200 ms for the 1,000-step timeline.

``python -m bench.dashboard [--events 1000000] [--runs 1000000] [--steps 1000] [--repeat 30]
[--db /tmp/i13live-dash.db | --postgres URL [--schema bench_dashboard]]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tidings.core import Core
from tidings.functions.model import dumps
from tidings.functions.registration import FunctionDef, register
from tidings.ids import new_ids, now_ms
from tidings.keys import ensure_env
from tidings.server import create_app
from tidings.settings import Settings
from tidings.storage.tx import Tx

BATCH = 50_000
FUNCTIONS = 10
GOALS_MS = {"timeline": 200.0}
DEFAULT_GOAL_MS = 50.0
EVENT_COLUMNS = ("id", "env_id", "name", "data", "ts", "source", "received_at", "delivered_at")
RUN_COLUMNS = ("id", "env_id", "function_id", "queue", "event_id", "dedup_key", "status",
               "due_at", "created_at", "started_at", "ended_at", "progress_at", "error")
FAILED = dumps({"error": {"name": "Error", "message": "bench failure"}})


def _status(n: int) -> str:
    return ("Failed", "Failed", "Cancelled", "Queued", *(["Completed"] * 16))[n % 20]


def _event_rows(env_id: str, start: int, count: int) -> Iterator[tuple[Any, ...]]:
    for first in range(0, count, BATCH):
        size = min(BATCH, count - first)
        for n, event_id in enumerate(new_ids(size, start + first)):
            i = first + n
            at = start + i
            plan = "free" if i % 7 == 0 else "pro"
            data = f'{{"n":{i},"plan":"{plan}"}}'
            yield (event_id, env_id, f"bench/e{i % 10}", data, at, "bench", at, at)


def _run_rows(env_id: str, functions: list[str], event_ids: list[str], start: int
              ) -> Iterator[tuple[Any, ...]]:
    count = len(event_ids)
    for first in range(0, count, BATCH):
        size = min(BATCH, count - first)
        for n, run_id in enumerate(new_ids(size, start + first)):
            i = first + n
            at, status = start + i, _status(i)
            queued = status == "Queued"
            yield (run_id, env_id, functions[i % FUNCTIONS], "bench", event_ids[i], run_id,
                   status, at + 10**12 if queued else None, at, None if queued else at,
                   None if queued else at + 5, at, FAILED if status == "Failed" else None)


async def prepare(settings: Settings, events: int, runs: int, steps: int) -> dict[str, str]:
    """The environment and functions (through Tidings), then the rows (bulk SQL) unless the
    database holds them already; the ids of an event, a run and the run with ``steps``."""
    core = await Core.start(settings)
    try:
        env = await core.storage.write(lambda tx: ensure_env(tx, "dev"))
        now = now_ms()

        def functions(tx: Tx) -> list[str]:
            return [fn.id for fn in register(tx, env_id=env.id, app_id="bench", queue="bench",
                                             now=now, defs=[
                FunctionDef(slug=f"bench-f{k}", name=f"f{k}", url=None,
                            config={"triggers": [{"event": f"bench/e{k}"}], "retries": 0})
                for k in range(FUNCTIONS)])]

        function_ids = await core.storage.write(functions)
    finally:
        await core.close()
    url = settings.database_url
    begin = time.perf_counter()
    if url.startswith("sqlite"):
        ids = _sqlite_fill(url.removeprefix("sqlite:///"), env.id, function_ids, events, runs,
                           steps)
    else:
        ids = _postgres_fill(url, env.id, function_ids, events, runs, steps)
    print(f"database ready in {time.perf_counter() - begin:.0f} s", file=sys.stderr)
    return ids


def _step_rows(run_id: str, steps: int, at: int) -> list[tuple[Any, ...]]:
    return [(run_id, f"s{n:04d}", f"step {n}", n, "completed", dumps({"data": n}), 1,
             at + n, at + n + 1, "run") for n in range(steps)]


STEP_COLUMNS = ("run_id", "step", "name", "position", "status", "output", "attempts",
                "started_at", "ended_at", "kind")


def _sqlite_fill(path: str, env_id: str, functions: list[str], events: int, runs: int,
                 steps: int) -> dict[str, str]:
    import sqlite3

    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("PRAGMA synchronous = OFF")
        have = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        if have < events:
            start = now_ms() - 10 * events
            conn.execute("BEGIN")
            conn.executemany(
                f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES "
                f"({', '.join('?' * len(EVENT_COLUMNS))})", _event_rows(env_id, start, events))
            event_ids = [r[0] for r in conn.execute(
                "SELECT id FROM events WHERE env_id = ? ORDER BY id LIMIT ?", (env_id, runs))]
            conn.executemany(
                f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES "
                f"({', '.join('?' * len(RUN_COLUMNS))})",
                _run_rows(env_id, functions, event_ids, start))
            target = conn.execute("SELECT max(id) FROM runs WHERE status = 'Completed'"
                                  ).fetchone()[0]
            conn.executemany(
                f"INSERT INTO steps ({', '.join(STEP_COLUMNS)}) VALUES "
                f"({', '.join('?' * len(STEP_COLUMNS))})", _step_rows(target, steps, now_ms()))
            conn.execute("COMMIT")
            conn.execute("ANALYZE")
        return _ids(lambda sql: conn.execute(sql).fetchone()[0])


def _postgres_fill(url: str, env_id: str, functions: list[str], events: int, runs: int,
                   steps: int) -> dict[str, str]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        have = conn.execute("SELECT count(*) FROM events").fetchone()[0]  # type: ignore[index]
        if have < events:
            start = now_ms() - 10 * events
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(f"COPY events ({', '.join(EVENT_COLUMNS)}) FROM STDIN") as copy:
                    for row in _event_rows(env_id, start, events):
                        copy.write_row(row)
                event_ids = [r[0] for r in cur.execute(
                    "SELECT id FROM events WHERE env_id = %s ORDER BY id LIMIT %s",
                    (env_id, runs)).fetchall()]
                with cur.copy(f"COPY runs ({', '.join(RUN_COLUMNS)}) FROM STDIN") as copy:
                    for row in _run_rows(env_id, functions, event_ids, start):
                        copy.write_row(row)
                target = cur.execute("SELECT max(id) FROM runs WHERE status = 'Completed'"
                                     ).fetchone()[0]  # type: ignore[index]
                with cur.copy(f"COPY steps ({', '.join(STEP_COLUMNS)}) FROM STDIN") as copy:
                    for row in _step_rows(target, steps, now_ms()):
                        copy.write_row(row)
            # As autovacuum leaves a table that lives long (it may be off on a test server):
            # the visibility map set, so that index-only scans need not visit the rows.
            conn.execute("VACUUM (ANALYZE) events")
            conn.execute("VACUUM (ANALYZE) runs")
            conn.execute("ANALYZE")
        return _ids(lambda sql: conn.execute(sql).fetchone()[0])  # type: ignore[index]


def _ids(one: Any) -> dict[str, str]:
    return {"event": one("SELECT max(event_id) FROM runs"),
            "run": one("SELECT max(id) FROM runs WHERE status = 'Failed'"),
            "timeline": one("SELECT run_id FROM steps GROUP BY run_id "
                            "ORDER BY count(*) DESC LIMIT 1")}


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
    if args.postgres:
        import psycopg

        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {args.schema}")
        sep = "&" if "?" in args.postgres else "?"
        url = f"{args.postgres}{sep}options=-csearch_path%3D{args.schema}"
    else:
        url = f"sqlite:///{args.db}"
    folder = Path(args.db).parent / "bench-dashboard-data"
    folder.mkdir(parents=True, exist_ok=True)
    settings = Settings(mode="dev", database_url=url, data_dir=folder)
    ids = await prepare(settings, args.events, args.runs, args.steps)
    core = await Core.start(settings)
    try:
        app = create_app(settings, core)
        hour_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
        pages = {
            "events": "/",
            "events name": "/?name=bench/e3",
            "events prefix": "/?name=bench/*",
            "events if": "/?if=event.data.plan+%3D%3D+%27free%27",
            "events since": f"/?since={hour_ago}",
            "event": f"/events/{ids['event']}",
            "runs": "/runs",
            "runs failed": "/runs?status=failed",
            "runs queued": "/runs?status=queued",
            "runs function": "/runs?function=bench-f3",
            "runs fn failed": "/runs?function=bench-f3&status=failed",
            "runs app": "/runs?app=bench",
            "runs event": f"/runs?event_id={ids['event']}",
            "runs ended": f"/runs?time=ended&since={hour_ago}",
            "run": f"/runs/{ids['run']}",
            "timeline": f"/runs/{ids['timeline']}",
            "functions": "/functions",
            "apps": "/apps",
        }
        if args.only:
            pages = {name: path for name, path in pages.items() if name in args.only.split(",")}
        failed = 0
        print(f"{url.split('://')[0]}: {args.events:,} events, {args.runs:,} runs")
        print(f"{'page':<16}{'p50 ms':>9}{'p95 ms':>9}{'cpu ms':>9}{'goal':>8}")
        for name, path in pages.items():
            p50, p95, cpu = await measure(app, path, args.repeat)
            goal = GOALS_MS.get(name, DEFAULT_GOAL_MS)
            failed |= p95 > goal
            print(f"{name:<16}{p50:>9.1f}{p95:>9.1f}{cpu:>9.1f}{goal:>8.0f}"
                  f"{'' if p95 <= goal else '  !'}", flush=True)
        return 1 if failed else 0
    finally:
        await core.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--db", default="/tmp/i13live-dash/bench.db",
                        help="the SQLite file (kept: a filled one is measured as it is)")
    parser.add_argument("--postgres", default=None)
    parser.add_argument("--only", default="", help="comma-separated page names")
    parser.add_argument("--schema", default="bench_dashboard",
                        help="the PostgreSQL schema (kept, like the SQLite file)")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
