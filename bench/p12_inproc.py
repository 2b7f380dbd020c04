"""P12's P2 in one process: what ``encrypt_data`` costs a 500-event request where P12's noise
is smaller. The ASGI app (``tidings dev``'s, on a fresh SQLite file) is called directly with
``POST /e/{key}`` by 4 tasks at a time, no sockets; sealing is switched off and on (the
default setting, as ``--encrypt-data`` sets it) between alternating rounds in the same
process, pinned to the server's core, and each round's CPU per event is split by thread
(``bench.harness.threads_cpu``). To compare two checkouts, run it on each in turn
(``PYTHONPATH=<other>/src``).

``python -m bench.p12_inproc [--rounds 8] [--n 200]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import SERVER_CPU, THREAD_NAMES, threads_cpu
from bench.p2_batch import BATCH, batch_body

CONCURRENCY = 4
BODY = batch_body()
HEADERS = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
           (b"content-length", str(len(BODY)).encode())]
SCOPE = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
         "scheme": "http", "path": "/e/benchkey", "raw_path": b"/e/benchkey",
         "query_string": b"", "root_path": "", "headers": HEADERS,
         "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8288)}
MODES = ("off", "on")


async def _request(app: Any) -> None:
    given = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal given
        if given:  # the app asks again only to learn of a disconnect: there is none
            await asyncio.Event().wait()
        given = True
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(dict(SCOPE), receive, send)
    if status != 200:
        raise RuntimeError(f"POST /e/benchkey answered {status}")


async def _requests(app: Any, total: int) -> None:
    async def one_after_another(count: int) -> None:
        for _ in range(count):
            await _request(app)

    await asyncio.gather(*(one_after_another(total // CONCURRENCY)
                           for _ in range(CONCURRENCY)))


async def measure(rounds: int, n: int) -> dict[str, list[dict[str, float]]]:
    from tidings.core import Core
    from tidings.events.env_settings import DEFAULT, switch_sealing
    from tidings.ids import now_ms
    from tidings.server import create_app
    from tidings.settings import Settings

    found: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
        settings = Settings(mode="dev", database_url=f"sqlite:///{Path(tmp) / 'tidings.db'}",
                            data_dir=Path(tmp) / "data", encrypt_data=True)
        core = await Core.start(settings)
        try:
            app = create_app(core.settings, core)
            await _requests(app, 4 * CONCURRENCY)
            gc.freeze()  # as ``tidings dev`` does once started
            for _ in range(rounds):
                for mode in MODES:
                    on = mode == "on"
                    await core.storage.write(
                        lambda tx, on=on: switch_sealing(tx, DEFAULT, on, now_ms()))
                    await _requests(app, 2 * CONCURRENCY)
                    cpu, threads = time.process_time(), threads_cpu(os.getpid())
                    await _requests(app, n)
                    cpu, after = time.process_time() - cpu, threads_cpu(os.getpid())
                    done = n // CONCURRENCY * CONCURRENCY * BATCH
                    split = {kind: 1e6 * (spent - threads.get(kind, 0.0)) / done
                             for kind, spent in after.items()}
                    found[mode].append({"all": 1e6 * cpu / done, **split})
        finally:
            await core.close()
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.p12_inproc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--n", type=int, default=200, help="measured requests per round")
    args = parser.parse_args(argv)
    # The threads the app starts take their names to the kernel (``bench/threadnames``).
    spec = importlib.util.spec_from_file_location("bench_thread_names",
                                                  THREAD_NAMES / "sitecustomize.py")
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    os.sched_setaffinity(0, {int(c) for c in SERVER_CPU.split(",")})
    found = asyncio.run(measure(args.rounds, args.n))
    print(f"CPU µs per event, medians of {args.rounds} rounds (min of all in brackets)")
    for mode, rounds in found.items():
        kinds = sorted({k for one in rounds for k in one if k != "all"},
                       key=lambda k: -statistics.median(one.get(k, 0.0) for one in rounds))
        split = "  ".join(f"{kind} {statistics.median(one.get(kind, 0.0) for one in rounds):.2f}"
                          for kind in kinds
                          if statistics.median(one.get(kind, 0.0) for one in rounds) >= 0.01)
        print(f"  {mode:<4} {statistics.median(one['all'] for one in rounds):6.2f} "
              f"({min(one['all'] for one in rounds):.2f})  {split}")
    ratios = [off["all"] / on["all"] for off, on in zip(found["off"], found["on"], strict=True)]
    print(f"  on/off by CPU: {statistics.median(one['all'] for one in found['off']) / statistics.median(one['all'] for one in found['on']):.3f} (medians), "  # noqa: E501
          f"{statistics.median(ratios):.3f} (per round)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
