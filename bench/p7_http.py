"""P7: end-to-end runs per second of a 1-step function called over HTTP in an app written with
the official ``inngest`` Python SDK, beside the same function as a native Tidings function; and
of ``http-parallel``, a function of the same app with a parallel group of two steps followed by
two steps, with the calls the app answers per run.

Native: ``tidings dev -a bench.apps:client`` (SQLite), P3's ``bench-p3-noop``, run in the
server process. HTTP: ``bench.inngest_app`` — the same function written with ``inngest`` 0.5
and served by FastAPI under uvicorn (uvloop, httptools, access log off) in a process of its
own — synced with ``tidings dev -u URL --no-discovery``; each run is two calls of the app (the
step runs and is answered with a 206, then the function returns with a 200). An
``http-parallel`` run is six: the group is planned, its two steps run on calls of their own,
each later step runs in the call that finds it, and the last call returns.

Placement: the Tidings server on core 0 (``TIDINGS_BENCH_SERVER_CPU``); this process (sender,
poller) and the SDK app on core 1 (``TIDINGS_BENCH_WRK_CPU``, ``TIDINGS_BENCH_APP_CPU``).
Each round starts a fresh server on a fresh SQLite file (and a fresh app), runs a 500-run
warm-up, then posts N events as 500-event requests on one keep-alive connection; measured from
just before the first request to the ``ended_at`` of the last run, all N checked
``Completed``. Targets alternate round by round.

Where the time goes: the CPU seconds (user + system, ``/proc``) that the server and the app
use while the N runs go through, per run and as a share of the elapsed time, and the time they
spent ready to run but waiting for a core (``schedstat``: the neighbours on a shared machine).
Each has a core of its own, so the one that needs more CPU per run limits the HTTP path.
``--profile DIR`` runs both under ``py-spy record`` (``python -m bench.pyspy_summary
DIR/p7-http-r1.txt`` for the server, ``DIR/p7-http-r1-app.txt`` for the app).

``--base-src DIR`` adds, for each HTTP target, the same round with the server's code taken from
``DIR`` (the ``src`` of another checkout: ``TARGET@base``), alternating with it, to compare a
change with what it changes.

``connect``: the same function in ``bench.inngest_connect_app``, a worker that dials out to the
gateway (Connect) instead of serving HTTP, pinned like the SDK app; each run is two calls down
its socket. The summary gives its runs/s and server CPU per run beside HTTP's.

``python -m bench.p7_http [--n 10000] [--rounds 3] [--only native,http,http-parallel,connect]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.engine import (
    ROOT,
    Engine,
    Report,
    bench_env,
    check_log,
    child_pid,
    cpu_seconds,
    encode,
    load,
    median_of,
    pin_self,
    post_all,
    profile_option,
    profile_path,
    py_spy,
    python,
    runnable_wait_seconds,
    stop_process,
    tidings_dev,
    wait_ready,
    wait_until,
)
from bench.harness import WRK_CPU, BenchError, free_port, pinned, print_table
from bench.p3_throughput import BATCH

APP_CPU = os.environ.get("TIDINGS_BENCH_APP_CPU", WRK_CPU)
APP_MODULE = "bench.inngest_app:app"
CONNECT_MODULE = "bench.inngest_connect_app"
TARGETS = ["native", "http", "http-parallel", "connect"]
# bench-p3-noop, bench-sdk-p3-noop, bench-sdk-p7-parallel, bench-connect-p3-noop
FUNCTION = {"native": "p3-noop", "http": "sdk-p3-noop", "http-parallel": "sdk-p7-parallel",
            "connect": "connect-p3-noop"}
EVENT = {"native": "bench/p3.noop", "http": "bench/p3.noop",
         "http-parallel": "bench/p7.parallel", "connect": "bench/p3.noop"}


# -- the SDK app -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SdkApp:
    url: str  # the SDK endpoint, as synced ("" for a Connect worker)
    pid: int  # uvicorn's (not py-spy's when profiled)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def waited_seconds(self) -> float:
        return runnable_wait_seconds(self.pid)

    def calls(self) -> int | None:
        """The calls (``POST``) the app has answered (None: a Connect worker, not counted)."""
        if not self.url:
            return None
        with urllib.request.urlopen(self.url.replace("/api/inngest", "/requests"),
                                    timeout=10) as answer:
            return int(json.load(answer)["calls"])


@contextlib.contextmanager
def connect_worker(server_port: int, *, profile: Path | None = None) -> Iterator[SdkApp]:
    """``bench.inngest_connect_app``, in dev mode, dialling the server on ``server_port``."""
    with tempfile.TemporaryDirectory(prefix="tidings-bench-connect-") as tmp:
        log = Path(tmp) / "worker.log"
        env = {k: v for k, v in bench_env().items() if not k.startswith("INNGEST_")}
        env.update(INNGEST_DEV="1", INNGEST_BASE_URL=f"http://127.0.0.1:{server_port}")
        argv = py_spy(profile, [python(), "-m", CONNECT_MODULE])
        with log.open("wb") as out:
            process = subprocess.Popen(pinned(APP_CPU, argv), env=env, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=ROOT)
        try:
            pid = child_pid(process.pid) if profile is not None else process.pid
            yield SdkApp("", pid)
        finally:
            stop_process(process)
        check_log(log, "the Connect worker")


def _connected(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/apps", timeout=10) as answer:
        apps = json.load(answer)["data"]
    return any(app["app_id"] == "bench-connect" and app["connections"] for app in apps)


@contextlib.contextmanager
def sdk_app(server_port: int, *, profile: Path | None = None) -> Iterator[SdkApp]:
    """``bench.inngest_app`` under uvicorn, in dev mode, pointed at the server's port."""
    with tempfile.TemporaryDirectory(prefix="tidings-bench-app-") as tmp:
        port = free_port()
        log = Path(tmp) / "app.log"
        env = {k: v for k, v in bench_env().items() if not k.startswith("INNGEST_")}
        env.update(INNGEST_DEV="1", INNGEST_BASE_URL=f"http://127.0.0.1:{server_port}")
        argv = py_spy(profile, [python(), "-m", "uvicorn", APP_MODULE, "--host", "127.0.0.1",
                                "--port", str(port), "--loop", "uvloop", "--http", "httptools",
                                "--no-access-log", "--log-level", "warning"])
        with log.open("wb") as out:
            process = subprocess.Popen(pinned(APP_CPU, argv), env=env, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=ROOT)
        try:
            wait_ready(process, port, log, path="/api/inngest", what="the SDK app", timeout=30.0)
            pid = child_pid(process.pid) if profile is not None else process.pid
            yield SdkApp(f"http://127.0.0.1:{port}/api/inngest", pid)
        finally:
            stop_process(process)
        check_log(log, "the SDK app")


# -- one round ---------------------------------------------------------------------------------


def _bodies(event: str, n: int, round_tag: str) -> list[bytes]:
    return [encode([{"name": event, "data": {"round": round_tag, "i": i + j}}
                    for j in range(min(BATCH, n - i))]) for i in range(0, n, BATCH)]


@contextlib.contextmanager
def target_stack(target: str, profile: Path | None,
                 base_src: Path | None = None) -> Iterator[tuple[Engine, SdkApp | None]]:
    """A fresh server (and, for the HTTP targets, a fresh SDK app synced to it); with
    ``base_src``, the server runs the code in that folder."""
    extra_env = None if base_src is None else {
        "PYTHONPATH": os.pathsep.join([str(base_src), str(ROOT)])}
    if target == "native":
        with tidings_dev("sqlite", profile=profile, extra_env=extra_env) as engine:
            yield engine, None
        return
    if target == "connect":
        with tidings_dev("sqlite", profile=profile, extra_env=extra_env,
                         args=["--no-discovery", "--connect-gateway-port", "0"]) as engine, \
                connect_worker(engine.port, profile=app_profile_of(profile)) as worker:
            wait_until("the Connect worker to connect", lambda: _connected(engine.port),
                       timeout=60)
            yield engine, worker
        return
    server_port = free_port()
    with sdk_app(server_port, profile=app_profile_of(profile)) as app, tidings_dev(
            "sqlite", port=server_port, profile=profile, extra_env=extra_env,
            args=["-u", app.url, "--no-discovery"]) as engine:
        slug = f"bench-{FUNCTION[target]}"
        wait_until("the SDK app to sync", lambda: engine.scalar(
            "SELECT id FROM functions WHERE slug = ?", (slug,)) is not None, timeout=30)
        yield engine, app


def app_profile_of(profile: Path | None) -> Path | None:
    return profile.with_name(profile.stem + "-app.txt") if profile else None


def run_round(target: str, n: int, connections: int, profile: Path | None = None,
              base_src: Path | None = None) -> dict[str, Any]:
    with target_stack(target, profile, base_src) as (engine, app):
        fn = engine.function_id(FUNCTION[target])

        def completed() -> int:
            return int(engine.scalar(
                "SELECT count(*) FROM runs WHERE function_id = ? AND status = 'Completed'",
                (fn,)))

        def cpu() -> tuple[float, float, float, float, float]:
            """CPU used, and time spent waiting for a core, by the server and the app; CPU used
            by this process (sender and poller, on the app's core)."""
            return (engine.cpu_seconds(), app.cpu_seconds() if app else 0.0,
                    runnable_wait_seconds(engine.pid), app.waited_seconds() if app else 0.0,
                    time.process_time())

        warmup = BATCH
        post_all(engine.port, _bodies(EVENT[target], warmup, "warmup"))
        wait_until("the warm-up runs", lambda: completed() >= warmup, timeout=120)
        calls_before = app.calls() if app else None
        before = cpu()
        started = time.time()
        post_all(engine.port, _bodies(EVENT[target], n, "measured"), connections)
        acked = time.time()
        wait_until(f"{n} runs to complete", lambda: completed() >= warmup + n,
                   timeout=max(300, n / 20))
        seen = time.time()
        after = cpu()
        calls_after = app.calls() if app else None
        calls = (calls_after - calls_before
                 if calls_after is not None and calls_before is not None else None)
        ended_ms = engine.completed_runs(fn, warmup + n, target)
    elapsed = ended_ms / 1000 - started
    # CPU is read when the poller saw the last run (up to one poll after it ended).
    window = seen - started
    server_cpu, app_cpu, server_wait, app_wait, own_cpu = (
        b - a for a, b in zip(before, after, strict=True))
    result: dict[str, Any] = {
        "n": n, "seconds": round(elapsed, 4), "per_s": round(n / elapsed, 1),
        "ingest_seconds": round(acked - started, 4),
        "server_cpu_us_per_run": round(server_cpu / n * 1e6, 1),
        "server_busy": round(server_cpu / window, 3),
        "server_waiting": round(server_wait / window, 3),
        "loadgen_busy": round(own_cpu / window, 3)}
    if calls is not None:
        result.update(calls_per_run=round(calls / n, 3))
    if app is not None:
        result.update(app_cpu_us_per_run=round(app_cpu / n * 1e6, 1),
                      app_busy=round(app_cpu / window, 3),
                      app_waiting=round(app_wait / window, 3))
    return result


# -- the plan ----------------------------------------------------------------------------------


def summarize(report: Report, targets: list[str]) -> dict[str, Any]:
    keys = ("per_s", "seconds", "server_cpu_us_per_run", "server_busy", "server_waiting",
            "calls_per_run", "app_cpu_us_per_run", "app_busy", "app_waiting")
    medians: dict[str, dict[str, float]] = {}
    for target in targets:
        rounds = [r for r in report.rounds if r["target"] == target]
        medians[target] = {k: median_of(rounds, k) for k in keys if k in rounds[0]}
    loads = [r["load_before"] for r in report.rounds]
    summary: dict[str, Any] = {"medians": medians,
                               "load_before": {"median": statistics.median(loads),
                                               "min": min(loads), "max": max(loads)}}
    if "http" in medians:
        http = medians["http"]
        # Each process has a core of its own: the one that needs more CPU per run sets the
        # ceiling of the HTTP path (runs/s if that process had its core to itself).
        ceilings = {"tidings server": 1e6 / http["server_cpu_us_per_run"],
                    "sdk app": 1e6 / http["app_cpu_us_per_run"]}
        summary["http_ceilings_per_s"] = {k: round(v, 1) for k, v in ceilings.items()}
        summary["http_limited_by"] = min(ceilings, key=lambda k: ceilings[k])
    if "connect" in medians and "http" in medians:
        summary["ratio_connect_http"] = round(medians["connect"]["per_s"]
                                              / medians["http"]["per_s"], 3)
        summary["connect_server_cpu_vs_http"] = round(
            medians["connect"]["server_cpu_us_per_run"] / medians["http"]["server_cpu_us_per_run"],
            3)
    if "native" in medians and "http" in medians:
        by_round = {(r["target"], r["round"]): r["per_s"] for r in report.rounds}
        pairs = [by_round[("http", i)] / by_round[("native", i)]
                 for (t, i) in by_round if t == "http" and ("native", i) in by_round]
        summary["ratio_http_native"] = round(medians["http"]["per_s"]
                                             / medians["native"]["per_s"], 3)
        summary["ratio_http_native_per_round_median"] = round(statistics.median(pairs), 3)
    # Each target beside its run on the base code (``--base-src``): runs/s after / before.
    summary["ratio_to_base"] = {
        target: round(medians[target]["per_s"] / medians[f"{target}@base"]["per_s"], 3)
        for target in targets if f"{target}@base" in medians}
    return summary


def _cpu(figures: dict[str, Any], who: str) -> str:
    return (f"{figures[f'{who}_cpu_us_per_run']:,.0f} us/run ({figures[f'{who}_busy']:.0%} busy, "
            f"{figures[f'{who}_waiting']:.0%} waiting)")


def _print_round(result: dict[str, Any]) -> None:
    calls = (f", {result['calls_per_run']:g} calls/run" if "calls_per_run" in result else "")
    app = f"  app {_cpu(result, 'app')}{calls}" if "app_cpu_us_per_run" in result else ""
    print(f"  round {result['round']} {result['target']:<6} {result['per_s']:>8,.0f} runs/s "
          f"({result['n']:,} in {result['seconds']:.2f}s)  server {_cpu(result, 'server')}"
          f"{app}  load {result['load_before']:.1f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.p7_http", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="runs per round (default 10,000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=1,
                        help="HTTP connections sending the events (default 1)")
    profile_option(parser)
    parser.add_argument("--only", default=",".join(TARGETS),
                        help=f"comma-separated targets (default: {','.join(TARGETS)})")
    parser.add_argument("--base-src", type=Path, default=None, metavar="DIR",
                        help="also run each HTTP target with the server's code from DIR "
                             "(another checkout's src), as TARGET@base")
    args = parser.parse_args(argv)
    pin_self()
    chosen = [t for t in args.only.split(",") if t]
    unknown = set(chosen) - set(TARGETS)
    if unknown or not chosen:
        parser.error(f"choose targets from {', '.join(TARGETS)}")
    base = args.base_src.resolve() if args.base_src else None
    if base is not None and not (base / "tidings" / "__init__.py").is_file():
        parser.error(f"--base-src {base}: no tidings package there")
    # (name, target, server code): each HTTP target beside its base, round after round.
    plan = [(name, target, src) for target in chosen
            for name, src in ((target, None), (f"{target}@base", base))
            if name == target or (base is not None and target != "native")]
    targets = [name for name, _, _ in plan]
    report = Report("p7_http", {"n": args.n, "rounds": args.rounds, "batch": BATCH,
                                "connections": args.connections, "targets": targets,
                                "app_cpu": APP_CPU})
    print(f"P7: event -> 1-step function completed, native vs inngest-py over HTTP, "
          f"N={args.n:,}, {args.rounds} rounds")
    try:
        for index in range(1, args.rounds + 1):
            for name, target, src in plan:
                result = {"target": name, "round": index, "load_before": load(),
                          **run_round(target, args.n, args.connections,
                                      profile_path(args.profile, "p7", target, index), src)}
                report.rounds.append(result)
                _print_round(result)
    except BenchError as exc:
        print(f"P7 failed: {exc}", file=sys.stderr)
        return 1
    report.summary = summary = summarize(report, targets)
    rows = [[target, f"{m['per_s']:,.0f}", f"{m['seconds']:.2f}", _cpu(m, "server"),
             _cpu(m, "app") if "app_cpu_us_per_run" in m else "-",
             f"{m['calls_per_run']:g}" if "calls_per_run" in m else "-"]
            for target, m in summary["medians"].items()]
    print_table(f"P7 end-to-end runs/s, medians of {args.rounds} rounds", rows,
                ["target", "runs/s", "seconds", "server CPU", "SDK app CPU", "calls/run"])
    for target, ratio in summary["ratio_to_base"].items():
        print(f"{target} / {target}@base: {ratio:.3f} (runs/s)")
    if "ratio_http_native" in summary:
        print(f"http/native: {summary['ratio_http_native']:.3f} (median of per-round ratios "
              f"{summary['ratio_http_native_per_round_median']:.3f})")
    if "http_limited_by" in summary:
        ceilings = summary["http_ceilings_per_s"]
        print(f"HTTP path limited by the {summary['http_limited_by']}: a core's worth of CPU "
              f"runs {ceilings['tidings server']:,.0f} runs/s of the server, "
              f"{ceilings['sdk app']:,.0f} of the app")
    loads = summary["load_before"]
    print(f"load average before the rounds: median {loads['median']:.1f} "
          f"({loads['min']:.1f}-{loads['max']:.1f})")
    print(f"results: {report.save()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
