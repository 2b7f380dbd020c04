"""P11: end-to-end runs per second of P3's function — one no-op step — as a Trigger.dev v2 Job
(``tests/node/trigger_bench_app.mjs``: ``@trigger.dev/sdk`` 2.3.18 with ``@trigger.dev/express``,
one ``io.runTask``) called over HTTP, beside the same function native (P3's ``bench-p3-noop``).

Each v2 run is one ``EXECUTE_JOB`` call of the app, during which the SDK calls Tidings twice
(``POST /api/v1/runs/{id}/tasks``, then ``…/complete``) before answering ``SUCCESS``.

Placement and measure as P7 (``bench/p7_http.py``): the server on core 0, this process and the
app on core 1; a fresh SQLite server per round, a 500-run warm-up, then N events posted to
``/e/{key}`` in 500-event requests; from the first request to the ``ended_at`` of the last run,
all N checked ``Completed``. The server's and the app's CPU seconds per run say which one
limits the HTTP path.

``python -m bench.p11_trigger [--n 2000] [--rounds 3] [--only native,v2] [--profile DIR]``
(``--profile``: the server under ``py-spy record``; ``python -m bench.pyspy_summary``)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.engine import (
    BIN,
    ROOT,
    Engine,
    Report,
    bench_env,
    check_log,
    cpu_seconds,
    load,
    median_of,
    pin_self,
    post_all,
    profile_option,
    profile_path,
    stop_process,
    tidings_dev,
    wait_until,
)
from bench.harness import BenchError, free_port, pinned, print_table
from bench.p3_throughput import BATCH
from bench.p7_http import APP_CPU, _bodies

NODE_DIR = ROOT / "tests" / "node"
TARGETS = ["native", "v2"]
FUNCTION = {"native": "p3-noop", "v2": "p3-v2"}


@contextlib.contextmanager
def v2_app(engine: Engine) -> Iterator[int]:
    """The bench Job's app with a trigger key minted for the server's dev environment, synced
    through ``POST /v1/apps/sync``; the app's pid."""
    env = bench_env(engine.data_dir)
    db = str(engine.data_dir / "tidings.db")
    key = subprocess.run([str(BIN / "tidings"), "keys", "create", "--env", "dev", "--kind",
                          "trigger", "--db", db], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tidings-bench-v2-") as tmp:
        log = Path(tmp) / "app.log"
        app_env = {**env, "TRIGGER_API_KEY": key, "PORT": str(port),
                   "TRIGGER_API_URL": f"http://127.0.0.1:{engine.port}"}
        with log.open("wb") as out:
            process = subprocess.Popen(pinned(APP_CPU, ["node", "trigger_bench_app.mjs"]),
                                       env=app_env, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, cwd=NODE_DIR)
        try:
            url = f"http://127.0.0.1:{port}/api/trigger"
            wait_until("the v2 app to listen", lambda: _listening(url), timeout=30)
            request = urllib.request.Request(
                f"http://127.0.0.1:{engine.port}/v1/apps/sync", method="POST",
                data=json.dumps({"url": url}).encode(),
                headers={"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as answer:
                if answer.status != 200:
                    raise BenchError(f"the v2 app did not sync: {answer.read()!r}")
            yield process.pid
        finally:
            stop_process(process)
        check_log(log, "the v2 app")


def _listening(url: str) -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=1)
    except OSError:
        return False
    return True


def run_round(target: str, n: int, profile: Path | None = None) -> dict[str, Any]:
    args = ("--no-discovery",) if target == "v2" else ("-a", "bench.apps:client")
    with tidings_dev("sqlite", args=args, profile=profile) as engine, \
            contextlib.ExitStack() as stack:
        app_pid = stack.enter_context(v2_app(engine)) if target == "v2" else None
        fn = engine.function_id(FUNCTION[target])

        def completed() -> int:
            return int(engine.scalar(
                "SELECT count(*) FROM runs WHERE function_id = ? AND status = 'Completed'",
                (fn,)))

        def cpu() -> tuple[float, float]:
            return engine.cpu_seconds(), cpu_seconds(app_pid) if app_pid else 0.0

        post_all(engine.port, _bodies("bench/p3.noop", BATCH, "warmup"))
        wait_until("the warm-up runs", lambda: completed() >= BATCH, timeout=300)
        before = cpu()
        started = time.time()
        post_all(engine.port, _bodies("bench/p3.noop", n, "measured"))
        wait_until(f"{n} runs to complete", lambda: completed() >= BATCH + n,
                   timeout=max(300, n / 5))
        after = cpu()
        ended_ms = engine.completed_runs(fn, BATCH + n, target)
    elapsed = ended_ms / 1000 - started
    server_cpu, app_cpu = (b - a for a, b in zip(before, after, strict=True))
    result: dict[str, Any] = {"n": n, "seconds": round(elapsed, 3),
                              "per_s": round(n / elapsed, 1),
                              "server_cpu_us_per_run": round(server_cpu / n * 1e6, 1)}
    if app_pid is not None:
        result["app_cpu_us_per_run"] = round(app_cpu / n * 1e6, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.p11_trigger", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="runs per round (default 2,000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(TARGETS))
    profile_option(parser)
    args = parser.parse_args(argv)
    pin_self()
    chosen = [t for t in args.only.split(",") if t in TARGETS]
    report = Report("p11_trigger", {"n": args.n, "rounds": args.rounds, "targets": chosen})
    print(f"P11: event -> 1-step function completed, native vs a Trigger.dev v2 Job over HTTP, "
          f"N={args.n:,}, {args.rounds} rounds")
    try:
        for index in range(1, args.rounds + 1):
            for target in chosen:
                result = {"target": target, "round": index, "load_before": load(),
                          **run_round(target, args.n,
                                      profile_path(args.profile, "p11", target, index))}
                report.rounds.append(result)
                app = (f", app {result['app_cpu_us_per_run']:,.0f} us/run"
                       if "app_cpu_us_per_run" in result else "")
                print(f"  round {index} {target:<6} {result['per_s']:>7,.0f} runs/s, server "
                      f"{result['server_cpu_us_per_run']:,.0f} us/run{app}", flush=True)
    except BenchError as exc:
        print(f"P11 failed: {exc}", file=sys.stderr)
        return 1
    medians = {t: {k: median_of([r for r in report.rounds if r["target"] == t], k)
                   for k in ("per_s", "server_cpu_us_per_run", "app_cpu_us_per_run")
                   if k in next(r for r in report.rounds if r["target"] == t)}
               for t in chosen}
    summary: dict[str, Any] = {"medians": medians}
    if "v2" in medians:
        v2 = medians["v2"]
        summary["v2_limited_by"] = ("tidings server" if v2["server_cpu_us_per_run"]
                                    > v2["app_cpu_us_per_run"] else "v2 app")
    if "native" in medians and "v2" in medians:
        summary["ratio_v2_native"] = round(medians["v2"]["per_s"] / medians["native"]["per_s"],
                                           3)
    report.summary = summary
    print_table(f"P11 runs/s, medians of {args.rounds} rounds",
                [[t, f"{m['per_s']:,.0f}", f"{m['server_cpu_us_per_run']:,.0f}",
                  f"{m['app_cpu_us_per_run']:,.0f}" if "app_cpu_us_per_run" in m else "-"]
                 for t, m in medians.items()],
                ["target", "runs/s", "server us/run", "app us/run"])
    for key in ("ratio_v2_native", "v2_limited_by"):
        if key in summary:
            print(f"{key}: {summary[key]}")
    print(f"results: {report.save()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
