"""DBOS, measured in a process of its own (DBOS is a per-process singleton).

``python -m bench.peers.dbos_runner queue --db URL -n 10000`` enqueues ``n`` one-step workflows
on a DBOS queue and times them from the first enqueue until every workflow has succeeded;
``steps --db URL --steps 1000 --rounds 3`` times workflows of ``steps`` no-op steps, one after
the other. The result is one JSON line on stdout, prefixed ``BENCH_RESULT``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dbos import DBOS, DBOSConfig

QUEUE = "bench"


@DBOS.step()
def noop_step() -> None:
    return None


@DBOS.workflow()
def one_step() -> None:
    noop_step()


@DBOS.workflow()
def many_steps(count: int) -> int:
    for _ in range(count):
        noop_step()
    return count


def launch(db: str) -> None:
    config: DBOSConfig = {"name": "tidings-bench", "system_database_url": db,
                          "log_level": "WARNING", "run_admin_server": False}  # type: ignore[typeddict-unknown-key]
    DBOS(config=config)
    DBOS.launch()
    logging.getLogger("dbos").setLevel(logging.WARNING)


def succeeded(ids: list[str]) -> int:
    return sum(1 for w in DBOS.list_workflows(queue_name=QUEUE, status="SUCCESS",
                                              load_input=False, load_output=False))


def queue_round(n: int, polling: float, warmup: int, threads: int,
                concurrency: int | None) -> dict[str, Any]:
    queue = DBOS.register_queue(QUEUE, polling_interval_sec=polling,
                                worker_concurrency=concurrency)
    handles = [queue.enqueue(one_step) for _ in range(warmup)]
    for handle in handles:
        handle.get_result()
    started = time.perf_counter()
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            handles = list(pool.map(lambda _: queue.enqueue(one_step), range(n)))
    else:
        handles = [queue.enqueue(one_step) for _ in range(n)]
    enqueued = time.perf_counter() - started
    for handle in handles:
        handle.get_result()
    elapsed = time.perf_counter() - started
    return {"n": n, "seconds": elapsed, "enqueue_seconds": enqueued,
            "per_s": n / elapsed}


def steps_round(steps: int, rounds: int) -> dict[str, Any]:
    many_steps(10)  # warm up
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        assert DBOS.start_workflow(many_steps, steps).get_result() == steps
        times.append(time.perf_counter() - started)
    return {"steps": steps, "seconds": times, "us_per_step": [t / steps * 1e6 for t in times],
            "median_us_per_step": statistics.median(t / steps * 1e6 for t in times)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["queue", "steps"])
    parser.add_argument("--db", required=True)
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--polling", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1, help="threads that enqueue")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="the queue's worker_concurrency (default: unlimited)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    launch(args.db)
    try:
        if args.mode == "queue":
            result = queue_round(args.n, args.polling, args.warmup, args.threads,
                                 args.concurrency)
        else:
            result = steps_round(args.steps, args.rounds)
    finally:
        DBOS.destroy()
    print("BENCH_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
