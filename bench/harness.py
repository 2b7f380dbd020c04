"""What every benchmark shares: servers on free ports, ``wrk`` runs, checks, tables, results.

The machine has two cores and the load generator shares it with the server, so the server is
pinned to one core and ``wrk`` to the other (``taskset``), and every figure is compared with a
bare ASGI app measured in the same run, in alternating rounds.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LUA = HERE / "post.lua"
THREAD_NAMES = HERE / "threadnames"  # its sitecustomize names the servers' threads
BIN = Path(sys.executable).parent
PG_URL = os.environ.get("TIDINGS_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
SERVER_CPU = os.environ.get("TIDINGS_BENCH_SERVER_CPU", "0")
WRK_CPU = os.environ.get("TIDINGS_BENCH_WRK_CPU", "1")
EVENT_KEY = "benchkey"
COUNT_EVENTS = ("SELECT count(*), sum(CASE WHEN delivered_at IS NULL THEN 1 ELSE 0 END) "
                "FROM {table}")


# What P10 compares: metrics and logs off, and on as ``tidings serve`` has them (INFO, JSON).
UNOBSERVED = ("--no-metrics", "--log-level", "warning")
OBSERVED = ("--metrics", "--log-format", "json", "--log-level", "info")


class BenchError(RuntimeError):
    """A run that cannot be trusted: a server that did not start, errors, lost events."""


# -- servers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(cpu: str, argv: Sequence[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if shutil.which("taskset") else list(argv)


@dataclass
class Server:
    """A running server process: where to send events and how to count what it stored."""

    kind: str
    port: int
    data_dir: Path
    count_events: Callable[[], tuple[int, int]]  # (stored, of those not yet routed)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/e/{EVENT_KEY}"

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far (all its threads), and
        its child processes (the span process) still running."""
        assert self.process is not None
        return process_cpu(self.process.pid)

    def threads_cpu(self) -> dict[str, float]:
        assert self.process is not None
        return threads_cpu(self.process.pid)

    def stop(self) -> None:
        """Stop the server (gracefully: what it acknowledged is committed by then)."""
        if self.process is not None:
            _stop(self.process)


def threads_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads so far, summed by kind of thread: ``loop`` (the
    main thread: the event loop's), and the others by the name ``bench/threadnames`` gave
    them without a pool's ``_N`` (``spans``, ``sqlite-writer``, ``sqlite-syncer``,
    ``sqlite-read``, ``fn``, ...); its child processes' threads (the span process of
    ``tidings.observe.span_export``) as ``children``. Read from ``schedstat`` (nanoseconds on
    a core; ``stat`` counts 10 ms ticks, too coarse for a thread's share of a few thousand
    runs). A thread that ended is not counted."""
    found: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            ran = int((task / "schedstat").read_text().split()[0])
            name = "loop" if task.name == str(pid) else (task / "comm").read_text().strip()
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        kind = re.sub(r"_\d+$", "", name)
        found[kind] = found.get(kind, 0.0) + ran / 1e9
    for child in children(pid):
        found["children"] = found.get("children", 0.0) + sum(threads_cpu(child).values())
    return found


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far, and of its child processes still
    running."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(process_cpu(child) for child in children(pid))


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (gone ones left out)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                found += [int(child) for child in (task / "children").read_text().split()]
    return found


def cpu_by_thread(before: dict[str, float], after: dict[str, float],
                  per: int) -> dict[str, float]:
    """CPU µs per ``per`` (requests, runs) of each kind of thread between two
    ``threads_cpu``."""
    return {kind: round(1e6 * (spent - before.get(kind, 0.0)) / max(per, 1), 1)
            for kind, spent in sorted(after.items())}


def _wait_ready(server: Server, log: Path, timeout: float = 30.0) -> None:
    assert server.process is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchError(f"{server.kind} server exited at start:\n{log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise BenchError(f"{server.kind} server did not answer within {timeout:.0f}s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def _running(server: Server, argv: list[str], env: dict[str, str]) -> Iterator[Server]:
    log = server.data_dir / "server.log"
    with log.open("wb") as out:
        server.process = subprocess.Popen(
            pinned(SERVER_CPU, argv), env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        _wait_ready(server, log)
        yield server
    finally:
        _stop(server.process)
    errors = [line for line in log.read_text(errors="replace").splitlines()
              if "Traceback" in line or "ERROR" in line]
    if errors:
        raise BenchError(f"{server.kind} server logged errors:\n{log.read_text()[-3000:]}")


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env["TIDINGS_DATA_DIR"] = str(data_dir)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(THREAD_NAMES), env.get("PYTHONPATH")]))
    return env


@contextmanager
def bare_server() -> Iterator[Server]:
    """The baseline: ``bench.bare`` on the same uvicorn stack as ``tidings dev``."""
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
        server = Server("bare", free_port(), Path(tmp), lambda: (0, 0))
        argv = [sys.executable, "-m", "bench.bare", "--port", str(server.port)]
        env = _env(server.data_dir)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent),
                                                          env.get("PYTHONPATH")]))
        with _running(server, argv, env):
            yield server


@contextmanager
def sqlite_server(variant: str | None = None, options: Sequence[str] = (),
                  src: str | None = None) -> Iterator[Server]:
    """``tidings dev`` on a fresh SQLite file, with ``options``; a ``variant`` of
    ``bench.variants`` takes one part of ingest out (P1's ``--analysis``); ``src``: the
    server's code from that folder instead (another checkout's ``src``, to compare)."""
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
        data_dir = Path(tmp)
        db = data_dir / "tidings.db"

        def count() -> tuple[int, int]:
            with sqlite3.connect(db) as conn:
                row = conn.execute(COUNT_EVENTS.format(table="events")).fetchone()
            return int(row[0]), int(row[1] or 0)

        server = Server("sqlite" if variant is None else f"sqlite-{variant}", free_port(),
                        data_dir, count)
        args = ["dev", "--host", "127.0.0.1", "--port", str(server.port), "--db", str(db),
                *options]
        env = _env(data_dir)
        if src is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        if variant is None:
            argv = [str(BIN / "tidings"), *args]
        else:
            argv = [sys.executable, "-m", "bench.variants", variant, *args]
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent),
                                                              env.get("PYTHONPATH")]))
        with _running(server, argv, env):
            yield server


def postgres_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    import psycopg

    try:
        with psycopg.connect(PG_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]


@contextmanager
def postgres_server(options: Sequence[str] = ()) -> Iterator[Server]:
    """``tidings dev`` on a fresh PostgreSQL schema, with ``options``, dropped afterwards."""
    import psycopg

    schema = "bench_" + secrets.token_hex(6)
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
            data_dir = Path(tmp)

            def count() -> tuple[int, int]:
                with psycopg.connect(PG_URL) as conn:
                    query = COUNT_EVENTS.format(table=f"{schema}.events")
                    row = conn.execute(query).fetchone()
                assert row is not None
                return int(row[0]), int(row[1] or 0)

            server = Server("postgres", free_port(), data_dir, count)
            sep = "&" if "?" in PG_URL else "?"
            url = f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
            argv = [str(BIN / "tidings"), "dev", "--host", "127.0.0.1", "--port",
                    str(server.port), "--db", url, *options]
            with _running(server, argv, _env(data_dir)):
                yield server
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


SERVERS: dict[str, Callable[[], Any]] = {
    "bare": bare_server,
    "sqlite": sqlite_server,
    "postgres": postgres_server,
    "sqlite-nostore": partial(sqlite_server, "nostore"),
    "sqlite-nosync": partial(sqlite_server, "nosync"),
    # Observability off and on (P10, ``bench.p10_observe``).
    "sqlite-unobserved": partial(sqlite_server, None, UNOBSERVED),
    "sqlite-observed": partial(sqlite_server, None, OBSERVED),
    "sqlite-traced": partial(sqlite_server, "traced", OBSERVED),
    # encrypt_data on, and the code before it existed (P12, ``bench.p12_sealing``).
    "sqlite-sealed": partial(sqlite_server, None, ("--encrypt-data",)),
    "sqlite-base": lambda: sqlite_server(None, (), os.environ["TIDINGS_BENCH_BASE_SRC"]),
}
# Targets whose rounds have no stored events to check against what was acknowledged.
STORES_NOTHING = {"bare", "sqlite-nostore"}


# -- wrk ----------------------------------------------------------------------------------------


@dataclass
class WrkRun:
    requests: int
    duration_s: float
    errors: dict[str, int]
    latency_us: dict[str, float]

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


def wrk_available() -> None:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed: `apt-get install -y wrk` (or `make bench`)")


def run_wrk(url: str, body: Path, *, seconds: float, connections: int) -> WrkRun:
    argv = pinned(WRK_CPU, ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout",
                            "10s", "-s", str(LUA), url, "--", str(body)])
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            raw = json.loads(line.removeprefix("BENCH_RESULT "))
            return WrkRun(
                requests=raw["requests"],
                duration_s=raw["duration_us"] / 1e6,
                errors=raw["errors"],
                latency_us=raw["latency_us"],
            )
    raise BenchError(f"wrk failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")


# -- rounds -------------------------------------------------------------------------------------


@dataclass
class Round:
    target: str
    index: int
    requests: int
    duration_s: float
    req_per_s: float
    events_per_s: float
    latency_us: dict[str, float]
    server_cpu_percent: float
    server_cpu_us_per_request: float
    errors: dict[str, int]
    acknowledged_events: int
    stored_events: int | None
    unrouted_at_stop: int | None  # stored but not yet routed when the server was stopped
    load_before: float
    server_cpu_us_by_thread: dict[str, float] = field(default_factory=dict)  # per request


@dataclass
class Plan:
    """One benchmark: which servers, what body, how long, how many alternating rounds."""

    name: str
    targets: list[str]
    body: bytes
    events_per_request: int
    rounds: int
    seconds: float
    warmup_seconds: float
    connections: int
    results: list[Round] = field(default_factory=list)


def run_round(plan: Plan, target: str, index: int, body_file: Path) -> Round:
    load = os.getloadavg()[0]
    with SERVERS[target]() as server:
        runs = []
        if plan.warmup_seconds > 0:
            runs.append(run_wrk(server.url, body_file, seconds=plan.warmup_seconds,
                                connections=plan.connections))
        cpu_before, threads_before = server.cpu_seconds(), server.threads_cpu()
        measured = run_wrk(server.url, body_file, seconds=plan.seconds,
                           connections=plan.connections)
        cpu, threads_after = server.cpu_seconds() - cpu_before, server.threads_cpu()
        runs.append(measured)
        # Count once the server has stopped: requests still in flight are settled by then.
        server.stop()
        stored, unrouted = server.count_events()
    failed = {k: sum(r.errors[k] for r in runs) for k in measured.errors}
    acknowledged = sum(r.requests for r in runs) * plan.events_per_request
    result = Round(
        target=target,
        index=index,
        requests=measured.requests,
        duration_s=round(measured.duration_s, 3),
        req_per_s=round(measured.rps, 1),
        events_per_s=round(measured.rps * plan.events_per_request, 1),
        latency_us=measured.latency_us,
        server_cpu_percent=round(100 * cpu / measured.duration_s, 1),
        server_cpu_us_per_request=round(1e6 * cpu / max(measured.requests, 1), 1),
        errors=failed,
        acknowledged_events=acknowledged,
        stored_events=stored if target not in STORES_NOTHING else None,
        unrouted_at_stop=unrouted if target not in STORES_NOTHING else None,
        load_before=round(load, 2),
        server_cpu_us_by_thread=cpu_by_thread(threads_before, threads_after,
                                              measured.requests),
    )
    check(plan, result, wrk_runs=len(runs))
    return result


def check(plan: Plan, result: Round, *, wrk_runs: int) -> None:
    """A round is only worth reporting if nothing failed and every acknowledged event is stored.

    wrk stops with up to ``connections`` requests in flight; the server may still commit those,
    so up to that many requests' events per wrk run may be stored without being counted.
    """
    if any(result.errors.values()):
        raise BenchError(f"{result.target} round {result.index}: requests failed "
                         f"(status = HTTP >= 400): {result.errors}")
    if result.stored_events is None:
        return
    slack = wrk_runs * plan.connections * plan.events_per_request
    lost = result.acknowledged_events - result.stored_events
    if lost > 0:
        raise BenchError(f"{result.target} round {result.index}: {lost} acknowledged events "
                         "are not stored")
    if -lost > slack:
        raise BenchError(f"{result.target} round {result.index}: {-lost} more events stored "
                         f"than acknowledged (at most {slack} can be in flight at wrk's stop)")


def in_turn(targets: Sequence[T], index: int) -> Sequence[T]:
    """The targets of round ``index`` (from 1): in their order in odd rounds, reversed in even
    ones (a b, b a, a b, ...), so that a machine drifting through the run does not always
    favour the target measured first; each pair of rounds cancels a steady drift."""
    return targets if index % 2 else targets[::-1]


def run_plan(plan: Plan) -> list[Round]:
    """Alternate the targets round by round (``in_turn``) so drift hits all alike."""
    wrk_available()
    with tempfile.NamedTemporaryFile(prefix="tidings-bench-", suffix=".json") as body:
        body.write(plan.body)
        body.flush()
        for index in range(1, plan.rounds + 1):
            for target in in_turn(plan.targets, index):
                result = run_round(plan, target, index, Path(body.name))
                plan.results.append(result)
                print(f"  round {index} {target:<9} {result.req_per_s:>10,.0f} req/s "
                      f"{result.events_per_s:>11,.0f} events/s  p99 "
                      f"{result.latency_us['p99'] / 1000:.1f} ms  server CPU "
                      f"{result.server_cpu_percent:.0f}% "
                      f"{result.server_cpu_us_per_request:,.0f} us/req"
                      + (f"  stored {result.stored_events:,} ({result.unrouted_at_stop:,} "
                         "not routed yet)" if result.stored_events else ""),
                      flush=True)
    return plan.results


def medians(plan: Plan) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for target in plan.targets:
        rounds = [r for r in plan.results if r.target == target]
        out[target] = {
            "req_per_s": round(statistics.median(r.req_per_s for r in rounds), 1),
            "events_per_s": round(statistics.median(r.events_per_s for r in rounds), 1),
            "p50_ms": round(statistics.median(r.latency_us["p50"] for r in rounds) / 1000, 2),
            "p99_ms": round(statistics.median(r.latency_us["p99"] for r in rounds) / 1000, 2),
            "server_cpu_us_per_request": round(
                statistics.median(r.server_cpu_us_per_request for r in rounds), 1),
        }
        if target not in STORES_NOTHING:
            out[target]["unrouted_at_stop_fraction"] = round(statistics.median(
                (r.unrouted_at_stop or 0) / max(r.stored_events or 0, 1) for r in rounds), 4)
    return out


def routing_note(found: dict[str, dict[str, float]]) -> None:
    """Say so when routing fell behind ingest: its cost is then largely missing from the figures."""
    for target, figures in found.items():
        behind = figures.get("unrouted_at_stop_fraction", 0.0)
        if behind > 0.01:
            print(f"{target}: routing fell behind ingest: {behind:.0%} of the stored events were "
                  "not routed yet when the server stopped")


def print_table(title: str, rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                    for i, (h, w) in enumerate(zip(header, widths, strict=True))))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths, strict=True))))


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "server_cpu": SERVER_CPU,
        "wrk_cpu": WRK_CPU,
    }


def save(plan: Plan, summary: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{plan.name}-{stamp}.json"
    document = {
        "benchmark": plan.name,
        "finished_at": stamp,
        "machine": machine(),
        "config": {
            "targets": plan.targets,
            "rounds": plan.rounds,
            "seconds": plan.seconds,
            "warmup_seconds": plan.warmup_seconds,
            "connections": plan.connections,
            "events_per_request": plan.events_per_request,
            "body_bytes": len(plan.body),
        },
        "rounds": [asdict(r) for r in plan.results],
        "summary": summary,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def common_options(parser: Any, *, rounds: int, seconds: float) -> None:
    parser.add_argument("--rounds", type=int, default=rounds,
                        help=f"alternating rounds per target (default {rounds})")
    parser.add_argument("--seconds", type=float, default=seconds,
                        help=f"measured seconds per round (default {seconds:g})")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="unmeasured seconds of load before each measured run (default 2)")
    parser.add_argument("--connections", type=int, default=32,
                        help="wrk connections (default 32)")
