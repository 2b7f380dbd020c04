"""P10: what metrics, logs and traces cost. P1 (single-event ``POST /e/{key}``, 32
connections) and P3 (event → 1-step function completed, 500-event requests) on ``tidings dev``
(SQLite), with metrics and logging off (``--no-metrics --log-level warning``) and on as under
``serve`` (metrics, INFO, JSON), traced (as on, with tracing on besides, every span exported to
nothing: ``bench/variants.py traced``), and tracing alone (as off, with the same tracing on), in
alternating rounds. Goals: on/off >= 0.95 for both; tracing's own cost within 10 %, read two
ways: tracing alone against off, and traced against on (each adds tracing alone to what is
otherwise the same server). Traced against off (metrics, logs and tracing together) is given too.

``python -m bench.p10_observe [--rounds 4] [--seconds 8] [--n 5000] [--only p1,p3]
[--base-src DIR]``

With ``--base-src`` (another checkout's ``src``) "on" and "traced" also run on that code in the
same alternating rounds (``base-on``, ``base-traced``), and the summary gives their ratios to
"off" beside this code's: before and after in one run.

The server's CPU per request or run is also split by thread (``bench.harness.threads_cpu``:
the event loop's, the span export thread's, SQLite's writer, syncer and readers, the
functions' pool), medians per target, so where observability's cost goes is a measured figure.

The machine is shared: each round records the load average, and the summary gives the ratio
of medians and the median of per-round ratios (each pair of rounds saw the same neighbours).
"""

from __future__ import annotations

import os
import statistics
import sys
from functools import partial
from pathlib import Path
from typing import Any

from bench import alternating
from bench.engine import Report, load, pin_self
from bench.harness import (
    OBSERVED,
    SERVERS,
    UNOBSERVED,
    Plan,
    in_turn,
    print_table,
    run_plan,
    sqlite_server,
)
from bench.p1_ingest import EVENT
from bench.p3_throughput import tidings_round

GOAL = 0.95
GOAL_TRACED = 0.90
OFF, ON, TRACED = "sqlite-unobserved", "sqlite-observed", "sqlite-traced"
ALONE = "sqlite-traced-alone"
SERVERS[ALONE] = partial(sqlite_server, "traced", UNOBSERVED)
BASE_ON, BASE_TRACED = "base-observed", "base-traced"


def _ratios(off: list[float], on: list[float], goal: float = GOAL) -> dict[str, Any]:
    of_medians = statistics.median(on) / statistics.median(off)
    per_round = statistics.median(b / a for a, b in zip(off, on, strict=True))
    return {"off_median": round(statistics.median(off), 1),
            "on_median": round(statistics.median(on), 1),
            "ratio_of_medians": round(of_medians, 3),
            "median_of_round_ratios": round(per_round, 3), "goal": goal,
            "met": per_round >= goal}


def _base_ratios(by: dict[str, list[float]], cpu: dict[str, list[float]]) -> dict[str, Any]:
    """The base code's "on" and "traced" against "off", by throughput and by CPU."""
    if BASE_ON not in by:
        return {}
    return {"base_on": _ratios(by[OFF], by[BASE_ON]),
            "base_traced": _ratios(by[OFF], by[BASE_TRACED], GOAL_TRACED),
            "base_cpu": {name: {"of_medians": round(statistics.median(cpu[OFF])
                                                    / statistics.median(cpu[target]), 3),
                                "median_of_round_ratios": round(statistics.median(
                                    a / b for a, b in zip(cpu[OFF], cpu[target], strict=True)),
                                    3)}
                         for name, target in (("on", BASE_ON), ("traced", BASE_TRACED))}}


def _by_thread(rows: list[dict[str, Any]], targets: list[str]) -> dict[str, dict[str, float]]:
    """Per target, the median CPU µs per request or run of each kind of thread (a kind a
    round did not see counts 0 there) and their sum."""
    found: dict[str, dict[str, float]] = {}
    for target in targets:
        split = [r["server_cpu_us_by_thread"] for r in rows if r["target"] == target]
        kinds = sorted({kind for one in split for kind in one})
        found[target] = {kind: round(statistics.median(one.get(kind, 0.0) for one in split), 1)
                         for kind in kinds}
        found[target]["all"] = round(statistics.median(sum(one.values()) for one in split), 1)
    return found


def show_threads(split: dict[str, dict[str, float]], unit: str) -> None:
    """The per-thread medians as a table: a row per target, the busiest kinds first."""
    kinds = sorted({k for one in split.values() for k in one if k != "all"},
                   key=lambda k: -max(one.get(k, 0.0) for one in split.values()))
    shown = [k for k in kinds if max(one.get(k, 0.0) for one in split.values()) >= 0.5]
    rest = [k for k in kinds if k not in shown]
    header = ["target", *shown, *(["others"] if rest else []), "all"]
    rows = [[target, *(f"{one.get(k, 0.0):.1f}" for k in shown),
             *([f"{sum(one.get(k, 0.0) for k in rest):.1f}"] if rest else []),
             f"{one['all']:.1f}"] for target, one in split.items()]
    print_table(f"server CPU by thread, µs per {unit} (medians of rounds)", rows, header)


def _cpu_ratios(cpu: dict[str, list[float]]) -> dict[str, Any]:
    """Throughput each target's CPU per request or run allows, against "off": off's median
    CPU over theirs (the steadier figure on a shared machine), and the median of the same
    ratio per round."""
    def ratio(target: str, base: str = OFF) -> dict[str, float]:
        return {"of_medians": round(statistics.median(cpu[base]) / statistics.median(cpu[target]),
                                    3),
                "median_of_round_ratios": round(statistics.median(
                    a / b for a, b in zip(cpu[base], cpu[target], strict=True)), 3)}

    return {"on": ratio(ON), "traced": ratio(TRACED), "alone": ratio(ALONE),
            "traced_on": ratio(TRACED, ON)}


def p1(rounds: int, seconds: float, base: str | None = None
       ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import msgspec

    targets = [OFF, ON, TRACED, ALONE]
    if base is not None:
        SERVERS[BASE_ON] = partial(sqlite_server, None, OBSERVED, base)
        SERVERS[BASE_TRACED] = partial(sqlite_server, "traced", OBSERVED, base)
        targets += [BASE_ON, BASE_TRACED]
    plan = Plan(name="p10_observe_p1", targets=targets,
                body=msgspec.json.encode(EVENT),
                events_per_request=1, rounds=rounds, seconds=seconds, warmup_seconds=2.0,
                connections=32)
    run_plan(plan)
    by = {t: [r.req_per_s for r in plan.results if r.target == t] for t in plan.targets}
    cpu = {t: [r.server_cpu_us_per_request for r in plan.results if r.target == t]
           for t in plan.targets}
    rows = [{"bench": "p1", "target": r.target, "round": r.index, "per_s": r.req_per_s,
             "server_cpu_us": r.server_cpu_us_per_request,
             "server_cpu_us_by_thread": r.server_cpu_us_by_thread, "load_before": r.load_before}
            for r in plan.results]
    summary = {**_ratios(by[OFF], by[ON]), "unit": "req/s",
               "traced": _ratios(by[OFF], by[TRACED], GOAL_TRACED),
               "alone": _ratios(by[OFF], by[ALONE], GOAL_TRACED),
               "traced_on": _ratios(by[ON], by[TRACED], GOAL_TRACED),
               "server_cpu_us_per_request": {t: statistics.median(cpu[t]) for t in cpu},
               "server_cpu_us_by_thread": _by_thread(rows, plan.targets),
               "cpu": _cpu_ratios(cpu), **_base_ratios(by, cpu)}
    return rows, summary


def p3(rounds: int, n: int, base: str | None = None
       ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows = []
    plan: list[tuple[str, tuple[str, ...], str | None, str | None]] = [
        (OFF, UNOBSERVED, None, None), (ON, OBSERVED, None, None),
            (TRACED, OBSERVED, "traced", None), (ALONE, UNOBSERVED, "traced", None)]
    if base is not None:
        plan += [(BASE_ON, OBSERVED, None, base), (BASE_TRACED, OBSERVED, "traced", base)]
    for index in range(1, rounds + 1):
        for target, options, variant, src in in_turn(plan, index):
            before = load()
            result = tidings_round("sqlite", n, 1, options=options, variant=variant, src=src)
            rows.append({"bench": "p3", "target": target, "round": index,
                         "per_s": result["per_s"],
                         "server_cpu_us": result["server_cpu_us_per_run"],
                         "server_cpu_us_by_thread": result["server_cpu_us_per_run_by_thread"],
                         "load_before": before})
            print(f"  p3 round {index} {target:<18} {result['per_s']:>9,.0f} runs/s  server "
                  f"CPU {result['server_cpu_us_per_run']:,.0f} us/run  load {before}",
                  flush=True)
    targets = [target for target, *_ in plan]
    by = {t: [r["per_s"] for r in rows if r["target"] == t] for t in targets}
    cpu = {t: [r["server_cpu_us"] for r in rows if r["target"] == t] for t in targets}
    return rows, {**_ratios(by[OFF], by[ON]), "unit": "runs/s",
                  "traced": _ratios(by[OFF], by[TRACED], GOAL_TRACED),
                  "alone": _ratios(by[OFF], by[ALONE], GOAL_TRACED),
                  "traced_on": _ratios(by[ON], by[TRACED], GOAL_TRACED),
                  "server_cpu_us_per_run": {t: statistics.median(cpu[t]) for t in cpu},
                  "server_cpu_us_by_thread": _by_thread(rows, targets),
                  "cpu": _cpu_ratios(cpu), **_base_ratios(by, cpu)}


def main(argv: list[str] | None = None) -> int:
    parser = alternating.parser("p10_observe", __doc__, seconds="P1", only="p1,p3")
    parser.add_argument("--base-src", type=Path, default=None, metavar="DIR",
                        help="another checkout's src: its on and traced as more targets")
    args = parser.parse_args(argv)
    base = None
    if args.base_src is not None:
        base = str(args.base_src.resolve())
        if not os.path.isdir(os.path.join(base, "tidings")):
            parser.error(f"--base-src {base}: no tidings package there")
    pin_self()
    report = Report("p10_observe", {"rounds": args.rounds, "p1_seconds": args.seconds,
                                    "p3_n": args.n, "off": list(UNOBSERVED),
                                    "on": list(OBSERVED), "base_src": base or ""})

    def part(name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        return (p1(args.rounds, args.seconds, base) if name == "p1"
                else p3(args.rounds, args.n, base))

    def show(name: str, summary: dict[str, Any]) -> None:
        print(f"  {name}: on/off {summary['ratio_of_medians']} (medians), "
              f"{summary['median_of_round_ratios']} (per round); goal >= {GOAL}")
        traced = summary["traced"]
        print(f"  {name}: traced/off {traced['ratio_of_medians']} (medians), "
              f"{traced['median_of_round_ratios']} (per round)")
        for key, label in (("alone", "tracing alone/off"), ("traced_on", "traced/on")):
            print(f"  {name}: {label} {summary[key]['ratio_of_medians']} (medians), "
                  f"{summary[key]['median_of_round_ratios']} (per round); goal >= {GOAL_TRACED}")
        cpu = summary["cpu"]
        print(f"  {name}: by server CPU, on/off {cpu['on']['of_medians']} (medians), "
              f"{cpu['on']['median_of_round_ratios']} (per round); traced/off "
              f"{cpu['traced']['of_medians']}, {cpu['traced']['median_of_round_ratios']}; "
              f"tracing alone/off {cpu['alone']['of_medians']}, "
              f"{cpu['alone']['median_of_round_ratios']}; traced/on "
              f"{cpu['traced_on']['of_medians']}, {cpu['traced_on']['median_of_round_ratios']}")
        show_threads(summary["server_cpu_us_by_thread"], "request" if name == "p1" else "run")
        if base is not None:
            on, traced, by_cpu = summary["base_on"], summary["base_traced"], summary["base_cpu"]
            print(f"  {name} base: on/off {on['ratio_of_medians']}, "
                  f"{on['median_of_round_ratios']}; traced/off {traced['ratio_of_medians']}, "
                  f"{traced['median_of_round_ratios']}; by server CPU on/off "
                  f"{by_cpu['on']['of_medians']}, traced/off {by_cpu['traced']['of_medians']}")

    return alternating.run_parts("P10", "observability off vs on", args, report, part, show)


if __name__ == "__main__":
    sys.exit(main())
