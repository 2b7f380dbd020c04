"""Crash: ``kill -9`` in the middle of 2,000 three-step runs, restart, and count what survived.

SQLite: ``tidings dev -a bench.crash_app:client``. PostgreSQL: ``tidings serve`` and a
``tidings worker bench.crash_app:client`` on a fresh schema (the kills go to the worker, the
server, then both, in turn). A producer sends ``crash/go`` events in 50-event requests, 0.1 s
apart (a request that fails is sent again with the same ``x-inngest-event-id-seed``, so it is
stored once), while the processes are killed with SIGKILL ``--kills`` times at random moments
(seeded), during the sending and while the runs go on, and started again on the same port.
Leases last 2 s (``TIDINGS_LEASE_SECONDS``), so the runs of a killed process are taken up soon.
Once every run has ended it reports:

- events acknowledged, and of those stored (they must be equal);
- runs, runs completed, events with more than one run (0);
- steps recorded, and **steps re-run although recorded** (must be 0: a side effect logged
  after the one whose token was recorded);
- steps that ran more than once before one was recorded (allowed: a step is at least once).

``python -m bench.crash [--events 2000] [--kills 5] [--backend sqlite|postgres|both] [--seed 7]``
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.engine import (
    ROOT,
    Report,
    bench_env,
    json_value,
    load,
    postgres_schema,
    sqlite_reader,
    stop_process,
    wait_ready,
)
from bench.harness import BIN, BenchError, free_port, postgres_available, print_table

APP = "bench.crash_app:client"
BATCH = 50
Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


class Producer(threading.Thread):
    """Sends ``events`` events in batches, ``pause`` apart; a batch is sent again, with the same
    id seed, until it is acknowledged."""

    def __init__(self, url: str, events: int, pause: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.events = events
        self.pause = pause
        self.acked: list[str] = []
        self.retried = 0

    def run(self) -> None:
        with httpx.Client(timeout=5) as http:
            for start in range(0, self.events, BATCH):
                batch = [{"name": "crash/go", "data": {"n": n}}
                         for n in range(start, min(start + BATCH, self.events))]
                seed = f"{int(time.time() * 1000)},{base64.b64encode(os.urandom(10)).decode()}"
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        reply = http.post(self.url, json=batch,
                                          headers={"x-inngest-event-id-seed": seed})
                        if reply.status_code == 200:
                            self.acked.extend(reply.json()["ids"])
                            break
                    self.retried += 1
                    time.sleep(0.05)
                time.sleep(self.pause)


class Process:
    """A ``tidings`` process that can be killed and started again with the same arguments."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path,
                 port: int | None) -> None:
        self.name, self.argv, self.env, self.log, self.port = name, argv, env, log, port
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.argv, env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            cwd=ROOT)
        if self.port is not None:
            wait_ready(self.process, self.port, self.log, what=self.name)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.kills += 1

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, signal.SIGTERM, timeout=60)


@contextlib.contextmanager
def _processes(backend: str, folder: Path, effects: Path
               ) -> Iterator[tuple[list[Process], str, Query]]:
    """The processes of a backend (not started), the event URL, and a query on its database."""
    env = {**bench_env(folder), "TIDINGS_BENCH_EFFECTS": str(effects),
           "TIDINGS_LEASE_SECONDS": "2"}
    port = free_port()
    tidings = str(BIN / "tidings")
    host = ["--host", "127.0.0.1", "--port", str(port)]
    if backend == "sqlite":
        db = str(folder / "crash.db")
        with sqlite_reader(Path(db)) as query:
            server = Process("tidings dev", [tidings, "dev", *host, "--db", db, "-a", APP,
                                             "--no-discovery"], env, folder / "dev.log", port)
            yield [server], f"http://127.0.0.1:{port}/e/key", query
        return
    with postgres_schema() as (url, query):
        env["TIDINGS_ENCRYPTION_KEY"] = subprocess.run(
            [tidings, "keys", "new-encryption-key"], env=env, capture_output=True, text=True,
            check=True).stdout.strip()
        key = subprocess.run([tidings, "keys", "create", "--env", "production", "--db", url],
                             env=env, capture_output=True, text=True, check=True).stdout.strip()
        server = Process("tidings serve", [tidings, "serve", *host, "--db", url], env,
                         folder / "serve.log", port)
        worker = Process("tidings worker", [tidings, "worker", APP, "--db", url, "--env",
                                            "production"], env, folder / "worker.log", None)
        yield [worker, server], f"http://127.0.0.1:{port}/e/{key}", query


def crash_run(backend: str, events: int, kills: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="tidings-crash-") as tmp:
        folder = Path(tmp)
        effects = folder / "effects.log"
        with _processes(backend, folder, effects) as (processes, url, query):
            for process in processes:
                process.start()
            producer = Producer(url, events)
            began = time.monotonic()
            try:
                _wait(lambda: bool(query("SELECT 1 FROM functions", ())), 60, "registration")
                producer.start()
                for kill in range(kills):
                    time.sleep(rng.uniform(0.5, 2.5))
                    victims = processes if len(processes) == 1 else \
                        [[processes[0]], [processes[1]], processes][kill % 3]
                    for victim in victims:
                        victim.kill()
                    for victim in victims:
                        victim.start()
                producer.join(timeout=600)
                if producer.is_alive():
                    raise BenchError("the producer did not get every event acknowledged")
                _wait(lambda: _ended(query) >= events, 600, "every run to end")
                took = time.monotonic() - began
            finally:
                for process in processes:
                    process.stop()
            result = _count(query, producer.acked, effects)
            result.update(backend=backend, kills={p.name: p.kills for p in processes},
                          requests_retried=producer.retried, seconds=round(took, 1),
                          load_before=load())
            return result


def _wait(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(0.2)


def _ended(query: Query) -> int:
    return int(query("SELECT count(*) FROM runs WHERE status IN "
                     "('Completed', 'Failed', 'Cancelled')", ())[0][0])


def _count(query: Query, acked: list[str], effects: Path) -> dict[str, Any]:
    stored = {row[0] for row in query("SELECT id FROM events WHERE name = 'crash/go'", ())}
    runs = query("SELECT id, event_id, status FROM runs", ())
    per_event = collections.Counter(event for _, event, _ in runs)
    recorded = {(run, name): json_value(output)["data"] for run, name, output in
                query("SELECT run_id, name, output FROM steps", ())}
    ran: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for line in effects.read_text().splitlines():
        run, step, token = line.split()
        ran[(run, step)].append(token)
    rerun_after_record = sum(1 for key, token in recorded.items()
                             if token in ran[key] and ran[key][-1] != token)
    never_ran = sum(1 for key, token in recorded.items() if token not in ran[key])
    return {
        "events_acknowledged": len(acked),
        "acknowledged_and_stored": len(set(acked) & stored),
        "events_stored": len(stored),
        "runs": len(runs),
        "runs_completed": sum(status == "Completed" for _, _, status in runs),
        "events_with_two_runs": sum(count > 1 for count in per_event.values()),
        "steps_recorded": len(recorded),
        "steps_rerun_although_recorded": rerun_after_record,
        "recorded_without_side_effect": never_ran,
        "steps_run_again_before_recorded": sum(len(tokens) - 1 for key, tokens in ran.items()
                                               if key in recorded),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.crash", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    if "postgres" in backends and (why := postgres_available()) is not None:
        print(f"PostgreSQL skipped: {why}", file=sys.stderr)
        backends.remove("postgres")
    report = Report("crash", {"events": args.events, "kills": args.kills, "seed": args.seed,
                              "batch": BATCH, "lease_seconds": 2})
    failed = 0
    for backend in backends:
        result = crash_run(backend, args.events, args.kills, args.seed)
        report.rounds.append(result)
        bad = (result["acknowledged_and_stored"] != result["events_acknowledged"]
               or result["steps_rerun_although_recorded"] or result["events_with_two_runs"]
               or result["runs_completed"] != args.events
               or result["steps_recorded"] != 3 * args.events)
        failed |= bool(bad)
    keys = [k for k in report.rounds[0] if k not in ("backend",)] if report.rounds else []
    print_table(f"Crash: kill -9 during {args.events} three-step runs",
                [[key, *(str(r[key]) for r in report.rounds)] for key in keys],
                ["", *(r["backend"] for r in report.rounds)])
    report.summary = {r["backend"]: r for r in report.rounds}
    print(f"\nsaved {report.save()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
