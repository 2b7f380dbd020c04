"""P9: overload. ``tidings dev`` (SQLite; ``--postgres`` too) offered ten times the rate of
2,000-event requests it sustains, for 60 s, over 512 connections, with its default load
settings. Goals: every acknowledged event stored (counted in the database), p99 of the accepted
requests under 1 s, every refused request a ``503`` with ``Retry-After`` (no other error, no
timeout, no reset connection), and the server's RSS under a stated bound.

``python -m bench.p9_overload [--seconds 60] [--factor 10] [--connections 512] [--rate R]
[--postgres | --no-sqlite]``

1. **Sustainable rate.** A fresh server; 8 connections send requests back to back (closed loop)
   for ``--calibrate`` seconds after a warm-up: the events/s it acknowledges. (``--rate``
   gives one instead.)
2. **Overload.** Another fresh server; requests are started on a fixed schedule at ``--factor``
   times that rate (open loop) on a pool of ``--connections`` keep-alive connections, each
   carrying one request at a time. A request is timed from when it is written to when its answer
   has been read; one that finds no free connection waits for one, and how late it started is
   reported (a late start is the load generator's limit, not the server's). RSS is ``VmRSS`` of
   the server, sampled every 0.25 s. After the last answer the server is stopped and its events
   counted.

Everything is on loopback; the server is pinned to core 0 and this process to core 1
(``TIDINGS_BENCH_SERVER_CPU``, ``TIDINGS_BENCH_WRK_CPU``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from bench.engine import pin_self
from bench.harness import (
    EVENT_KEY,
    SERVERS,
    BenchError,
    Plan,
    Server,
    postgres_available,
    print_table,
    save,
)
from bench.p2_batch import batch_body

_decode = msgspec.json.decode
BATCH = 2000
RSS_BOUND_MB = 600  # the bound this benchmark holds the server to (see bench/README.md)
GOAL_P99_S = 1.0
CALIBRATION_CONNECTIONS = 8


def request_bytes(port: int, body: bytes) -> bytes:
    head = (f"POST /e/{EVENT_KEY} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n")
    return head.encode() + body


@dataclass
class Tally:
    """What the load generator saw."""

    accepted_s: list[float] = field(default_factory=list)  # seconds, per 200
    refused: int = 0  # 503 with Retry-After
    refused_without_retry_after: int = 0
    other: dict[int, int] = field(default_factory=dict)  # any other status
    errors: dict[str, int] = field(default_factory=dict)  # connection errors, by kind
    late_s: list[float] = field(default_factory=list)  # start lateness, per request
    acknowledged_ids: int = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if b":" in line:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return status, headers, body


class Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(request)
        await self.writer.drain()
        status, headers, body = await _answer(self.reader)
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, headers, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def _one(conn: Connection, request: bytes, tally: Tally) -> None:
    started = time.perf_counter()
    try:
        status, headers, body = await asyncio.wait_for(conn.send(request), 60)
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
        tally.error(type(exc).__name__)
        conn.close()
        return
    took = time.perf_counter() - started
    if status == 200:
        tally.accepted_s.append(took)
        tally.acknowledged_ids += len(_decode(body)["ids"])
    elif status == 503:
        tally.refused += 1
        if b"retry-after" not in headers:
            tally.refused_without_retry_after += 1
    else:
        tally.other[status] = tally.other.get(status, 0) + 1


async def closed_loop(port: int, request: bytes, seconds: float, connections: int) -> Tally:
    tally = Tally()
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        conn = Connection(port)
        while time.perf_counter() < deadline:
            await _one(conn, request, tally)
        conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return tally


async def open_loop(port: int, request: bytes, rate: float, seconds: float,
                    connections: int) -> Tally:
    tally = Tally()
    free: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        free.put_nowait(Connection(port))
    tasks: set[asyncio.Task[None]] = set()

    async def start(scheduled: float) -> None:
        conn = await free.get()
        tally.late_s.append(time.perf_counter() - scheduled)
        try:
            await _one(conn, request, tally)
        finally:
            free.put_nowait(conn)

    begin = time.perf_counter()
    total = int(rate * seconds)
    for index in range(total):
        scheduled = begin + index / rate
        wait = scheduled - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        task = asyncio.create_task(start(scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*list(tasks))
    while not free.empty():
        free.get_nowait().close()
    return tally


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[float] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while not self.stopping.wait(0.25):
            try:
                text = status.read_text()
            except OSError:
                return
            for line in text.splitlines():
                if line.startswith("VmRSS:"):
                    self.samples.append(int(line.split()[1]) / 1024)


@dataclass
class Outcome:
    target: str
    sustainable_events_per_s: float
    offered_requests_per_s: float
    seconds: float
    connections: int
    requests: int
    accepted: int
    refused_503: int
    refused_without_retry_after: int
    other_statuses: dict[int, int]
    connection_errors: dict[str, int]
    accepted_events_per_s: float
    p50_accepted_s: float
    p99_accepted_s: float
    max_accepted_s: float
    late_start_p99_s: float
    acknowledged_events: int
    stored_events: int
    rss_max_mb: float
    rss_start_mb: float
    load_before: float
    server_cpu_share: float  # of one core, while overloaded
    loadgen_cpu_share: float


def _p(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def calibrate(target: str, request_body: bytes, seconds: float) -> float:
    with SERVERS[target]() as server:
        request = request_bytes(server.port, request_body)
        asyncio.run(closed_loop(server.port, request, 2.0, CALIBRATION_CONNECTIONS))
        started = time.perf_counter()
        tally = asyncio.run(closed_loop(server.port, request, seconds,
                                        CALIBRATION_CONNECTIONS))
        took = time.perf_counter() - started
    if tally.errors or tally.other:
        raise BenchError(f"calibration failed: {tally.errors} {tally.other}")
    return len(tally.accepted_s) * BATCH / took


def overload(target: str, request_body: bytes, sustainable: float, args: argparse.Namespace
             ) -> Outcome:
    rate = sustainable * args.factor / BATCH
    load = os.getloadavg()[0]
    server: Server
    with SERVERS[target]() as server:
        assert server.process is not None
        sampler = RssSampler(server.process.pid)
        sampler.start()
        request = request_bytes(server.port, request_body)
        started = time.perf_counter()
        cpu_before, own_before = server.cpu_seconds(), _own_cpu()
        tally = asyncio.run(open_loop(server.port, request, rate, args.seconds,
                                      args.connections))
        took = time.perf_counter() - started
        server_cpu = (server.cpu_seconds() - cpu_before) / took
        own_cpu = (_own_cpu() - own_before) / took
        sampler.stopping.set()
        sampler.join()
        server.stop()
        stored, _ = server.count_events()
    accepted = len(tally.accepted_s)
    return Outcome(
        target=target, sustainable_events_per_s=round(sustainable, 1),
        offered_requests_per_s=round(rate, 2), seconds=round(took, 2),
        connections=args.connections,
        requests=accepted + tally.refused + sum(tally.other.values())
        + sum(tally.errors.values()),
        accepted=accepted, refused_503=tally.refused,
        refused_without_retry_after=tally.refused_without_retry_after,
        other_statuses=tally.other, connection_errors=tally.errors,
        accepted_events_per_s=round(accepted * BATCH / took, 1),
        p50_accepted_s=round(statistics.median(tally.accepted_s), 4) if accepted else 0.0,
        p99_accepted_s=round(_p(tally.accepted_s, 0.99), 4),
        max_accepted_s=round(max(tally.accepted_s, default=0.0), 4),
        late_start_p99_s=round(_p(tally.late_s, 0.99), 4),
        acknowledged_events=tally.acknowledged_ids, stored_events=stored,
        rss_max_mb=round(max(sampler.samples, default=0.0), 1),
        rss_start_mb=round(sampler.samples[0], 1) if sampler.samples else 0.0,
        load_before=round(load, 2),
        server_cpu_share=round(server_cpu, 3), loadgen_cpu_share=round(own_cpu, 3),
    )


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def verdict(outcome: Outcome) -> list[str]:
    """What failed its goal (empty: all met)."""
    failed = []
    if outcome.stored_events != outcome.acknowledged_events:
        failed.append(f"{outcome.acknowledged_events} events acknowledged but "
                      f"{outcome.stored_events} stored")
    if outcome.p99_accepted_s >= GOAL_P99_S:
        failed.append(f"p99 of accepted requests {outcome.p99_accepted_s:.3f} s >= 1 s")
    if outcome.other_statuses or outcome.connection_errors:
        failed.append(f"requests failed otherwise than with 503: {outcome.other_statuses} "
                      f"{outcome.connection_errors}")
    if outcome.refused_without_retry_after:
        failed.append(f"{outcome.refused_without_retry_after} 503s without Retry-After")
    if outcome.refused_503 == 0:
        failed.append("nothing was refused: the load did not overload the server")
    if outcome.rss_max_mb >= RSS_BOUND_MB:
        failed.append(f"RSS {outcome.rss_max_mb:.0f} MB >= {RSS_BOUND_MB} MB")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.p9_overload", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="overload (default 60)")
    parser.add_argument("--factor", type=float, default=10.0,
                        help="offered load / sustainable rate (default 10)")
    parser.add_argument("--connections", type=int, default=512, help="default 512")
    parser.add_argument("--calibrate", type=float, default=10.0,
                        help="seconds of the closed-loop run finding the sustainable rate")
    parser.add_argument("--rate", type=float, default=None,
                        help="sustainable events/s to assume instead of measuring it")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL too")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    args = parser.parse_args(argv)
    pin_self()
    targets = [] if args.no_sqlite else ["sqlite"]
    if args.postgres or args.no_sqlite:
        skipped = postgres_available()
        if skipped is None:
            targets.append("postgres")
        else:
            print(f"  PostgreSQL skipped: {skipped}")
    body = batch_body(BATCH)
    print(f"P9: {BATCH}-event requests ({len(body):,} bytes), {args.factor:g}x the sustainable "
          f"rate for {args.seconds:g} s over {args.connections} connections")
    outcomes: list[Outcome] = []
    failures: list[str] = []
    try:
        for target in targets:
            sustainable = args.rate or calibrate(target, body, args.calibrate)
            print(f"  {target}: sustainable {sustainable:,.0f} events/s; offering "
                  f"{sustainable * args.factor / BATCH:,.1f} requests/s", flush=True)
            outcome = overload(target, body, sustainable, args)
            outcomes.append(outcome)
            failures += [f"{target}: {f}" for f in verdict(outcome)]
    except BenchError as exc:
        print(f"P9 failed: {exc}", file=sys.stderr)
        return 1
    rows = [[o.target, f"{o.sustainable_events_per_s:,.0f}", f"{o.offered_requests_per_s:,.1f}",
             f"{o.accepted:,}", f"{o.refused_503:,}",
             f"{sum(o.other_statuses.values()) + sum(o.connection_errors.values())}",
             f"{o.accepted_events_per_s:,.0f}", f"{o.p50_accepted_s * 1000:,.0f}",
             f"{o.p99_accepted_s * 1000:,.0f}", f"{o.late_start_p99_s * 1000:,.0f}",
             f"{o.acknowledged_events:,}", f"{o.stored_events:,}", f"{o.rss_max_mb:,.0f}",
             f"{o.server_cpu_share:.0%}", f"{o.loadgen_cpu_share:.0%}"]
            for o in outcomes]
    print_table("P9 overload", rows, ["target", "sustain ev/s", "offered req/s", "200",
                                       "503", "other", "accepted ev/s", "p50 ms", "p99 ms",
                                       "late p99 ms", "acked events", "stored", "RSS max MB",
                                       "server CPU", "loadgen CPU"])
    summary: dict[str, Any] = {
        "goals": {"p99_accepted_s": GOAL_P99_S, "rss_bound_mb": RSS_BOUND_MB,
                  "stored_equals_acknowledged": True, "refusals": "503 with Retry-After"},
        "outcomes": [asdict(o) for o in outcomes],
        "failed": failures,
    }
    plan = Plan(name="p9_overload", targets=targets, body=body, events_per_request=BATCH,
                rounds=1, seconds=args.seconds, warmup_seconds=0,
                connections=args.connections)
    print(f"results: {save(plan, summary)}")
    for failure in failures:
        print(f"P9 goal missed: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
