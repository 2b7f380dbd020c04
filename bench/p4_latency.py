"""P4: latency from sending an event to its function starting, at a steady 100 events/s.

``tidings dev -a bench.apps:client`` (pinned to core 0) on SQLite, and on PostgreSQL for
comparison. One keep-alive connection (core 1) sends single-event ``POST /e/{key}`` requests on
a fixed schedule, one every 10 ms, for ``--seconds`` (after one unmeasured second of warm-up).
The latency of an event is ``started - sent``: ``sent`` is ``time.time()`` just before its
request is written, ``started`` is the ``time.time()`` the function's first step returned (read
back from the step's recorded output once every run has completed). The same clock serves both
processes. The request's round trip (the acknowledgement) is reported beside it.
Goals (SQLite): p50 <= 2 ms, p99 <= 10 ms.

``python -m bench.p4_latency [--rounds 3] [--seconds 20] [--rate 100] [--no-postgres]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.engine import (
    Report,
    encode,
    load,
    percentiles,
    pin_self,
    profile_option,
    profile_path,
    step_times,
    tidings_dev,
    wait_until,
)
from bench.harness import BenchError, postgres_available, print_table

GOAL_P50_MS = 2.0
GOAL_P99_MS = 10.0


def paced(engine: Any, rate: float, seconds: float, tag: str) -> list[tuple[str, float, float]]:
    """Send ``rate`` events a second for ``seconds``; ``(event id, sent, acknowledged)``."""
    sender = engine.sender()
    count = int(rate * seconds)
    interval = 1.0 / rate
    sent: list[tuple[str, float, float]] = []
    body_of = [encode([{"name": "bench/p4.start", "data": {"tag": tag, "i": i}}])
               for i in range(count)]
    start = time.perf_counter() + 0.05
    try:
        for i in range(count):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            at = time.time()
            (event_id,) = sender.post(body_of[i])
            sent.append((event_id, at, time.time()))
    finally:
        sender.close()
    return sent


def latency_round(kind: str, rate: float, seconds: float,
                  profile: Path | None = None) -> dict[str, Any]:
    with tidings_dev(kind, profile=profile) as engine:
        fn = engine.function_id("p4-start")
        warm = paced(engine, rate, 1.0, "warmup")
        measured = paced(engine, rate, seconds, "measured")
        total = len(warm) + len(measured)
        wait_until(f"{total} runs", lambda: int(engine.scalar(
            "SELECT count(*) FROM runs WHERE function_id = ? AND status = 'Completed'",
            (fn,))) >= total, timeout=60)
        started = step_times(engine, "p4-start", "started")
        stages = {str(r[0]): r[1:] for r in engine.query(
            "SELECT r.event_id, e.received_at, r.created_at, r.started_at FROM runs r "
            "JOIN events e ON e.id = r.event_id WHERE r.function_id = ?", (fn,))}
    missing = [event_id for event_id, _, _ in measured if event_id not in started]
    if missing:
        raise BenchError(f"{kind}: {len(missing)} events have no started step")
    latencies = [(started[event_id] - at) * 1000 for event_id, at, _ in measured]
    acks = [(acked - at) * 1000 for _, at, acked in measured]
    span = measured[-1][1] - measured[0][1]
    # Where the time goes, from the rows' millisecond stamps (means over every event, so the
    # truncation to whole milliseconds mostly averages out).
    parts = [(int(stages[i][0]) - at * 1000, int(stages[i][1]) - int(stages[i][0]),
              int(stages[i][2]) - int(stages[i][1]), started[i] * 1000 - int(stages[i][2]))
             for i, at, _ in measured]
    breakdown = {name: round(statistics.fmean(p[k] for p in parts), 3) for k, name in
                 enumerate(("sent_to_received", "received_to_run_created",
                            "run_created_to_claimed", "claimed_to_step"))}
    return {"events": len(measured), "achieved_rate": round((len(measured) - 1) / span, 1),
            "mean_ms_by_stage": breakdown,
            "start_ms": {k: round(v, 3) for k, v in percentiles(latencies).items()},
            "ack_ms": {k: round(v, 3) for k, v in percentiles(acks).items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.p4_latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=100.0, help="events per second")
    parser.add_argument("--no-postgres", action="store_true")
    profile_option(parser)
    args = parser.parse_args(argv)
    pin_self()
    targets = ["sqlite"]
    skipped = "--no-postgres" if args.no_postgres else postgres_available()
    if skipped is None:
        targets.append("postgres")
    report = Report("p4_latency", {"rounds": args.rounds, "seconds": args.seconds,
                                   "rate": args.rate, "targets": targets})
    print(f"P4: event -> function start at {args.rate:g} events/s for {args.seconds:g}s, "
          f"{', '.join(targets)}, {args.rounds} rounds")
    try:
        for index in range(1, args.rounds + 1):
            for kind in targets:
                result = {"target": kind, "round": index, "load_before": load(),
                          **latency_round(kind, args.rate, args.seconds,
                                          profile_path(args.profile, "p4", kind, index))}
                report.rounds.append(result)
                s, a = result["start_ms"], result["ack_ms"]
                print(f"  round {index} {kind:<8} start p50 {s['p50']:.2f} p90 {s['p90']:.2f} "
                      f"p99 {s['p99']:.2f} max {s['max']:.1f} ms | ack p50 {a['p50']:.2f} "
                      f"p99 {a['p99']:.2f} ms | {result['achieved_rate']:.0f}/s", flush=True)
                print("    mean ms by stage: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in result["mean_ms_by_stage"].items()), flush=True)
    except BenchError as exc:
        print(f"P4 failed: {exc}", file=sys.stderr)
        return 1
    medians: dict[str, Any] = {}
    for kind in targets:
        rounds = [r for r in report.rounds if r["target"] == kind]
        medians[kind] = {
            f"{what}_{p}": round(statistics.median(r[f"{what}_ms"][p] for r in rounds), 3)
            for what in ("start", "ack") for p in ("p50", "p90", "p99", "max")}
    sqlite = medians["sqlite"]
    met = sqlite["start_p50"] <= GOAL_P50_MS and sqlite["start_p99"] <= GOAL_P99_MS
    report.summary = {"medians_ms": medians, "goal_p50_ms": GOAL_P50_MS,
                      "goal_p99_ms": GOAL_P99_MS, "goal_met": met}
    print_table(f"P4 event -> function start, ms, medians of {args.rounds} rounds",
                [[k, *(f"{m[f'start_{p}']:.2f}" for p in ("p50", "p90", "p99", "max")),
                  f"{m['ack_p50']:.2f}", f"{m['ack_p99']:.2f}"] for k, m in medians.items()],
                ["target", "p50", "p90", "p99", "max", "ack p50", "ack p99"])
    print(f"SQLite: p50 {sqlite['start_p50']:.2f} ms (goal <= {GOAL_P50_MS:g}), p99 "
          f"{sqlite['start_p99']:.2f} ms (goal <= {GOAL_P99_MS:g}): "
          f"{'met' if met else 'NOT met'}")
    print(f"results: {report.save()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
