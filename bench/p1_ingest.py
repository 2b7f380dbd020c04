"""P1: single-event ``POST /e/{key}`` over 32 connections, ``tidings dev`` (SQLite) against a bare
ASGI app on the same server stack, in alternating rounds. Goal: tidings/bare >= 0.6.

``python -m bench.p1_ingest [--rounds 3] [--seconds 10] [--analysis]``

``--analysis`` adds two variants of ``tidings dev`` (``bench/variants.py``) to the same rounds:
one that stores nothing (the ceiling of any storage design on this stack) and one whose SQLite
commits skip the fsync (what durability costs).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from bench.harness import (
    BenchError,
    Plan,
    common_options,
    medians,
    print_table,
    routing_note,
    run_plan,
    save,
)

GOAL_RATIO = 0.6
ANALYSIS = ["sqlite-nostore", "sqlite-nosync"]
NAMES = {
    "bare": "bare ASGI",
    "sqlite": "tidings dev (SQLite)",
    "sqlite-nostore": "  without storage",
    "sqlite-nosync": "  without fsync",
}
EVENT = {
    "name": "app/user.signed_up",
    "data": {"user_id": "u_8f3a2c", "plan": "pro", "seats": 3, "referrer": "newsletter"},
}


def plan_from(args: argparse.Namespace) -> Plan:
    return Plan(
        name="p1_ingest",
        targets=["bare", "sqlite", *(ANALYSIS if args.analysis else [])],
        body=msgspec.json.encode(EVENT),
        events_per_request=1,
        rounds=args.rounds,
        seconds=args.seconds,
        warmup_seconds=args.warmup,
        connections=args.connections,
    )


def report(plan: Plan) -> dict[str, Any]:
    found = medians(plan)
    bare, tidings = found["bare"]["req_per_s"], found["sqlite"]["req_per_s"]
    ratio = tidings / bare
    # Server CPU per request is the steadier figure when other work shares the machine.
    cpu_ratio = found["bare"]["server_cpu_us_per_request"] / max(
        found["sqlite"]["server_cpu_us_per_request"], 1e-9)
    rows = [
        [NAMES[target], f"{m['req_per_s']:,.0f}", f"{m['p50_ms']:.2f}", f"{m['p99_ms']:.2f}",
         f"{m['server_cpu_us_per_request']:.1f}", f"{m['req_per_s'] / bare:.3f}"]
        for target, m in found.items()
    ]
    print_table(f"P1 single-event ingest, {plan.connections} connections, medians of "
                f"{plan.rounds} rounds of {plan.seconds:g}s",
                rows, ["server", "req/s", "p50 ms", "p99 ms", "CPU us/req", "ratio"])
    routing_note(found)
    verdict = "met" if ratio >= GOAL_RATIO else "NOT met"
    print(f"ratio tidings/bare = {ratio:.3f}  (goal >= {GOAL_RATIO}: {verdict}); "
          f"by server CPU per request: {cpu_ratio:.3f}")
    return {"medians": found, "ratio": round(ratio, 4), "cpu_ratio": round(cpu_ratio, 4),
            "goal_ratio": GOAL_RATIO, "goal_met": ratio >= GOAL_RATIO}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.p1_ingest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common_options(parser, rounds=3, seconds=10)
    parser.add_argument("--analysis", action="store_true",
                        help="also run tidings dev without storage and without fsync")
    args = parser.parse_args(argv)
    plan = plan_from(args)
    print(f"P1: single-event POST /e/{{key}}, bare vs tidings dev (SQLite), "
          f"{plan.rounds} alternating rounds")
    try:
        run_plan(plan)
    except BenchError as exc:
        print(f"P1 failed: {exc}", file=sys.stderr)
        return 1
    summary = report(plan)
    print(f"results: {save(plan, summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
