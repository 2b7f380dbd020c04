"""Connect, a worker's life as inngest-py's ``test_signals`` times it, and Tidings' share of it.

The SDK's test starts a fresh ``python`` with a one-function ``connect()`` worker, wants it
listed by ``GET /v0/connect/envs/…/conns`` within 3 s, triggers a run whose step sleeps 5 s,
sends the worker SIGTERM while it runs, waits for the run to complete, wants the worker gone
from the list within 3 s and its process ended within 1 s more. On a loaded machine it misses
these budgets now and then. This program runs the same sequence ``--rounds`` times against
``tidings dev`` (SQLite) and splits each phase into the part Tidings spends (from its log: the
socket opened → the worker ready, the socket closed → the worker's rows gone) and the rest:
the SDK's interpreter and imports (timed alone as ``import_seconds``), its handshake and its
shutdown. Figures are seconds, medians over the rounds.

``python -m bench.connect_signals [--rounds 5] [--sleep 5]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import textwrap
import time
import urllib.request
from datetime import datetime
from multiprocessing.connection import Listener
from pathlib import Path
from typing import Any

from bench.engine import Report, load, pin_self, tidings_dev

DEV_ENV = "00000000-0000-4000-b000-000000000000"
WORKER = textwrap.dedent("""
    import asyncio, sys
    from multiprocessing.connection import Client
    import inngest
    from inngest.connect import connect

    app, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    conn = Client(("127.0.0.1", port))
    client = inngest.Inngest(app_id=app, is_production=False)

    @client.create_function(fn_id="fn", retries=0, trigger=inngest.TriggerEvent(event=app))
    async def fn(ctx: inngest.Context) -> str:
        conn.send("started")
        await asyncio.sleep(seconds)
        return "Hello"

    asyncio.run(connect([(client, [fn])], instance_id=app).start())
""")
_STAMP = re.compile(r"^(\S+Z) ")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.load(answer)


def _listed(base: str, app: str) -> bool:
    return any(c["instance_id"] == app
               for c in _get(f"{base}/v0/connect/envs/{DEV_ENV}/conns")["data"])


def _until(what: str, check: Any, timeout: float = 60) -> float:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return time.monotonic()


def _tidings_share(log: str, instance: str) -> tuple[float, float]:
    """From the server's log: the socket opened → the worker ready, and the socket closed →
    its rows gone (``disconnected``), for the worker ``instance`` (one worker at a time)."""
    lines = log.splitlines()
    [ready] = [i for i, line in enumerate(lines) if "): ready" in line
               and f"instance {instance}," in line]
    conn = lines[ready].split("connect ", 1)[1].split(" ", 1)[0]
    [left] = [i for i, line in enumerate(lines) if f"connect {conn} " in line
              and "): disconnected" in line]
    opened = max(i for i in range(ready) if "connection open" in lines[i])
    closed = max(i for i in range(left) if "connection closed" in lines[i])
    return (_at(lines[ready]) - _at(lines[opened]), _at(lines[left]) - _at(lines[closed]))


def _at(line: str) -> float:
    found = _STAMP.match(line)
    assert found, line
    return datetime.fromisoformat(found.group(1).replace("Z", "+00:00")).timestamp()


def one_round(base: str, log: Path, index: int, sleep: float) -> dict[str, float]:
    app = f"signals-{index}-{os.getpid()}"
    env = {**os.environ, "INNGEST_DEV": "1", "INNGEST_BASE_URL": base}
    with Listener(("127.0.0.1", 0)) as listener:
        started = time.monotonic()
        worker = subprocess.Popen([sys.executable, "-c", WORKER, app,
                                   str(listener.address[1]), str(sleep)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            listed = _until("the worker to be listed", lambda: _listed(base, app))
            request = urllib.request.Request(f"{base}/e/bench", method="POST",
                                             data=json.dumps({"name": app}).encode())
            with urllib.request.urlopen(request, timeout=30) as answer:
                [event_id] = json.load(answer)["ids"]
            with listener.accept() as conn:
                conn.recv()
            worker.send_signal(signal.SIGTERM)
            termed = time.monotonic()

            def completed() -> bool:
                runs = _get(f"{base}/v1/events/{event_id}/runs")["data"]
                return bool(runs) and runs[0]["status"] == "Completed"

            done = _until("the run to complete", completed)
            gone = _until("the worker to leave the list", lambda: not _listed(base, app))
            worker.wait(timeout=60)
            ended = time.monotonic()
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    handshake, leaving = _tidings_share(log.read_text(errors="replace"), app)
    return {"listed": listed - started, "tidings_handshake": handshake,
            "completed_after_sigterm": done - termed, "unlisted_after_completed": gone - done,
            "tidings_leaving": leaving, "exited_after_unlisted": ended - gone}


def import_seconds() -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import inngest, inngest.connect"], check=True)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sleep", type=float, default=5.0, help="seconds the step sleeps")
    args = parser.parse_args()
    pin_self()
    report = Report("connect_signals", {"rounds": args.rounds, "sleep": args.sleep,
                                        "load_before": load()})
    with tidings_dev("sqlite", args=["--no-discovery", "--connect-gateway-port", "0"]) as engine:
        base = f"http://127.0.0.1:{engine.port}"
        for index in range(args.rounds):
            result = {**one_round(base, engine.log, index, args.sleep),
                      "import_seconds": import_seconds(), "load": load()}
            report.rounds.append(result)
            print("  round", index + 1, "  ".join(f"{k} {v:.3f}" for k, v in result.items()),
                  flush=True)
    report.summary = {key: round(statistics.median(r[key] for r in report.rounds), 3)
                      for key in report.rounds[0]}
    report.summary["budgets"] = {"listed": 3.0, "unlisted_after_completed": 3.0,
                                 "exited_after_unlisted": 1.0}
    for key, value in report.summary.items():
        print(f"  {key:<26} {value}")
    print(f"results: {report.save()}")


if __name__ == "__main__":
    main()
