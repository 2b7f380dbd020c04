"""P3: end-to-end runs per second, event -> one-step function completed, N of them at once.

Tidings: ``tidings dev -a bench.apps:client`` (server and functions in one process, pinned to
core 0) on SQLite and on PostgreSQL; the N events go over HTTP in 500-event ``POST /e/{key}``
requests from one keep-alive connection (core 1), and the poller reads the runs table. Measured
from just before the first request is sent to the ``ended_at`` of the last run to complete.

Celery 5 + Redis: a no-op task (it increments a Redis counter), 2 prefork worker processes on
both cores, N ``delay()`` calls from this process (core 1). Measured from the first ``delay()``
to the moment the counter reaches N (polled every 20 ms).

DBOS: N ``queue.enqueue`` of a one-step workflow (4 enqueuing threads, queue polling every
0.1 s, no concurrency limit — the fastest settings found here) in one process on both cores,
on SQLite and on PostgreSQL. Measured from the first enqueue to the last ``get_result()``.

Every target gets a warm-up first (500 runs / 200 tasks / 100 workflows, not measured), and a
fresh database, server or worker pool every round; targets alternate round by round.
Goals: Tidings (SQLite) >= 10x Celery and >= 30x DBOS (SQLite).

``python -m bench.p3_throughput [--n 10000] [--rounds 3] [--only tidings-sqlite,celery]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from bench.engine import (
    APP,
    ROOT,
    Report,
    bench_env,
    check_log,
    encode,
    load,
    median_of,
    pin_self,
    post_all,
    profile_option,
    profile_path,
    python,
    stop_process,
    tidings_dev,
    unpinned,
    wait_until,
)
from bench.harness import (
    BIN,
    PG_URL,
    THREAD_NAMES,
    BenchError,
    cpu_by_thread,
    postgres_available,
    print_table,
)

BATCH = 500
GOAL_VS_CELERY = 10.0
GOAL_VS_DBOS = 30.0
BUDGET = {"celery": 860.0, "dbos": 165.0}  # DESIGN.md, "Performance budget"
TARGETS = ["tidings-sqlite", "tidings-postgres", "celery", "dbos-sqlite", "dbos-postgres"]


# -- Tidings -----------------------------------------------------------------------------------


def _bodies(n: int, round_tag: str) -> list[bytes]:
    return [encode([{"name": "bench/p3.noop", "data": {"round": round_tag, "i": i + j}}
                    for j in range(min(BATCH, n - i))]) for i in range(0, n, BATCH)]


def tidings_round(kind: str, n: int, connections: int, profile: Path | None = None,
                  options: tuple[str, ...] = (), variant: str | None = None,
                  beside: Callable[[int], AbstractContextManager[Any]] | None = None,
                  src: str | None = None) -> dict[str, Any]:
    """One round; ``beside(port)`` is open while the server works (``bench.dashboard_live``:
    dashboards streaming); ``src``: the server's code from that folder (another checkout's)."""
    extra_env = None if src is None else {
        "PYTHONPATH": os.pathsep.join([src, str(ROOT), str(THREAD_NAMES)])}
    with tidings_dev(kind, profile=profile, args=("-a", APP, *options),
                     variant=variant, extra_env=extra_env) as engine, \
            (beside(engine.port) if beside else contextlib.nullcontext()):
        fn = engine.function_id("p3-noop")

        def completed() -> int:
            return int(engine.scalar(
                "SELECT count(*) FROM runs WHERE function_id = ? AND status = 'Completed'",
                (fn,)))

        warmup = BATCH
        post_all(engine.port, _bodies(warmup, "warmup"))
        wait_until("the warm-up runs", lambda: completed() >= warmup, timeout=60)
        cpu_before, threads_before = engine.cpu_seconds(), engine.threads_cpu()
        started = time.time()
        post_all(engine.port, _bodies(n, "measured"), connections)
        acked = time.time()
        wait_until(f"{n} runs to complete", lambda: completed() >= warmup + n,
                   timeout=max(120, n / 100))
        cpu, threads_after = engine.cpu_seconds() - cpu_before, engine.threads_cpu()
        ended_ms = engine.completed_runs(fn, warmup + n, f"tidings {kind}")
    elapsed = ended_ms / 1000 - started
    return {"n": n, "seconds": round(elapsed, 4), "per_s": round(n / elapsed, 1),
            "ingest_seconds": round(acked - started, 4),
            "server_cpu_us_per_run": round(cpu / n * 1e6, 1),
            "server_cpu_us_per_run_by_thread": cpu_by_thread(threads_before, threads_after, n)}


# -- Celery ------------------------------------------------------------------------------------


@contextlib.contextmanager
def celery_workers(concurrency: int) -> Iterator[None]:
    with tempfile.TemporaryDirectory(prefix="tidings-bench-celery-") as tmp:
        log = Path(tmp) / "celery.log"
        argv = [str(BIN / "celery"), "-A", "bench.peers.celery_app", "worker", "--pool",
                "prefork", "-c", str(concurrency), "--without-heartbeat", "--without-gossip",
                "--without-mingle", "-l", "warning"]
        with log.open("wb") as out:
            process = subprocess.Popen(unpinned(argv), env=bench_env(), stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            yield
        finally:
            stop_process(process, signal.SIGTERM)
        check_log(log, "celery worker")


def celery_round(n: int, concurrency: int) -> dict[str, Any]:
    import redis

    from bench.peers.celery_app import COUNTER, QUEUE, REDIS_URL, noop

    r = redis.Redis.from_url(REDIS_URL)
    r.delete(QUEUE, COUNTER)
    try:
        with celery_workers(concurrency):
            def done() -> int:
                return int(r.get(COUNTER) or 0)

            warmup = 200
            for _ in range(warmup):
                noop.delay()
            wait_until("celery workers to start", lambda: done() >= warmup, timeout=60)
            started = time.time()
            for _ in range(n):
                noop.delay()
            enqueued = time.time()
            ended = wait_until(f"{n} celery tasks", lambda: done() >= warmup + n,
                               timeout=max(120, n / 50))
            counted = done() - warmup
    finally:
        r.delete(QUEUE, COUNTER)
    if counted != n:
        raise BenchError(f"celery: {counted} tasks ran, expected {n}")
    elapsed = ended - started
    return {"n": n, "seconds": round(elapsed, 4), "per_s": round(n / elapsed, 1),
            "enqueue_seconds": round(enqueued - started, 4)}


# -- DBOS --------------------------------------------------------------------------------------


@contextlib.contextmanager
def dbos_database(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="tidings-bench-dbos-") as tmp:
            yield f"sqlite:///{tmp}/dbos.sqlite"
        return
    import psycopg

    name = "dbos_bench_" + secrets.token_hex(4)
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def dbos_run(args: list[str], timeout: float) -> dict[str, Any]:
    import json

    argv = unpinned([python(), "-m", "bench.peers.dbos_runner", *args])
    done = subprocess.run(argv, env=bench_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
            return result
    raise BenchError(f"dbos runner failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


def dbos_round(kind: str, n: int) -> dict[str, Any]:
    with dbos_database(kind) as url:
        raw = dbos_run(["queue", "--db", url, "-n", str(n), "--threads", "4",
                        "--polling", "0.1"], timeout=max(300, n / 20))
    return {"n": n, "seconds": round(raw["seconds"], 4), "per_s": round(raw["per_s"], 1),
            "enqueue_seconds": round(raw["enqueue_seconds"], 4)}


# -- the plan ----------------------------------------------------------------------------------


def run_target(target: str, index: int, args: argparse.Namespace) -> dict[str, Any]:
    if target.startswith("tidings-"):
        return tidings_round(target.removeprefix("tidings-"), args.n, args.connections,
                             profile_path(args.profile, "p3", target, index))
    if target == "celery":
        return celery_round(args.n, args.celery_concurrency)
    return dbos_round(target.removeprefix("dbos-"), args.dbos_n or args.n)


def summarize(report: Report, targets: list[str]) -> dict[str, Any]:
    medians = {t: {"per_s": median_of([r for r in report.rounds if r["target"] == t], "per_s"),
                   "seconds": median_of([r for r in report.rounds if r["target"] == t],
                                        "seconds")}
               for t in targets}
    summary: dict[str, Any] = {"medians": medians}
    tidings = medians.get("tidings-sqlite", {}).get("per_s")
    ratios: dict[str, Any] = {}
    if tidings:
        for peer, goal in (("celery", GOAL_VS_CELERY), ("dbos-sqlite", GOAL_VS_DBOS)):
            if peer in medians:
                ratio = tidings / medians[peer]["per_s"]
                ratios[f"tidings-sqlite/{peer}"] = {"ratio": round(ratio, 2), "goal": goal,
                                                    "met": ratio >= goal}
                # The machine is shared: the same round's pair saw the same neighbours.
                by_round = {(r["target"], r["round"]): r["per_s"] for r in report.rounds}
                pairs = [by_round[("tidings-sqlite", i)] / by_round[(peer, i)]
                         for (t, i) in by_round if t == peer and ("tidings-sqlite", i) in by_round]
                if pairs:
                    paired = statistics.median(pairs)
                    ratios[f"tidings-sqlite/{peer} (median of per-round ratios)"] = {
                        "ratio": round(paired, 2), "goal": goal, "met": paired >= goal}
            budget = BUDGET[peer.split("-")[0]]
            ratios[f"tidings-sqlite/{peer} (budget {budget:g}/s)"] = {
                "ratio": round(tidings / budget, 2), "goal": goal, "met": tidings / budget >= goal}
        if "dbos-postgres" in medians and "tidings-postgres" in medians:
            ratio = medians["tidings-postgres"]["per_s"] / medians["dbos-postgres"]["per_s"]
            ratios["tidings-postgres/dbos-postgres"] = {"ratio": round(ratio, 2)}
    summary["ratios"] = ratios
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.p3_throughput", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="runs per round (default 10,000)")
    parser.add_argument("--dbos-n", type=int, default=None,
                        help="runs per DBOS round (default: --n)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=1,
                        help="HTTP connections sending the Tidings batches (default 1)")
    parser.add_argument("--celery-concurrency", type=int, default=2)
    profile_option(parser)
    parser.add_argument("--only", default=",".join(TARGETS),
                        help=f"comma-separated targets (default: {','.join(TARGETS)})")
    args = parser.parse_args(argv)
    pin_self()
    targets = [t for t in args.only.split(",") if t]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    skipped = postgres_available()
    if skipped:
        print(f"  PostgreSQL skipped: {skipped}")
        targets = [t for t in targets if not t.endswith("postgres")]
    report = Report("p3_throughput", {
        "n": args.n, "dbos_n": args.dbos_n or args.n, "rounds": args.rounds, "batch": BATCH,
        "connections": args.connections, "celery_concurrency": args.celery_concurrency,
        "targets": targets})
    print(f"P3: event -> 1-step function completed, N={args.n:,}, {args.rounds} rounds, "
          f"targets {', '.join(targets)}")
    try:
        for index in range(1, args.rounds + 1):
            for target in targets:
                result = {"target": target, "round": index, "load_before": load(),
                          **run_target(target, index, args)}
                report.rounds.append(result)
                extra = (f"  ingest {result['ingest_seconds']:.2f}s  server CPU "
                         f"{result['server_cpu_us_per_run']:.0f} us/run"
                         if "ingest_seconds" in result else
                         f"  enqueue {result['enqueue_seconds']:.2f}s")
                print(f"  round {index} {target:<17} {result['per_s']:>9,.0f} runs/s  "
                      f"({result['n']:,} in {result['seconds']:.2f}s){extra}", flush=True)
    except BenchError as exc:
        print(f"P3 failed: {exc}", file=sys.stderr)
        return 1
    report.summary = summarize(report, targets)
    print_table(f"P3 end-to-end runs/s, medians of {args.rounds} rounds",
                [[t, f"{m['per_s']:,.0f}", f"{m['seconds']:.2f}"]
                 for t, m in report.summary["medians"].items()],
                ["target", "runs/s", "seconds"])
    for name, ratio in report.summary["ratios"].items():
        goal = (f"  (goal >= {ratio['goal']:g}x: {'met' if ratio['met'] else 'NOT met'})"
                if "goal" in ratio else "")
        print(f"{name}: {ratio['ratio']:.1f}x{goal}")
    print(f"results: {report.save()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
