"""P5: the cost of one durable step, in a function of 1,000 no-op ``ctx.step.run`` steps.

Tidings: ``tidings dev -a bench.apps:client`` (pinned to core 0) on SQLite and PostgreSQL runs
``bench-p5-steps`` once per event, one run at a time. Per step = (run ``ended_at`` - run
``started_at``) / steps: from the claim of the run to the commit of its end, which holds every
step's record (ms resolution on a span of ~100 ms). The time between the first and the last
step inside the call (``time.time()`` returned by both) is reported as "in call", and the send
-> completed time as "end to end".

DBOS: a workflow of 1,000 ``@DBOS.step`` no-ops started with ``DBOS.start_workflow`` and timed
to ``get_result()``, on SQLite and PostgreSQL.

Every round has a fresh server / database and a warm-up run; targets alternate round by round.
Goal: Tidings <= 100 us per step.

``python -m bench.p5_steps [--rounds 3] [--runs 5] [--steps 1000] [--only tidings-sqlite]``
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
    json_value,
    load,
    pin_self,
    profile_option,
    profile_path,
    tidings_dev,
    wait_until,
)
from bench.harness import BenchError, postgres_available, print_table
from bench.p3_throughput import dbos_database, dbos_run

GOAL_US = 100.0
BUDGET_US = {"dbos-sqlite": 2600.0, "dbos-postgres": 4100.0}  # DESIGN.md
TARGETS = ["tidings-sqlite", "tidings-postgres", "dbos-sqlite", "dbos-postgres"]


def tidings_round(kind: str, steps: int, runs: int,
                  profile: Path | None = None) -> dict[str, Any]:
    out: dict[str, list[float]] = {"us_per_step": [], "in_call_us_per_step": [],
                                   "end_to_end_ms": []}
    with tidings_dev(kind, profile=profile) as engine:
        fn = engine.function_id("p5-steps")
        sender = engine.sender()
        try:
            for index in range(runs + 1):
                count = 100 if index == 0 else steps
                sent = time.time()
                (event_id,) = sender.post(encode([{"name": "bench/p5.steps",
                                                   "data": {"steps": count}}]))

                def finished(event_id: str = event_id) -> bool:
                    return engine.scalar(
                        "SELECT status FROM runs WHERE function_id = ? AND event_id = ?",
                        (fn, event_id)) in ("Completed", "Failed")

                wait_until(f"the {count}-step run", finished, timeout=120, interval=0.005)
                status, started, ended, output = engine.query(
                    "SELECT status, started_at, ended_at, output FROM runs "
                    "WHERE function_id = ? AND event_id = ?", (fn, event_id))[0]
                if status != "Completed":
                    raise BenchError(f"{kind}: the {count}-step run ended {status}")
                if index == 0:
                    continue
                recorded = int(engine.scalar(
                    "SELECT count(*) FROM steps s JOIN runs r ON r.id = s.run_id "
                    "WHERE r.function_id = ? AND r.event_id = ? AND s.status = 'completed'",
                    (fn, event_id)))
                if recorded != steps:
                    raise BenchError(f"{kind}: {recorded} of {steps} steps are recorded")
                result = json_value(output)
                out["us_per_step"].append((ended - started) * 1000 / steps)
                out["in_call_us_per_step"].append(
                    (result["last"] - result["first"]) * 1e6 / (steps - 1))
                out["end_to_end_ms"].append(ended - sent * 1000)
        finally:
            sender.close()
    return {"steps": steps, "runs": runs, **{k: [round(v, 2) for v in vs]
                                              for k, vs in out.items()},
            "median_us_per_step": round(statistics.median(out["us_per_step"]), 2)}


def dbos_round(kind: str, steps: int, runs: int, profile: Path | None = None
               ) -> dict[str, Any]:
    with dbos_database(kind) as url:
        raw = dbos_run(["steps", "--db", url, "--steps", str(steps), "--rounds", str(runs)],
                       timeout=600)
    return {"steps": steps, "runs": runs,
            "us_per_step": [round(v, 2) for v in raw["us_per_step"]],
            "median_us_per_step": round(raw["median_us_per_step"], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.p5_steps", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5, help="measured runs per round")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--only", default=",".join(TARGETS))
    profile_option(parser)
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
    report = Report("p5_steps", {"rounds": args.rounds, "runs": args.runs,
                                 "steps": args.steps, "targets": targets})
    print(f"P5: {args.steps:,}-step functions, {args.runs} runs x {args.rounds} rounds, "
          f"{', '.join(targets)}")
    try:
        for index in range(1, args.rounds + 1):
            for target in targets:
                kind = target.split("-", 1)[1]
                run = tidings_round if target.startswith("tidings") else dbos_round
                result = {"target": target, "round": index, "load_before": load(),
                          **run(kind, args.steps, args.runs,
                                profile_path(args.profile, "p5", target, index))}
                report.rounds.append(result)
                extra = ""
                if "in_call_us_per_step" in result:
                    extra = (f"  (in call {statistics.median(result['in_call_us_per_step']):.1f}"
                             f" us, end to end "
                             f"{statistics.median(result['end_to_end_ms']):.0f} ms)")
                print(f"  round {index} {target:<16} {result['median_us_per_step']:>8.1f} "
                      f"us/step{extra}", flush=True)
    except BenchError as exc:
        print(f"P5 failed: {exc}", file=sys.stderr)
        return 1
    medians = {}
    for target in targets:
        values = [v for r in report.rounds if r["target"] == target for v in r["us_per_step"]]
        entry = {"us_per_step": round(statistics.median(values), 2)}
        in_call = [v for r in report.rounds if r["target"] == target
                   for v in r.get("in_call_us_per_step", [])]
        if in_call:
            entry["in_call_us_per_step"] = round(statistics.median(in_call), 2)
        medians[target] = entry
    tidings = medians.get("tidings-sqlite", {}).get("us_per_step")
    ratios = {f"{peer}/tidings-{peer.split('-')[1]}":
              round(medians[peer]["us_per_step"]
                    / medians[f"tidings-{peer.split('-')[1]}"]["us_per_step"], 1)
              for peer in ("dbos-sqlite", "dbos-postgres")
              if peer in medians and f"tidings-{peer.split('-')[1]}" in medians}
    report.summary = {"medians": medians, "ratios": ratios, "goal_us_per_step": GOAL_US,
                      "goal_met": tidings is not None and tidings <= GOAL_US,
                      "budget_us_per_step": BUDGET_US}
    print_table(f"P5 us per step, medians of {args.rounds} x {args.runs} runs",
                [[t, f"{m['us_per_step']:.1f}",
                  f"{m['in_call_us_per_step']:.1f}" if "in_call_us_per_step" in m else ""]
                 for t, m in medians.items()], ["target", "us/step", "in call"])
    for name, ratio in ratios.items():
        print(f"{name}: {ratio:.1f}x")
    if tidings is not None:
        print(f"Tidings (SQLite): {tidings:.1f} us/step (goal <= {GOAL_US:g}: "
              f"{'met' if tidings <= GOAL_US else 'NOT met'})")
    print(f"results: {report.save()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
