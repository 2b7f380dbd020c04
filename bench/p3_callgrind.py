"""P3 in one process, one mode per process, for counting CPU instructions with callgrind, as
``bench.p1_callgrind`` does for P1: counts do not depend on the machine's load, where P3's
rounds in P10 move by ±5 % between rounds. The ASGI app (``tidings dev``'s with
``bench.apps``, on a fresh SQLite file, its runtime started by the app's own lifespan) is
sent 500-event requests of ``bench/p3.noop`` (a one-step function) directly, and the
measured runs, from the first request to the last run completed, go between
``os.getppid()`` and ``os.getpgrp()``, which callgrind is told to start and stop at. Modes:
``off`` (no metrics, WARNING), ``on`` (metrics, INFO, JSON), ``traced`` (as on, every span
exported to an exporter that drops it, in this process), ``dropped`` (as traced, each span's
record dropped as it is added: the event loop's part alone).

``PYTHONHASHSEED=0 valgrind --tool=callgrind --separate-threads=yes
--zero-before=os_getppid --dump-before=os_getpgrp python -m bench.p3_callgrind MODE [N]``,
then ``callgrind_annotate`` on each dump: the main thread's (the event loop's) ends in
``.1-01``; the other threads' are their files' totals. Divide by ``N`` for a run's.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.p1_callgrind import MODES, observed
from bench.p1_inproc import post
from bench.p3_throughput import BATCH, _bodies

DONE = "SELECT count(*) FROM runs WHERE status = 'Completed'"
LOOK_S = 2.0  # how often the completed runs are counted: rarely, so that looking costs little


async def _lifespan(app: Any) -> tuple[asyncio.Queue[dict[str, Any]], asyncio.Task[None]]:
    """The app's lifespan started; the queue takes its shutdown message."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}},
                                   inbox.get, outbox.put))
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"the app did not start: {started}")
    return inbox, task


async def _runs(app: Any, db: Path, bodies: list[bytes], until: int) -> None:
    """Send ``bodies``, then wait until ``until`` runs have completed."""
    for body in bodies:
        await post(app, body)
    with sqlite3.connect(db) as conn:
        for _ in range(int(600 / LOOK_S)):
            if conn.execute(DONE).fetchone()[0] >= until:
                return
            await asyncio.sleep(LOOK_S)
    raise TimeoutError(f"{until} runs did not complete in 600 s")


async def measure(mode: str, n: int) -> None:
    from bench.apps import client
    from tidings.server import create_app

    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
        db = Path(tmp) / "tidings.db"
        app = create_app(observed(mode, Path(tmp)), apps=[client])
        inbox, lifespan = await _lifespan(app)
        try:
            await _runs(app, db, _bodies(BATCH * 2, "warm-up"), BATCH * 2)
            gc.freeze()  # as ``tidings dev`` does once started
            os.getppid()  # callgrind: --zero-before=os_getppid
            await _runs(app, db, _bodies(n, "measured"), BATCH * 2 + n)
            os.getpgrp()  # callgrind: --dump-before=os_getpgrp
        finally:
            await inbox.put({"type": "lifespan.shutdown"})
            await lifespan


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in MODES:
        print(__doc__)
        return 2
    n = int(args[1]) if len(args) > 1 else 2_000
    if n % BATCH:
        print(f"N must be a multiple of {BATCH}")
        return 2
    asyncio.run(measure(args[0], n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
