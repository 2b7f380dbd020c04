"""The command line and the loop shared by the benchmarks that compare one setting off and on
in alternating rounds (``p10_observe``, ``p12_sealing``): the same options, each part named by
``--only`` measured in turn, its rows and summary kept in the report, which is saved at the end
(nothing is saved when a part fails)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from bench.engine import Report
from bench.harness import BenchError

Part = Callable[[str], tuple[list[dict[str, Any]], dict[str, Any]]]


def parser(module: str, doc: str | None, *, seconds: str, only: str) -> argparse.ArgumentParser:
    """``--rounds``, ``--seconds`` (``seconds`` says of which parts), ``--n`` (P3's runs) and
    ``--only`` (default ``only``), for ``python -m bench.<module>``."""
    found = argparse.ArgumentParser(prog=f"python -m bench.{module}", description=doc,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    found.add_argument("--rounds", type=int, default=4)
    found.add_argument("--seconds", type=float, default=8.0, help=f"{seconds} measured seconds")
    found.add_argument("--n", type=int, default=5_000, help="P3 runs per round")
    found.add_argument("--only", default=only)
    return found


def run_parts(title: str, what: str, args: argparse.Namespace, report: Report, part: Part,
              show: Callable[[str, dict[str, Any]], None]) -> int:
    """Measure each part of ``args.only`` with ``part(name)`` (its rows and summary), print
    its summary with ``show``; the exit status."""
    try:
        for name in args.only.split(","):
            print(f"{title} {name}: {what}, {args.rounds} alternating rounds")
            rows, summary = part(name)
            report.rounds.extend(rows)
            report.summary[name] = summary
            show(name, summary)
    except BenchError as exc:
        print(f"{title} failed: {exc}", file=sys.stderr)
        return 1
    print(f"results: {report.save()}")
    return 0
