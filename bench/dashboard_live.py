"""The dashboard's live pages: what open pages cost an idle server, and what 20 open and
streaming dashboards cost ingest (issue 13).

- ``idle``: ``tidings dev`` (SQLite, or PostgreSQL with ``--postgres``) holding ``--fill``
  events and as many completed runs, with no traffic and
  ``--pages`` open live pages (half the events list, half the runs list, each an SSE stream
  read by a client process on the other core): the server's CPU over ``--seconds``, against
  the same server with no page open. ``--tidings PATH`` runs another build (the one before
  pages were woken by commits, to compare).
- ``load``: P1 (single-event ``POST /e/{key}``, 32 connections, wrk) and P3 (event → 1-step
  function completed, 500-event requests) on ``tidings dev`` (SQLite, or PostgreSQL with
  ``--postgres``; observability off), with ``--pages`` dashboards open and streaming and with
  none, in alternating rounds. Goal: with/without >= 0.95 for both (within 5 %).
- ``pages URL N``: the client the others start: N streams, read as fast as they come, until
  SIGTERM; prints how many messages and bytes they received.

``python -m bench.dashboard_live idle [--pages 20] [--seconds 30] [--fill 10000]
[--postgres] [--tidings PATH]``; ``python -m bench.dashboard_live load [--rounds 6] [--seconds 8]
[--n 15000] [--pages 20] [--only p1,p3] [--postgres] [--base-src DIR]``

Each client stream first gets its page, as a browser does (the server compiles the templates
the stream renders then, not inside a measured round). The machine is shared: the summary gives
the ratio of medians and the median of per-round ratios (each pair of rounds saw the same
neighbours), and for P3 the server's CPU per run, whole and by thread, against none (steadier
than a round's throughput); ``--base-src`` (another checkout's ``src``) adds P3 with dashboards
open on that code to the same rounds, before and after in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from bench.engine import APP, Report, load, pin_self, post_all, tidings_dev, wait_until
from bench.harness import (
    PG_URL,
    SERVERS,
    UNOBSERVED,
    WRK_CPU,
    BenchError,
    Plan,
    Server,
    in_turn,
    pinned,
    postgres_server,
    run_plan,
    sqlite_server,
)
from bench.p1_ingest import EVENT
from bench.p3_throughput import _bodies, tidings_round
from bench.p10_observe import _by_thread, show_threads

GOAL = 0.95
BASE = "base-dashboards"  # P3 with dashboards open on another checkout's code (--base-src)
PATHS = ("/live/events", "/live/runs")
PAGE_OF = {"/live/events": "/", "/live/runs": "/runs"}  # the page that opens each stream


# -- the client: N open pages ------------------------------------------------------------------


async def _read(base: str, path: str, got: dict[str, int], stop: asyncio.Event,
                all_open: asyncio.Event, n: int) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=None) as http:
        # As a browser does: the page first (which draws the rows the stream then sends, so
        # the server has its templates compiled before the round measures), then its stream.
        page = await http.get(base + PAGE_OF[path])
        if page.status_code != 200:
            raise BenchError(f"{PAGE_OF[path]}: {page.status_code}")
        async with http.stream("GET", base + path) as r:
            if r.status_code != 200:
                raise BenchError(f"{path}: {r.status_code}")
            await _take(r, got, stop, all_open, n)


async def _take(r: Any, got: dict[str, int], stop: asyncio.Event, all_open: asyncio.Event,
                n: int) -> None:
    got["open"] += 1
    if got["open"] == n:
        all_open.set()
    async for chunk in r.aiter_bytes():
        got["bytes"] += len(chunk)
        got["messages"] += chunk.count(b"\n\n")
        if stop.is_set():
            return


async def _pages(base: str, n: int) -> dict[str, int]:
    got = {"open": 0, "messages": 0, "bytes": 0}
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    all_open = asyncio.Event()
    tasks = [asyncio.create_task(_read(base, PATHS[i % len(PATHS)], got, stop, all_open, n))
             for i in range(n)]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_open.wait(), 30)
    print(json.dumps({"ready": got["open"]}), flush=True)  # the parent goes on
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return got


@contextlib.contextmanager
def pages(base: str, n: int) -> Iterator[dict[str, int]]:
    """``n`` open pages of the server at ``base`` (a client process on wrk's core), their
    totals filled in when they close."""
    totals: dict[str, int] = {}
    if n == 0:
        yield totals
        return
    process = subprocess.Popen(
        pinned(WRK_CPU, [sys.executable, "-m", "bench.dashboard_live", "pages", base, str(n)]),
        stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent)
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline() or b'{"ready": 0}')["ready"]
        if ready != n:
            raise BenchError(f"only {ready} of {n} pages opened")
        yield totals
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
        lines = out.decode().strip().splitlines()
        if lines:
            totals.update(json.loads(lines[-1]))


# -- idle --------------------------------------------------------------------------------------


def idle(args: argparse.Namespace) -> dict[str, Any]:
    kind = "postgres" if args.postgres else "sqlite"
    figures: dict[str, list[float]] = {"none": [], "open": []}
    binary = {"binary": args.tidings} if args.tidings else {}
    for index in range(1, args.rounds + 1):
        for label, n in (("none", 0), ("open", args.pages)):
            with tidings_dev(kind, args=("-a", APP, *UNOBSERVED), **binary) as engine:
                if args.fill:  # events and their completed runs for the pages to read
                    fn = engine.function_id("p3-noop")
                    post_all(engine.port, _bodies(args.fill, "fill"))
                    wait_until("the runs", lambda fn=fn: int(engine.scalar(
                        "SELECT count(*) FROM runs WHERE function_id = ? AND status = "
                        "'Completed'", (fn,))) >= args.fill, timeout=300)
                time.sleep(3)  # start-up done
                base = f"http://127.0.0.1:{engine.port}"
                with pages(base, n) as got:
                    time.sleep(2)  # the pages' first reads
                    before = engine.cpu_seconds()
                    time.sleep(args.seconds)
                    cpu = engine.cpu_seconds() - before
            percent = 100 * cpu / args.seconds
            figures[label].append(percent)
            print(f"  idle {kind} round {index} {label:<5} pages {n:>3}: server CPU "
                  f"{percent:.2f} %  ({got.get('messages', 0)} messages)  load {load()}",
                  flush=True)
    none, opened = statistics.median(figures["none"]), statistics.median(figures["open"])
    return {"kind": kind, "pages": args.pages, "seconds": args.seconds,
            "cpu_percent_none": round(none, 2), "cpu_percent_open": round(opened, 2),
            "cpu_percent_per_page": round((opened - none) / args.pages, 3),
            "rounds": figures}


# -- load: P1 and P3 with dashboards open ------------------------------------------------------


@contextlib.contextmanager
def _with_pages(kind: str, n: int) -> Iterator[Server]:
    with _server(kind) as server, pages(f"http://127.0.0.1:{server.port}", n):
        yield server


def _server(kind: str) -> contextlib.AbstractContextManager[Server]:
    return (sqlite_server(None, UNOBSERVED) if kind == "sqlite"
            else postgres_server(UNOBSERVED))


def _targets(kind: str) -> tuple[str, str]:
    """The names of the runs without and with dashboards open."""
    return f"{kind}-unobserved", f"{kind}-dashboards"


def _ratios(none: list[float], opened: list[float]) -> dict[str, Any]:
    per_round = statistics.median(b / a for a, b in zip(none, opened, strict=True))
    return {"none_median": round(statistics.median(none), 1),
            "open_median": round(statistics.median(opened), 1),
            "ratio_of_medians": round(statistics.median(opened) / statistics.median(none), 3),
            "median_of_round_ratios": round(per_round, 3), "goal": GOAL,
            "met": per_round >= GOAL}


def p1(kind: str, rounds: int, seconds: float, n: int
       ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import msgspec

    NONE, OPEN = _targets(kind)
    SERVERS[NONE] = partial(_server, kind)
    SERVERS[OPEN] = partial(_with_pages, kind, n)
    plan = Plan(name="dashboard_live_p1", targets=[NONE, OPEN], body=msgspec.json.encode(EVENT),
                events_per_request=1, rounds=rounds, seconds=seconds, warmup_seconds=2.0,
                connections=32)
    run_plan(plan)
    by = {t: [r.req_per_s for r in plan.results if r.target == t] for t in plan.targets}
    cpu = {t: statistics.median(r.server_cpu_us_per_request for r in plan.results
                                if r.target == t) for t in plan.targets}
    rows = [{"bench": "p1", "target": r.target, "round": r.index, "per_s": r.req_per_s,
             "server_cpu_us": r.server_cpu_us_per_request, "load_before": r.load_before}
            for r in plan.results]
    return rows, {**_ratios(by[NONE], by[OPEN]), "unit": "req/s",
                  "server_cpu_us_per_request": {"none": cpu[NONE], "open": cpu[OPEN]}}


def p3(kind: str, rounds: int, n: int, pages_open: int, base: str | None = None
       ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """P3 rounds without and with dashboards open (and with ``base``, another checkout's
    ``src``, with dashboards open as a third target), alternating. The summary gives
    throughput ratios and CPU per run, whole and by thread (``bench.harness.threads_cpu``):
    a P3 round lasts a few seconds, so throughput swings with the neighbours, while the
    server's CPU per run, steadier, shows what the open pages cost."""
    NONE, OPEN = _targets(kind)
    plan: list[tuple[str, int, str | None]] = [(NONE, 0, None), (OPEN, pages_open, None)]
    if base is not None:
        plan.append((BASE, pages_open, base))
    rows = []
    for index in range(1, rounds + 1):
        for target, count, src in in_turn(plan, index):
            before = load()
            result = tidings_round(kind, n, 1, options=UNOBSERVED,
                                   beside=partial(_beside, count), src=src)
            rows.append({"bench": "p3", "target": target, "round": index,
                         "per_s": result["per_s"],
                         "server_cpu_us": result["server_cpu_us_per_run"],
                         "server_cpu_us_by_thread": result["server_cpu_us_per_run_by_thread"],
                         "load_before": before})
            print(f"  p3 round {index} {target:<18} {result['per_s']:>9,.0f} runs/s  server "
                  f"CPU {result['server_cpu_us_per_run']:,.0f} us/run  load {before}",
                  flush=True)
    targets = [target for target, _, _ in plan]
    by = {t: [r["per_s"] for r in rows if r["target"] == t] for t in targets}
    cpu = {t: [r["server_cpu_us"] for r in rows if r["target"] == t] for t in targets}
    split = _by_thread(rows, targets)
    show_threads(split, "run")
    summary = {**_ratios(by[NONE], by[OPEN]), "unit": "runs/s",
               "server_cpu_us_per_run": {t: statistics.median(cpu[t]) for t in targets},
               "cpu": _cpu_ratio(cpu[NONE], cpu[OPEN]),
               "server_cpu_us_by_thread": split}
    if base is not None:
        summary["base"] = {**_ratios(by[NONE], by[BASE]), "cpu": _cpu_ratio(cpu[NONE], cpu[BASE])}
    return rows, summary


def _cpu_ratio(none: list[float], opened: list[float]) -> dict[str, Any]:
    """The throughput the CPU per run allows with pages open, against none: none's CPU over
    theirs, of the medians and the median of the rounds' (a ratio under 1 is a cost)."""
    per_round = statistics.median(a / b for a, b in zip(none, opened, strict=True))
    return {"of_medians": round(statistics.median(none) / statistics.median(opened), 3),
            "median_of_round_ratios": round(per_round, 3), "met": per_round >= GOAL}


def _beside(n: int, port: int) -> contextlib.AbstractContextManager[dict[str, int]]:
    return pages(f"http://127.0.0.1:{port}", n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard_live")
    sub = parser.add_subparsers(dest="what", required=True)
    client = sub.add_parser("pages")
    client.add_argument("base")
    client.add_argument("n", type=int)
    at_rest = sub.add_parser("idle")
    at_rest.add_argument("--pages", type=int, default=20)
    at_rest.add_argument("--seconds", type=float, default=30)
    at_rest.add_argument("--rounds", type=int, default=2)
    at_rest.add_argument("--postgres", action="store_true")
    at_rest.add_argument("--fill", type=int, default=10_000,
                         help="events (each a completed run) stored before measuring")
    at_rest.add_argument("--tidings", default=None)
    busy = sub.add_parser("load")
    busy.add_argument("--rounds", type=int, default=6)
    busy.add_argument("--seconds", type=float, default=8)
    busy.add_argument("--n", type=int, default=15_000,
                      help="P3 runs per round (at 8,000 runs/s, 5,000 was a round under a "
                      "second: its throughput swung with every neighbour)")
    busy.add_argument("--pages", type=int, default=20)
    busy.add_argument("--only", default="p1,p3")
    busy.add_argument("--postgres", action="store_true")
    busy.add_argument("--base-src", type=Path, default=None, metavar="DIR",
                      help="another checkout's src: P3 with dashboards open on it, a third "
                      "target in the same alternating rounds")
    args = parser.parse_args(argv)
    if args.what == "pages":
        print(json.dumps(asyncio.run(_pages(args.base, args.n))), flush=True)
        return 0
    pin_self()
    report = Report("dashboard_live", {"what": args.what, **{
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
        if k != "what"}, "postgres": PG_URL})
    if args.what == "idle":
        report.summary = idle(args)
    else:
        only = set(args.only.split(","))
        kind = "postgres" if args.postgres else "sqlite"
        if "p1" in only:
            rows, report.summary["p1"] = p1(kind, args.rounds, args.seconds, args.pages)
            report.rounds.extend(rows)
        if "p3" in only:
            base = None if args.base_src is None else str(args.base_src.resolve())
            rows, report.summary["p3"] = p3(kind, args.rounds, args.n, args.pages, base)
            report.rounds.extend(rows)
    print(json.dumps(report.summary, indent=2))
    print(f"saved {report.save()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
