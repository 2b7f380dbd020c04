"""P6: a million pending delayed events (or sleeping runs) in ``tidings dev``: the server's
memory, and how late the ones that come due start.

1. ``tidings dev -a bench.apps:client`` on SQLite starts (pinned to core 0).
2. ``--pending`` (1,000,000) events are ingested in 500-event requests over 4 connections
   (core 1): ``bench/p6.due`` with ``deliver_at`` one day ahead — or, with ``--sleeping``,
   ``bench/p6.sleep`` events whose runs start at once and sleep for a day (``step.sleep_until``);
   the benchmark then waits until every one of those runs is asleep.
3. ``--due`` (2,000) more come due at known times: one every ``--spacing-ms`` (5 ms), starting
   3 s after they are sent (delayed events: ``deliver_at``; sleeping runs: their sleep's end).
4. Lateness = ``started`` - due time, where ``started`` is the ``time.time()`` the function's
   first step after the wait returned (read back from the step's output).

The server's RSS (``VmRSS``) is sampled every 0.25 s throughout; its CPU use while idle with the
million pending (between ingest and the first due time) is reported too.
Goals: RSS <= 300 MB, lateness p99 <= 100 ms.

``python -m bench.p6_pending [--pending 1000000] [--due 2000] [--sleeping] [--rounds 1]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from bench.engine import (
    MemorySampler,
    Report,
    encode,
    load,
    percentiles,
    pin_self,
    post_all,
    profile_option,
    profile_path,
    step_times,
    tidings_dev,
    wait_until,
)
from bench.harness import BenchError, print_table

GOAL_RSS_MB = 300.0
GOAL_P99_MS = 100.0
BATCH = 500
DAY_MS = 24 * 3600 * 1000
MB = 1024 * 1024


def _far_bodies(pending: int, sleeping: bool, far_ms: int) -> list[bytes]:
    if sleeping:
        event = {"name": "bench/p6.sleep", "data": {"until": far_ms}}
    else:
        event = {"name": "bench/p6.due", "data": {"pending": True}, "deliver_at": far_ms}
    body = encode([event] * BATCH)
    bodies = [body] * (pending // BATCH)
    if pending % BATCH:
        bodies.append(encode([event] * (pending % BATCH)))
    return bodies


def _due_events(count: int, first_ms: int, spacing_ms: float, sleeping: bool
                ) -> list[tuple[dict[str, Any], int]]:
    out = []
    for i in range(count):
        due = first_ms + int(i * spacing_ms)
        if sleeping:
            out.append(({"name": "bench/p6.sleep", "data": {"until": due, "i": i}}, due))
        else:
            out.append(({"name": "bench/p6.due", "data": {"i": i}, "deliver_at": due}, due))
    return out


def pending_round(args: argparse.Namespace, index: int) -> dict[str, Any]:
    sleeping = args.sleeping
    function, step = ("p6-sleeper", "woke") if sleeping else ("p6-due", "started")
    profile = profile_path(args.profile, "p6", "sqlite", index)
    with tidings_dev("sqlite", profile=profile) as engine, MemorySampler(engine.pid) as memory:
        fn = engine.function_id(function)
        rss_start = engine.rss_bytes()
        far_ms = int(time.time() * 1000) + DAY_MS
        began = time.time()
        post_all(engine.port, _far_bodies(args.pending, sleeping, far_ms), args.connections)
        ingested = time.time()
        print(f"    {args.pending:,} ingested in {ingested - began:.1f}s "
              f"({args.pending / (ingested - began):,.0f} events/s), RSS "
              f"{engine.rss_bytes() / MB:.0f} MB", flush=True)
        if sleeping:
            wait_until(f"{args.pending:,} runs to sleep", lambda: int(engine.scalar(
                "SELECT count(*) FROM runs WHERE function_id = ? AND status = 'Sleeping'",
                (fn,))) >= args.pending, timeout=args.pending / 500 + 120, interval=1.0)
            print(f"    all asleep after {time.time() - ingested:.1f}s more", flush=True)
        else:
            pending = int(engine.scalar(
                "SELECT count(*) FROM events WHERE delivered_at IS NULL AND deliver_at > ?",
                (int(time.time() * 1000),)))
            if pending < args.pending:
                raise BenchError(f"only {pending:,} delayed events are pending")
        settled = time.time()
        rss_pending = engine.rss_bytes()
        # Idle with the million pending: what does the server spend, doing nothing due?
        cpu_before, idle_from = engine.cpu_seconds(), time.time()
        time.sleep(args.idle)
        idle_cpu = (engine.cpu_seconds() - cpu_before) / (time.time() - idle_from)
        first_ms = int(time.time() * 1000) + 3000
        due = _due_events(args.due, first_ms, args.spacing_ms, sleeping)
        bodies = [encode([e for e, _ in due[i:i + BATCH]]) for i in range(0, len(due), BATCH)]
        ids = [i for batch in post_all(engine.port, bodies) for i in batch]
        due_at = {event_id: at for event_id, (_, at) in zip(ids, due, strict=True)}
        last_due = max(due_at.values()) / 1000

        def woken() -> int:
            return int(engine.scalar(
                "SELECT count(*) FROM runs WHERE function_id = ? AND status = 'Completed'",
                (fn,)))

        wait_until(f"{args.due} due runs", lambda: time.time() > last_due + 1
                   and woken() >= args.due, timeout=last_due - time.time() + 120, interval=0.2)
        started = step_times(engine, function, step)
        rss_end = engine.rss_bytes()
        db_bytes = sum(p.stat().st_size for p in engine.data_dir.glob("tidings.db*"))
    missing = [i for i in due_at if i not in started]
    if missing:
        raise BenchError(f"{len(missing)} due events have no started step")
    lateness = [(started[i] - at / 1000) * 1000 for i, at in due_at.items()]
    return {
        "pending": args.pending, "mode": "sleeping runs" if sleeping else "delayed events",
        "ingest_seconds": round(ingested - began, 2),
        "ingest_events_per_s": round(args.pending / (ingested - began), 1),
        "settle_seconds": round(settled - ingested, 2),
        "rss_mb": {"start": round(rss_start / MB, 1), "peak": round(memory.peak() / MB, 1),
                   "peak_ingest": round(memory.peak(began, ingested) / MB, 1),
                   "pending": round(rss_pending / MB, 1), "end": round(rss_end / MB, 1)},
        "idle_cpu_percent": round(idle_cpu * 100, 1),
        "db_mb": round(db_bytes / MB, 1),
        "lateness_ms": {k: round(v, 3) for k, v in percentiles(lateness).items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.p6_pending", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=2_000)
    parser.add_argument("--spacing-ms", type=float, default=5.0)
    parser.add_argument("--sleeping", action="store_true",
                        help="sleeping runs instead of delayed events")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--idle", type=float, default=5.0,
                        help="seconds idle with everything pending (CPU measured)")
    parser.add_argument("--rounds", type=int, default=1)
    profile_option(parser)
    args = parser.parse_args(argv)
    pin_self()
    mode = "sleeping runs" if args.sleeping else "delayed events"
    report = Report("p6_pending", {k: getattr(args, k) for k in
                                   ("pending", "due", "spacing_ms", "sleeping", "connections",
                                    "idle", "rounds")})
    print(f"P6: {args.pending:,} pending {mode}, {args.due:,} due every {args.spacing_ms:g} ms, "
          f"{args.rounds} round(s)")
    try:
        for index in range(1, args.rounds + 1):
            result = {"round": index, "load_before": load(), **pending_round(args, index)}
            report.rounds.append(result)
            late, rss = result["lateness_ms"], result["rss_mb"]
            print(f"  round {index}: RSS peak {rss['peak']:.0f} MB (pending {rss['pending']:.0f},"
                  f" end {rss['end']:.0f}), idle CPU {result['idle_cpu_percent']:.0f}%, "
                  f"lateness p50 {late['p50']:.1f} p90 {late['p90']:.1f} p99 {late['p99']:.1f} "
                  f"max {late['max']:.1f} ms", flush=True)
    except BenchError as exc:
        print(f"P6 failed: {exc}", file=sys.stderr)
        return 1
    rounds = report.rounds
    peak = statistics.median(r["rss_mb"]["peak"] for r in rounds)
    late = {p: round(statistics.median(r["lateness_ms"][p] for r in rounds), 3)
            for p in ("p50", "p90", "p99", "max")}
    met = peak <= GOAL_RSS_MB and late["p99"] <= GOAL_P99_MS
    report.summary = {"mode": mode, "rss_peak_mb": peak, "lateness_ms": late,
                      "ingest_events_per_s": statistics.median(r["ingest_events_per_s"]
                                                               for r in rounds),
                      "idle_cpu_percent": statistics.median(r["idle_cpu_percent"]
                                                            for r in rounds),
                      "goal_rss_mb": GOAL_RSS_MB, "goal_p99_ms": GOAL_P99_MS, "goal_met": met}
    print_table(f"P6 {args.pending:,} pending {mode}, medians of {args.rounds} round(s)",
                [[mode, f"{peak:.0f}", *(f"{late[p]:.1f}" for p in ("p50", "p90", "p99", "max"))]],
                ["pending", "RSS peak MB", "late p50 ms", "p90", "p99", "max"])
    print(f"RSS {peak:.0f} MB (goal <= {GOAL_RSS_MB:g}), lateness p99 {late['p99']:.1f} ms "
          f"(goal <= {GOAL_P99_MS:g}): {'met' if met else 'NOT met'}")
    print(f"results: {report.save()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
