"""What the engine benchmarks (P3-P8) share: ``tidings dev -a bench.apps:client`` on SQLite or
PostgreSQL, a keep-alive HTTP sender, queries on the server's database, pinning, results.

The server is pinned to ``TIDINGS_BENCH_SERVER_CPU`` (core 0) and the benchmark process itself —
the load generator and the poller — to ``TIDINGS_BENCH_WRK_CPU`` (core 1), as in P1/P2.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import secrets
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from bench.harness import (
    BIN,
    EVENT_KEY,
    HERE,
    PG_URL,
    RESULTS,
    SERVER_CPU,
    THREAD_NAMES,
    WRK_CPU,
    BenchError,
    free_port,
    machine,
    pinned,
    process_cpu,
    threads_cpu,
)

APP = "bench.apps:client"
ROOT = HERE.parent
ALL_CPUS = ",".join(str(c) for c in range(os.cpu_count() or 1))


def pin_self() -> None:
    """Pin this process (the load generator) to the load generator's core."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        os.sched_setaffinity(0, {int(c) for c in WRK_CPU.split(",")})


def unpinned(argv: Sequence[str]) -> list[str]:
    """A child that may use every core (children inherit this process's pinning otherwise)."""
    return pinned(ALL_CPUS, argv)


def bench_env(data_dir: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    if data_dir is not None:
        env["TIDINGS_DATA_DIR"] = str(data_dir)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(THREAD_NAMES),
                                                      env.get("PYTHONPATH")]))
    return env


# -- the server --------------------------------------------------------------------------------


@dataclass
class Engine:
    """A running ``tidings dev -a bench.apps:client`` and a connection to its database."""

    kind: str  # sqlite | postgres
    port: int
    data_dir: Path
    pid: int  # the server's (not py-spy's when profiled)
    _query: Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
    log: Path

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read on the server's database (``?`` placeholders work on both)."""
        return self._query(sql, params)

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def completed_runs(self, function_id: str, expected: int, what: str) -> int:
        """Check that the function has exactly ``expected`` runs, all completed; when the last
        of them ended (ms)."""
        total, failed, ended_ms = self.query(
            "SELECT count(*), sum(CASE WHEN status <> 'Completed' THEN 1 ELSE 0 END),"
            " max(ended_at) FROM runs WHERE function_id = ?", (function_id,))[0]
        if failed or total != expected:
            raise BenchError(f"{what}: {total} runs, {failed or 0} not completed "
                             f"(expected {expected} completed)")
        return int(ended_ms)

    def function_id(self, slug: str) -> str:
        found = self.scalar("SELECT id FROM functions WHERE slug = ?", (f"bench-{slug}",))
        if found is None:
            raise BenchError(f"function bench-{slug} is not registered")
        return str(found)

    def sender(self) -> Sender:
        return Sender(self.port)

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def threads_cpu(self) -> dict[str, float]:
        """CPU seconds so far by kind of thread (``bench.harness.threads_cpu``)."""
        return threads_cpu(self.pid)


def wait_ready(process: subprocess.Popen[bytes], port: int, log: Path, *,
               path: str = "/health", what: str = "server", timeout: float = 60.0) -> None:
    """Until ``GET path`` answers 200 on ``port``; ``BenchError`` if the process exits first
    or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{what} exited at start:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                conn.close()
                return
        time.sleep(0.05)
    raise BenchError(f"{what} did not answer within {timeout:.0f}s")


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGINT,
                 timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def check_log(log: Path, what: str) -> None:
    text = log.read_text(errors="replace")
    errors = [line for line in text.splitlines() if "Traceback" in line or "ERROR" in line]
    if errors:
        raise BenchError(f"{what} logged errors:\n{text[-3000:]}")


@contextlib.contextmanager
def tidings_dev(kind: str, *, cpu: str = SERVER_CPU, extra_env: dict[str, str] | None = None,
                profile: Path | None = None, port: int | None = None,
                args: Sequence[str] = ("-a", APP), variant: str | None = None,
                binary: str | None = None) -> Iterator[Engine]:
    """``tidings dev -a bench.apps:client`` on a fresh SQLite file or PostgreSQL schema.

    ``args`` replace ``-a bench.apps:client`` (P7 passes ``-u URL`` for an SDK app instead);
    ``port`` is the server's (default: a free one). With ``profile`` the server runs under
    ``py-spy record`` (raw collapsed stacks to that file); with ``variant`` it is that
    variant of ``bench.variants`` (``traced``: P10). ``binary``: another ``tidings`` (another
    build, to compare).
    """
    with contextlib.ExitStack() as stack:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tidings-bench-")))
        if kind == "sqlite":
            db = str(data_dir / "tidings.db")
            query = stack.enter_context(sqlite_reader(Path(db)))
        elif kind == "postgres":
            db, query = stack.enter_context(postgres_schema())
        else:
            raise ValueError(kind)
        port = port or free_port()
        command = ([binary or str(BIN / "tidings")] if variant is None
                   else [sys.executable, "-m", "bench.variants", variant])
        argv = py_spy(profile, [*command, "dev", "--host", "127.0.0.1", "--port", str(port),
                                "--db", db, *args])
        env = bench_env(data_dir)
        env.update(extra_env or {})
        log = data_dir / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(pinned(cpu, argv), env=env, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=ROOT)
        try:
            wait_ready(process, port, log)
            pid = child_pid(process.pid) if profile is not None else process.pid
            yield Engine(kind, port, data_dir, pid, query, log)
        finally:
            stop_process(process)
        check_log(log, f"tidings dev ({kind})")


def py_spy(profile: Path | None, argv: list[str]) -> list[str]:
    """``argv`` under ``py-spy record`` (raw collapsed stacks to ``profile``), or as it is."""
    if profile is None:
        return argv
    return [str(BIN / "py-spy"), "record", "-r", "200", "-f", "raw", "-o", str(profile), "--",
            *argv]


def child_pid(parent: int, timeout: float = 10.0) -> int:
    """The first child of ``parent`` (the profiled process under py-spy), else ``parent``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
            if children:
                return int(children[0])
        time.sleep(0.05)
    return parent


@contextlib.contextmanager
def sqlite_reader(db: Path) -> Iterator[Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]]:
    conn: sqlite3.Connection | None = None

    def query(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        nonlocal conn
        if conn is None:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30,
                                   check_same_thread=False)
        return conn.execute(sql, tuple(params)).fetchall()

    try:
        yield query
    finally:
        if conn is not None:
            conn.close()


@contextlib.contextmanager
def postgres_schema() -> Iterator[tuple[str, Callable[[str, Sequence[Any]],
                                                       list[tuple[Any, ...]]]]]:
    import psycopg

    schema = "bench_" + secrets.token_hex(6)
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    url = f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    reader = psycopg.connect(url, autocommit=True)

    def query(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return reader.execute(sql.replace("?", "%s"), tuple(params)).fetchall()

    try:
        yield url, query
    finally:
        reader.close()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process so far, and of its child processes (the span
    process) still running (``bench.harness.process_cpu``)."""
    return process_cpu(pid)


def runnable_wait_seconds(pid: int) -> float:
    """Time the process's threads spent ready to run but waiting for a core (``schedstat``):
    on a shared machine, how much the neighbours held it back."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


class MemorySampler:
    """Samples a process's RSS every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.samples.append((time.time(), rss_bytes(self.pid)))
            self._stop.wait(self.interval)

    def peak(self, since: float = 0.0, until: float = float("inf")) -> int:
        return max((rss for at, rss in self.samples if since <= at <= until), default=0)


# -- sending -----------------------------------------------------------------------------------


class Sender:
    """A keep-alive HTTP/1.1 connection that posts pre-encoded JSON bodies to ``/e/{key}``."""

    HEADERS = {"content-type": "application/json"}

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.path = f"/e/{EVENT_KEY}"

    def post(self, body: bytes) -> list[str]:
        self.conn.request("POST", self.path, body, self.HEADERS)
        reply = self.conn.getresponse()
        raw = reply.read()
        if reply.status != 200:
            raise BenchError(f"POST {self.path} answered {reply.status}: {raw[:300]!r}")
        ids: list[str] = msgspec.json.decode(raw)["ids"]
        return ids

    def close(self) -> None:
        self.conn.close()


def post_all(port: int, bodies: Sequence[bytes], connections: int = 1) -> list[list[str]]:
    """Post every body, ``connections`` at a time (threads; the GIL is released while waiting);
    the ids of each body, in order."""
    out: list[list[str] | None] = [None] * len(bodies)
    errors: list[BaseException] = []
    cursor = iter(range(len(bodies)))
    lock = threading.Lock()

    def work() -> None:
        sender = Sender(port)
        try:
            while not errors:
                with lock:
                    index = next(cursor, None)
                if index is None:
                    return
                out[index] = sender.post(bodies[index])
        except BaseException as exc:
            errors.append(exc)
        finally:
            sender.close()

    threads = [threading.Thread(target=work) for _ in range(max(1, connections))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [ids or [] for ids in out]


def encode(events: Sequence[dict[str, Any]]) -> bytes:
    return msgspec.json.encode(list(events))


def wait_until(what: str, done: Callable[[], bool], *, timeout: float,
               interval: float = 0.02) -> float:
    """Poll ``done`` until it holds; the time it was first seen to hold."""
    deadline = time.monotonic() + timeout
    while True:
        if done():
            return time.time()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def step_times(engine: Engine, function: str, step_name: str) -> dict[str, float]:
    """``{event id: the time.time() the step returned}`` for every run of a bench function."""
    rows = engine.query(
        "SELECT r.event_id, s.output FROM runs r JOIN steps s ON s.run_id = r.id "
        "WHERE r.function_id = ? AND s.name = ?", (engine.function_id(function), step_name))
    return {str(event_id): float(json_value(output)["data"]) for event_id, output in rows}


def json_value(value: Any) -> Any:
    """A JSON column: text on SQLite, already decoded (jsonb) on PostgreSQL."""
    return msgspec.json.decode(value) if isinstance(value, str | bytes) else value


# -- figures and results -----------------------------------------------------------------------


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max (nearest rank) and the mean."""
    ordered = sorted(values)
    if not ordered:
        return {}

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]

    return {"n": len(ordered), "p50": rank(50), "p90": rank(90), "p99": rank(99),
            "max": ordered[-1], "mean": statistics.fmean(ordered)}


def median_of(rounds: Sequence[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rounds))


@dataclass
class Report:
    """The JSON document a benchmark writes to ``bench/results/``."""

    name: str
    config: dict[str, Any]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def save(self) -> Path:
        RESULTS.mkdir(exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = RESULTS / f"{self.name}-{stamp}.json"
        document = {"benchmark": self.name, "finished_at": stamp,
                    "machine": {**machine(), "loadgen_cpu": WRK_CPU},
                    "config": self.config, "rounds": self.rounds, "summary": self.summary}
        path.write_text(json.dumps(document, indent=2) + "\n")
        return path


def profile_option(parser: Any) -> None:
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="run the Tidings servers under py-spy; raw profiles go to DIR "
                             "(summarise with python -m bench.pyspy_summary)")


def profile_path(folder: Path | None, bench: str, target: str, index: int) -> Path | None:
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{bench}-{target}-r{index}.txt"


def load() -> float:
    """The 1-minute load average: the machine is shared, so every round records it."""
    return round(os.getloadavg()[0], 2)


def python() -> str:
    return sys.executable
