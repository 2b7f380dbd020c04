"""P12: what ``encrypt_data`` costs (issue 16, ``sealing.py``). P1 (single-event ``POST
/e/{key}``, 32 connections), P2 (500-event requests) and P3 (event -> 1-step function
completed) on ``tidings dev`` (SQLite) with it off and on (``--encrypt-data``), in alternating
rounds; with ``--base-src DIR`` also on the code of another checkout (``DIR`` = its ``src``,
from before the setting existed), to show that off costs nothing. Goals: on/off >= 0.85
(at most 15 %), off/base = 1 within the noise.

``python -m bench.p12_sealing [--rounds 4] [--seconds 8] [--n 5000] [--only p1,p2,p3]
[--base-src DIR]``

The machine is shared: the summary gives throughput and server CPU per request or run, as the
ratio of medians and the median of per-round ratios (each set of rounds saw the same
neighbours); CPU is the steadier figure.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path
from typing import Any

import msgspec

from bench import alternating
from bench.engine import Report, load, pin_self
from bench.harness import Plan, in_turn, run_plan
from bench.p1_ingest import EVENT
from bench.p2_batch import BATCH, batch_body
from bench.p3_throughput import tidings_round

GOAL = 0.85
OFF, ON, BASE = "sqlite", "sqlite-sealed", "sqlite-base"


def _ratios(by: dict[str, list[float]], cpu: dict[str, list[float]], target: str
            ) -> dict[str, Any]:
    """``target`` against off: throughput (higher is better) and off's CPU over the
    target's (what its CPU per request or run allows)."""
    return {
        "per_s_of_medians": round(statistics.median(by[target]) / statistics.median(by[OFF]), 3),
        "per_s_median_of_round_ratios": round(statistics.median(
            b / a for a, b in zip(by[OFF], by[target], strict=True)), 3),
        "cpu_of_medians": round(statistics.median(cpu[OFF]) / statistics.median(cpu[target]),
                                3),
        "cpu_median_of_round_ratios": round(statistics.median(
            a / b for a, b in zip(cpu[OFF], cpu[target], strict=True)), 3),
    }


def _summary(targets: list[str], by: dict[str, list[float]], cpu: dict[str, list[float]],
             unit: str) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "unit": unit, "per_s_median": {t: statistics.median(by[t]) for t in targets},
        "server_cpu_us_median": {t: statistics.median(cpu[t]) for t in targets},
        "on_vs_off": _ratios(by, cpu, ON), "goal": GOAL}
    summary["met"] = summary["on_vs_off"]["cpu_median_of_round_ratios"] >= GOAL
    if BASE in targets:
        summary["off_vs_base"] = {k: round(1 / v, 3) for k, v in _ratios(by, cpu, BASE).items()}
    return summary


def ingest(name: str, targets: list[str], rounds: int, seconds: float
           ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """P1 (one event per request) or P2 (500)."""
    single = name == "p1"
    plan = Plan(name=f"p12_sealing_{name}", targets=targets,
                body=msgspec.json.encode(EVENT) if single else batch_body(),
                events_per_request=1 if single else BATCH, rounds=rounds, seconds=seconds,
                warmup_seconds=2.0, connections=32 if single else 4)
    run_plan(plan)
    by = {t: [r.events_per_s for r in plan.results if r.target == t] for t in targets}
    per = 1 if single else BATCH
    cpu = {t: [r.server_cpu_us_per_request / per for r in plan.results if r.target == t]
           for t in targets}
    rows = [{"bench": name, "target": r.target, "round": r.index, "per_s": r.events_per_s,
             "server_cpu_us_per_event": r.server_cpu_us_per_request / per,
             "load_before": r.load_before} for r in plan.results]
    return rows, _summary(targets, by, cpu, "events/s")


def p3(targets: list[str], rounds: int, n: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows = []
    for index in range(1, rounds + 1):
        for target in in_turn(targets, index):
            before = load()
            options: tuple[str, ...] = ("--encrypt-data",) if target == ON else ()
            src = os.environ["TIDINGS_BENCH_BASE_SRC"] if target == BASE else None
            result = tidings_round("sqlite", n, 1, options=options, src=src)
            rows.append({"bench": "p3", "target": target, "round": index,
                         "per_s": result["per_s"],
                         "server_cpu_us": result["server_cpu_us_per_run"],
                         "load_before": before})
            print(f"  p3 round {index} {target:<14} {result['per_s']:>9,.0f} runs/s  server "
                  f"CPU {result['server_cpu_us_per_run']:,.0f} us/run  load {before}",
                  flush=True)
    by = {t: [r["per_s"] for r in rows if r["target"] == t] for t in targets}
    cpu = {t: [r["server_cpu_us"] for r in rows if r["target"] == t] for t in targets}
    return rows, _summary(targets, by, cpu, "runs/s")


def main(argv: list[str] | None = None) -> int:
    parser = alternating.parser("p12_sealing", __doc__, seconds="P1/P2", only="p1,p2,p3")
    parser.add_argument("--base-src", type=Path, default=None, metavar="DIR",
                        help="another checkout's src: its code as a third target")
    args = parser.parse_args(argv)
    targets = [OFF, ON]
    if args.base_src is not None:
        base = args.base_src.resolve()
        if not (base / "tidings" / "__init__.py").exists():
            parser.error(f"--base-src {base}: no tidings package there")
        os.environ["TIDINGS_BENCH_BASE_SRC"] = str(base)
        targets.append(BASE)
    pin_self()
    report = Report("p12_sealing", {"rounds": args.rounds, "seconds": args.seconds,
                                    "p3_n": args.n, "targets": targets,
                                    "base_src": str(args.base_src or "")})

    def part(name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        return (p3(targets, args.rounds, args.n) if name == "p3"
                else ingest(name, targets, args.rounds, args.seconds))

    def show(name: str, summary: dict[str, Any]) -> None:
        ratios = summary["on_vs_off"]
        print(f"  {name}: on/off throughput {ratios['per_s_of_medians']} (medians), "
              f"{ratios['per_s_median_of_round_ratios']} (per round); by server CPU "
              f"{ratios['cpu_of_medians']}, {ratios['cpu_median_of_round_ratios']}; "
              f"goal >= {GOAL}")
        if "off_vs_base" in summary:
            print(f"  {name}: off/base {summary['off_vs_base']}")

    return alternating.run_parts("P12", "encrypt_data off vs on", args, report, part, show)


if __name__ == "__main__":
    sys.exit(main())
