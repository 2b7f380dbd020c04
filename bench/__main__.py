"""``python -m bench [p1 ... p10] [crash]``: the benchmarks named (default: P1-P10), one after
the other. P1/P2 measure ingest; P3-P6 the engine, beside Celery and DBOS where they have a
peer; P7 an Inngest SDK app over HTTP beside the same function native; P8 the cost of flow
control; P9 overload (ten times the sustainable rate: shed, don't drown); P10 the cost of
metrics and logs. ``crash`` (by name
only) kills processes during 2,000 runs and counts what survived."""

from __future__ import annotations

import sys

from bench import (
    crash,
    p1_ingest,
    p2_batch,
    p3_throughput,
    p4_latency,
    p5_steps,
    p6_pending,
    p7_http,
    p8_flow,
    p9_overload,
    p10_observe,
)

BENCHMARKS = {"p1": p1_ingest, "p2": p2_batch, "p3": p3_throughput, "p4": p4_latency,
              "p5": p5_steps, "p6": p6_pending, "p7": p7_http, "p8": p8_flow,
              "p9": p9_overload, "p10": p10_observe}
BY_NAME_ONLY = {"crash": crash}


def main(argv: list[str] | None = None) -> int:
    names = [n.lower() for n in (sys.argv[1:] if argv is None else argv)] or list(BENCHMARKS)
    known = {**BENCHMARKS, **BY_NAME_ONLY}
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"unknown benchmarks: {', '.join(unknown)} (choose from "
              f"{', '.join(known)})", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        failed |= known[name].main([])
        print()
    return failed


if __name__ == "__main__":
    sys.exit(main())
