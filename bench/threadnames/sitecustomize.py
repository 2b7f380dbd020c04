"""Imported at start-up by every server the benchmarks run (this folder is first on their
``PYTHONPATH``): each Python thread gives the kernel its name as it starts (``prctl
PR_SET_NAME``; without ``tidings-``, as the kernel keeps 15 bytes), so ``/proc/PID/task/TID/
comm`` tells the threads apart and ``bench.harness.threads_cpu`` splits a server's CPU by
thread. Python before 3.14 leaves every thread with the process's name. Benchmark-only."""

from __future__ import annotations

import contextlib
import ctypes
import threading
from typing import Any

_PR_SET_NAME = 15
_libc = ctypes.CDLL(None, use_errno=True)
_bootstrap_inner: Any = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]


def _named(self: threading.Thread) -> None:
    with contextlib.suppress(Exception):
        _libc.prctl(_PR_SET_NAME, self.name.removeprefix("tidings-").encode()[:15], 0, 0, 0)
    _bootstrap_inner(self)


threading.Thread._bootstrap_inner = _named  # type: ignore[attr-defined]
