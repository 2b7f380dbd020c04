"""P2: 500-event ``POST /e/{key}`` requests (small realistic events), ``tidings dev`` on SQLite
and on PostgreSQL, with the bare ASGI app as the ceiling, in alternating rounds.
Goal: >= 100,000 events/s on SQLite.

``python -m bench.p2_batch [--rounds 3] [--seconds 10] [--no-postgres]``
"""

from __future__ import annotations

import argparse
import random
import sys
from typing import Any

import msgspec

from bench.harness import (
    BenchError,
    Plan,
    common_options,
    medians,
    postgres_available,
    print_table,
    routing_note,
    run_plan,
    save,
)

GOAL_EVENTS_PER_S = 100_000
BATCH = 500
NAMES = ["app/user.signed_up", "app/order.placed", "app/invoice.paid", "app/email.opened"]
PLANS = ["free", "pro", "team", "enterprise"]


def batch_body(size: int = BATCH, seed: int = 7) -> bytes:
    """``size`` small events: a name and a few data keys, like typical product events."""
    rng = random.Random(seed)
    events = [
        {
            "name": rng.choice(NAMES),
            "data": {
                "user_id": f"u_{rng.randrange(16**8):08x}",
                "plan": rng.choice(PLANS),
                "amount": rng.randrange(100, 50_000),
                "currency": "EUR",
            },
        }
        for _ in range(size)
    ]
    return msgspec.json.encode(events)


def plan_from(args: argparse.Namespace, targets: list[str]) -> Plan:
    return Plan(
        name="p2_batch",
        targets=targets,
        body=batch_body(),
        events_per_request=BATCH,
        rounds=args.rounds,
        seconds=args.seconds,
        warmup_seconds=args.warmup,
        connections=args.connections,
    )


def report(plan: Plan, skipped: str | None) -> dict[str, Any]:
    found = medians(plan)
    labels = {"bare": "bare ASGI (ceiling)", "sqlite": "tidings dev (SQLite)",
              "postgres": "tidings dev (PostgreSQL)"}
    rows = [
        [labels[name], f"{m['req_per_s']:,.0f}", f"{m['events_per_s']:,.0f}",
         f"{m['p50_ms']:.1f}", f"{m['p99_ms']:.1f}",
         f"{m['server_cpu_us_per_request'] / BATCH:.2f}"]
        for name, m in found.items()
    ]
    print_table(f"P2 {BATCH}-event requests ({len(plan.body):,} bytes), {plan.connections} "
                f"connections, medians of {plan.rounds} rounds of {plan.seconds:g}s",
                rows, ["server", "req/s", "events/s", "p50 ms", "p99 ms", "CPU us/event"])
    routing_note(found)
    sqlite = found["sqlite"]["events_per_s"]
    verdict = "met" if sqlite >= GOAL_EVENTS_PER_S else "NOT met"
    print(f"SQLite: {sqlite:,.0f} events/s  (goal >= {GOAL_EVENTS_PER_S:,}: {verdict})")
    if "postgres" in found:
        print(f"PostgreSQL: {found['postgres']['events_per_s']:,.0f} events/s")
    elif skipped:
        print(f"PostgreSQL: not measured ({skipped})")
    return {"medians": found, "goal_events_per_s": GOAL_EVENTS_PER_S,
            "goal_met": sqlite >= GOAL_EVENTS_PER_S, "postgres_skipped": skipped}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.p2_batch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common_options(parser, rounds=3, seconds=10)
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare ceiling rounds")
    args = parser.parse_args(argv)
    targets = [] if args.no_bare else ["bare"]
    targets.append("sqlite")
    skipped = "--no-postgres" if args.no_postgres else postgres_available()
    if skipped is None:
        targets.append("postgres")
    plan = plan_from(args, targets)
    print(f"P2: {BATCH}-event requests, {', '.join(targets)}, {plan.rounds} alternating rounds")
    if skipped and not args.no_postgres:
        print(f"  PostgreSQL skipped: {skipped}")
    try:
        run_plan(plan)
    except BenchError as exc:
        print(f"P2 failed: {exc}", file=sys.stderr)
        return 1
    summary = report(plan, skipped)
    print(f"results: {save(plan, summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
