"""P1 in one process, one mode per process, for counting CPU instructions with callgrind:
counts do not depend on the machine's load, so a few hundred instructions per request show.
The ASGI app (``tidings dev``'s, on a fresh SQLite file) is called directly with ``POST
/e/{key}`` by 32 tasks at a time, as ``bench.p1_inproc`` does; the measured requests run
between ``os.getppid()`` and ``os.getpgrp()``, which callgrind is told to start and stop at.
Modes: ``off`` (``--no-metrics``, WARNING), ``on`` (metrics, INFO, JSON), ``traced`` (as on,
every span exported to an exporter that drops it, in this process), ``dropped`` (as traced,
each span's record dropped as it is added: the event loop's part alone).

``PYTHONHASHSEED=0 valgrind --tool=callgrind --zero-before=os_getppid --dump-before=os_getpgrp
python -m bench.p1_callgrind MODE [N]``, then ``callgrind_annotate`` on the dump ending in
``.1``: ``Py_RunMain``'s inclusive count is the event loop's thread, ``thread_run``'s the
others (SQLite's writer and syncer, the span export thread).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.p1_inproc import _modes, posts

MODES = ("off", "on", "traced", "dropped")  # ``observed`` says what each one is


def observed(mode: str, folder: Path) -> Any:
    """Logs, metrics and tracing as ``mode`` has them (``off``, ``on``, ``traced``,
    ``dropped``), and the settings of a ``tidings dev`` on a fresh SQLite file in
    ``folder``."""
    from tidings.observe import logs, metrics
    from tidings.settings import Observe, Settings

    logs.configure(format="json", level="warning" if mode == "off" else "info")
    metrics.configure(on=mode != "off")
    if mode in ("traced", "dropped"):
        _modes()[mode]()
    return Settings(mode="dev", database_url=f"sqlite:///{folder / 'tidings.db'}",
                    data_dir=folder / "data", observe=Observe(metrics=mode != "off"))


async def measure(mode: str, n: int) -> None:
    from tidings.core import Core
    from tidings.server import create_app

    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
        settings = observed(mode, Path(tmp))
        core = await Core.start(settings)
        try:
            app = create_app(core.settings, core)
            await posts(app, 1_600)
            gc.freeze()  # as ``tidings dev`` does once started
            await posts(app, 640)
            os.getppid()  # callgrind: --zero-before=os_getppid
            await posts(app, n)
            os.getpgrp()  # callgrind: --dump-before=os_getpgrp
        finally:
            await core.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in MODES:
        print(__doc__)
        return 2
    asyncio.run(measure(args[0], int(args[1]) if len(args) > 1 else 3_200))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
