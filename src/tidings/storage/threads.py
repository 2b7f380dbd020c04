"""Database calls made in worker threads (psycopg's sync pool, SQLite's readers), ended before
their callers are.

Cancelling a task that awaits a thread's work does not stop the thread: its statement runs on,
holding a connection and the locks it took. A runtime's ``stop`` cancels its loops and awaits
them, so it returned while a read it had sent still ran, and a ``DROP SCHEMA`` after it
deadlocked with that read. ``in_thread`` therefore lets a cancelled call end only once its thread
is done with it (a call still waiting for a thread is dropped at once): whoever awaits a
cancelled task knows that none of its statements are running.

A call that waits in its thread for a pooled connection has run nothing yet either, and may wait
for the pool's whole timeout (30 s) when every connection is busy. Such a call passes a ``Gate``
and enters it once it holds its connection, before its first statement: cancelled before that,
its caller abandons the gate and leaves at once, and the thread, on getting its connection,
hands it back without running anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")


class Abandoned(Exception):
    """Raised in a call's thread that would enter a gate its cancelled caller abandoned."""


class Gate:
    """Whether a call's thread has begun its statements (entered) or its caller, cancelled
    before that, has left without it (abandoned): whichever comes first holds."""

    __slots__ = ("_lock", "_state")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = 0  # 0 neither, 1 entered, 2 abandoned

    def enter(self) -> None:
        """Called by the thread before its first statement; raises ``Abandoned`` if the caller
        has left."""
        with self._lock:
            if self._state == 2:
                raise Abandoned
            self._state = 1

    def abandon(self) -> bool:
        """Called by a cancelled caller: true if the thread had not entered (and now never
        will), false if its statements have begun."""
        with self._lock:
            if self._state == 1:
                return False
            self._state = 2
            return True


async def in_thread(threads: Executor, fn: Callable[[], T], gate: Gate | None = None) -> T:
    """``fn()`` in one of ``threads``; cancelled, it raises only once ``fn`` has returned (or
    never started, or never entered ``gate``)."""
    work = threads.submit(fn)
    try:
        return await asyncio.wrap_future(work)
    except asyncio.CancelledError:
        # running and past its gate: its statement ends before the cancellation does
        if not work.cancel() and not (gate is not None and gate.abandon()):
            await _ended(work)
        raise


async def _ended(work: Future[Any]) -> None:
    """Wait until ``work`` is done, whatever cancels the waiting task meanwhile."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    work.add_done_callback(lambda _: loop.call_soon_threadsafe(done.set))
    while not done.is_set():
        with contextlib.suppress(asyncio.CancelledError):
            await done.wait()
