"""Database calls made in worker threads (psycopg's sync pool, SQLite's readers), ended before
their callers are.

Cancelling a task that awaits a thread's work does not stop the thread: its statement runs on,
holding a connection and the locks it took. A runtime's ``stop`` cancels its loops and awaits
them, so it returned while a read it had sent still ran, and a ``DROP SCHEMA`` after it
deadlocked with that read. ``in_thread`` therefore lets a cancelled call end only once its thread
is done with it (a call still waiting for a thread is dropped at once): whoever awaits a
cancelled task knows that none of its statements are running.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")


async def in_thread(threads: Executor, fn: Callable[[], T]) -> T:
    """``fn()`` in one of ``threads``; cancelled, it raises only once ``fn`` has returned (or
    never started)."""
    work = threads.submit(fn)
    try:
        return await asyncio.wrap_future(work)
    except asyncio.CancelledError:
        if not work.cancel():  # running: its statement ends before the cancellation does
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
