"""P1 in one process: what tracing costs an ingest request where P10's noise is smaller. The
ASGI app (``tidings dev``'s, on a fresh SQLite file, metrics on) is called directly with
``POST /e/{key}`` by 32 tasks at a time, no sockets; the modes alternate round by round in the
same process, pinned to the server's core, and each round's CPU per request is split by
thread (``bench.harness.threads_cpu``). Modes:

- ``on``: tracing off (metrics on, as under ``serve``);
- ``traced``: every span exported to an exporter that drops it, as ``bench/variants.py
  traced`` does;
- ``dropped``: tracing on, each span's record dropped as it is added (no queue, no export
  thread): the path's cost alone.

``python -m bench.p1_inproc [--modes on,traced,dropped] [--rounds 10] [--n 8000]``
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from bench.harness import SERVER_CPU, THREAD_NAMES, threads_cpu
from bench.p1_ingest import EVENT

CONCURRENCY = 32
BODY = msgspec.json.encode(EVENT)


def scope(body: bytes) -> dict[str, Any]:
    """An ASGI ``POST /e/benchkey`` of ``body`` from a loopback client."""
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/e/benchkey",
            "raw_path": b"/e/benchkey", "query_string": b"", "root_path": "",
            "headers": headers, "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8288)}


async def post(app: Any, body: bytes = BODY) -> None:
    """One request of ``body`` to the ASGI ``app``; raises unless it answers 200."""
    given = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal given
        if given:  # the app asks again only to learn of a disconnect: there is none
            await asyncio.Event().wait()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope(body), receive, send)
    if status != 200:
        raise RuntimeError(f"POST /e/benchkey answered {status}")


async def posts(app: Any, total: int, *, body: bytes = BODY,
                concurrency: int = CONCURRENCY) -> None:
    """``total`` requests of ``body``, ``concurrency`` tasks each sending one after another."""
    async def one_after_another(count: int) -> None:
        for _ in range(count):
            await post(app, body)

    await asyncio.gather(*(one_after_another(total // concurrency)
                           for _ in range(concurrency)))


async def cpu_per(app: Any, n: int, per: int, *, body: bytes = BODY,
                  concurrency: int = CONCURRENCY) -> dict[str, float]:
    """CPU µs per unit (``per`` units a request) of ``n`` requests to ``app``: ``all`` of the
    process, and each kind of thread's (``bench.harness.threads_cpu``)."""
    cpu, threads = time.process_time(), threads_cpu(os.getpid())
    await posts(app, n, body=body, concurrency=concurrency)
    cpu, after = time.process_time() - cpu, threads_cpu(os.getpid())
    done = n // concurrency * concurrency * per
    split = {kind: 1e6 * (spent - threads.get(kind, 0.0)) / done for kind, spent in after.items()}
    return {"all": 1e6 * cpu / done, **split}


def on_the_server_core() -> None:
    """This process on the server's core, the threads it starts naming themselves to the kernel
    (``bench/threadnames``), as a bench's server is."""
    spec = importlib.util.spec_from_file_location("bench_thread_names",
                                                  THREAD_NAMES / "sitecustomize.py")
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    os.sched_setaffinity(0, {int(c) for c in SERVER_CPU.split(",")})


def show(found: dict[str, list[dict[str, float]]], *, digits: int) -> None:
    """Each mode's median CPU (the minimum in brackets) and its threads' medians, largest
    first, to ``digits`` decimals."""
    def median(rounds: list[dict[str, float]], kind: str) -> float:
        return statistics.median(one.get(kind, 0.0) for one in rounds)

    width = max(len(mode) for mode in found)
    for mode, rounds in found.items():
        kinds = sorted({k for one in rounds for k in one if k != "all"},
                       key=lambda k: -median(rounds, k))
        split = "  ".join(f"{kind} {median(rounds, kind):.{digits}f}" for kind in kinds
                          if median(rounds, kind) >= 10 ** -digits)
        print(f"  {mode:<{width}} {median(rounds, 'all'):6.{digits}f} "
              f"({min(one['all'] for one in rounds):.{digits}f})  {split}")


def _modes() -> dict[str, Callable[[], None]]:
    from bench.variants import Drop
    from tidings.observe import tracing

    def dropped() -> None:
        tracing.export_to(Drop())
        assert tracing._sink is not None
        tracing._sink.add = lambda record: None

    return {"on": lambda: tracing.use(None), "traced": lambda: tracing.export_to(Drop()),
            "dropped": dropped}


async def measure(modes: list[str], rounds: int, n: int) -> dict[str, list[dict[str, float]]]:
    from tidings.core import Core
    from tidings.observe import metrics
    from tidings.server import create_app
    from tidings.settings import Settings

    setters = _modes()
    found: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
        settings = Settings(mode="dev", database_url=f"sqlite:///{Path(tmp) / 'tidings.db'}",
                            data_dir=Path(tmp) / "data")
        core = await Core.start(settings)
        try:
            metrics.configure(on=True)
            setters["traced"]()  # so that the app is built with its request observer
            app = create_app(core.settings, core)
            await posts(app, 3_200)
            gc.freeze()  # as ``tidings dev`` does once started
            for _ in range(rounds):
                for mode in modes:
                    setters[mode]()
                    await posts(app, 1_600)
                    found[mode].append(await cpu_per(app, n, 1))
        finally:
            await core.close()
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.p1_inproc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="on,traced,dropped")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--n", type=int, default=8_000, help="measured requests per round")
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    unknown = set(modes) - {"on", "traced", "dropped"}
    if unknown:
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    on_the_server_core()
    found = asyncio.run(measure(modes, args.rounds, args.n))
    print(f"CPU µs per request, medians of {args.rounds} rounds (min of all in brackets)")
    show(found, digits=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
