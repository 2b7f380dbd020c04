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
HEADERS = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
           (b"content-length", str(len(BODY)).encode())]
SCOPE = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
         "scheme": "http", "path": "/e/benchkey", "raw_path": b"/e/benchkey",
         "query_string": b"", "root_path": "", "headers": HEADERS,
         "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8288)}


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


def _modes() -> dict[str, Callable[[], None]]:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from tidings.observe import tracing

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

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
            await _requests(app, 3_200)
            gc.freeze()  # as ``tidings dev`` does once started
            for _ in range(rounds):
                for mode in modes:
                    setters[mode]()
                    await _requests(app, 1_600)
                    cpu, threads = time.process_time(), threads_cpu(os.getpid())
                    await _requests(app, n)
                    cpu, after = time.process_time() - cpu, threads_cpu(os.getpid())
                    done = n // CONCURRENCY * CONCURRENCY
                    split = {kind: 1e6 * (spent - threads.get(kind, 0.0)) / done
                             for kind, spent in after.items()}
                    found[mode].append({"all": 1e6 * cpu / done, **split})
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
    # The threads the app starts take their names to the kernel (``bench/threadnames``).
    spec = importlib.util.spec_from_file_location("bench_thread_names",
                                                  THREAD_NAMES / "sitecustomize.py")
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    os.sched_setaffinity(0, {int(c) for c in SERVER_CPU.split(",")})
    found = asyncio.run(measure(modes, args.rounds, args.n))
    print(f"CPU µs per request, medians of {args.rounds} rounds (min of all in brackets)")
    for mode, rounds in found.items():
        kinds = sorted({k for one in rounds for k in one if k != "all"},
                       key=lambda k: -statistics.median(one.get(k, 0.0) for one in rounds))
        split = "  ".join(f"{kind} {statistics.median(one.get(kind, 0.0) for one in rounds):.1f}"
                          for kind in kinds
                          if statistics.median(one.get(kind, 0.0) for one in rounds) >= 0.1)
        print(f"  {mode:<8} {statistics.median(one['all'] for one in rounds):6.1f} "
              f"({min(one['all'] for one in rounds):.1f})  {split}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
