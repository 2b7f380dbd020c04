"""P8: the cost of flow control. End-to-end runs/s of a one-step function under a concurrency
limit of 1 per key, with events spread over 10,000 distinct keys, beside the same function
without flow control, in one run.

Each round starts a fresh ``tidings dev -a bench.apps:client`` (core 0) per target and sends
N events (default 10,000; event i has key ``k{i % keys}``) as 500-event requests from one
keep-alive connection (core 1); measured from just before the first request to the
``ended_at`` of the last run, every run checked ``Completed``. Targets alternate round by round;
the summary gives the ratio of medians and the median of per-round ratios. Goal: keyed / plain
>= 0.7.

``python -m bench.p8_flow [--n 10000] [--keys 10000] [--rounds 3] [--postgres]``
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
    median_of,
    pin_self,
    post_all,
    profile_option,
    profile_path,
    tidings_dev,
    wait_until,
)
from bench.harness import BenchError, postgres_available, print_table

BATCH = 500
GOAL = 0.7
TARGETS = {"plain": ("p8-plain", "bench/p8.plain"), "keyed": ("p8-keyed", "bench/p8.keyed")}


def _bodies(event: str, n: int, keys: int, tag: str) -> list[bytes]:
    return [encode([{"name": event, "data": {"key": f"k{(i + j) % keys}", "round": tag}}
                    for j in range(min(BATCH, n - i))]) for i in range(0, n, BATCH)]


def flow_round(kind: str, target: str, n: int, keys: int,
               profile: Path | None = None) -> dict[str, Any]:
    slug, event = TARGETS[target]
    with tidings_dev(kind, profile=profile) as engine:
        fn = engine.function_id(slug)

        def completed() -> int:
            return int(engine.scalar(
                "SELECT count(*) FROM runs WHERE function_id = ? AND status = 'Completed'",
                (fn,)))

        warmup = BATCH
        post_all(engine.port, _bodies(event, warmup, keys, "warmup"))
        wait_until("the warm-up runs", lambda: completed() >= warmup, timeout=60)
        cpu_before = engine.cpu_seconds()
        started = time.time()
        post_all(engine.port, _bodies(event, n, keys, "measured"))
        wait_until(f"{n} runs to complete", lambda: completed() >= warmup + n,
                   timeout=max(120, n / 50))
        cpu = engine.cpu_seconds() - cpu_before
        ended_ms = engine.completed_runs(fn, warmup + n, target)
    elapsed = ended_ms / 1000 - started
    return {"n": n, "seconds": round(elapsed, 4), "per_s": round(n / elapsed, 1),
            "server_cpu_us_per_run": round(cpu / n * 1e6, 1)}


def summarize(report: Report, kinds: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for kind in kinds:
        rounds = [r for r in report.rounds if r["kind"] == kind]
        plain = median_of([r for r in rounds if r["target"] == "plain"], "per_s")
        keyed = median_of([r for r in rounds if r["target"] == "keyed"], "per_s")
        by_round = {(r["target"], r["round"]): r["per_s"] for r in rounds}
        pairs = [by_round[("keyed", i)] / by_round[("plain", i)]
                 for (t, i) in by_round if t == "plain" and ("keyed", i) in by_round]
        paired = statistics.median(pairs)
        summary[kind] = {"plain_per_s": plain, "keyed_per_s": keyed,
                         "ratio": round(keyed / plain, 3),
                         "ratio_of_rounds": round(paired, 3), "goal": GOAL,
                         "met": paired >= GOAL}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.p8_flow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="runs per round (default 10,000)")
    parser.add_argument("--keys", type=int, default=10_000, help="distinct keys (10,000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL too")
    profile_option(parser)
    args = parser.parse_args(argv)
    pin_self()
    kinds = ["sqlite"]
    if args.postgres:
        skipped = postgres_available()
        if skipped:
            print(f"  PostgreSQL skipped: {skipped}")
        else:
            kinds.append("postgres")
    report = Report("p8_flow", {"n": args.n, "keys": args.keys, "rounds": args.rounds,
                                "batch": BATCH, "kinds": kinds})
    print(f"P8: keyed concurrency limit vs none, N={args.n:,} over {args.keys:,} keys, "
          f"{args.rounds} rounds, {', '.join(kinds)}")
    try:
        for index in range(1, args.rounds + 1):
            for kind in kinds:
                order = ["plain", "keyed"] if index % 2 else ["keyed", "plain"]
                for target in order:
                    result = {"kind": kind, "target": target, "round": index,
                              "load_before": load(),
                              **flow_round(kind, target, args.n, args.keys, profile_path(
                                  args.profile, "p8", f"{kind}-{target}", index))}
                    report.rounds.append(result)
                    print(f"  round {index} {kind:<8} {target:<6} {result['per_s']:>9,.0f} "
                          f"runs/s ({result['n']:,} in {result['seconds']:.2f}s)  server CPU "
                          f"{result['server_cpu_us_per_run']:.0f} us/run", flush=True)
    except BenchError as exc:
        print(f"P8 failed: {exc}", file=sys.stderr)
        return 1
    report.summary = summarize(report, kinds)
    print_table(f"P8 runs/s, medians of {args.rounds} rounds",
                [[kind, f"{s['plain_per_s']:,.0f}", f"{s['keyed_per_s']:,.0f}",
                  f"{s['ratio']:.2f}", f"{s['ratio_of_rounds']:.2f}",
                  "met" if s["met"] else "NOT met"]
                 for kind, s in report.summary.items()],
                ["db", "plain", "keyed", "ratio", "per-round", f"goal >= {GOAL}"])
    print(f"results: {report.save()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
