"""Live pages: one server-sent-events stream per open page, which reads what is new since its
own cursor, never fed rows by the writers.

A stream sleeps until it is poked, then reads what changed since its cursor (indexed reads:
events after an id, the first page of runs, one run) and sends it. ``Feed.poke`` is called
when this process committed writes (``storage.changes``: events stored, runs created, moved on
or ended; coalesced to a few calls a second however busy ingest is) and, on PostgreSQL, when
another process did (``NOTIFY tidings_live``, heard by one ``Storage.watch`` per process,
started with the first open stream): a run a worker on another machine completed appears on
every dashboard. A stream reads at most once every ``GAP`` seconds, on a beat common to all
streams, and open copies of one page share each read, render and the message made of it
(``Feed.shared``), so a busy database costs each distinct open page two reads a second, and
each copy only the sending; an idle one next to nothing: a read every ``RESCAN`` seconds, the
safety net for what no poke told (SQLite written by another process, a notification lost
while the listener reconnected). A page whose display changes
with time alone (a run's open bars) asks for a shorter ``period``.

Reading, not pushing, is what keeps browsers away from writers: a poke sets one flag per open
stream, and a stream whose browser is slow or stalled waits in its send (the server's transport
and the socket are the bounded buffer), reading nothing and holding at most the one message it
is writing, until the browser takes it or goes. A browser that drops the stream reconnects
(``retry: 1000``) with ``Last-Event-ID`` or the page's own newest id and catches up from there.

A page that can change no more (a run that ended) ends its stream: ``fresh`` answers with
``Last``, whose messages are sent before the stream closes, the last of them an event the page
named in ``sse-close``, so that the browser does not reconnect and nothing reads for it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from tidings.storage.base import Storage
from tidings.supervision import Ok, Supervisor

# The safety net: an unpoked stream reads again after this many seconds (a setting for the
# tests that show a page moved by a poke alone).
RESCAN = float(os.environ.get("TIDINGS_LIVE_RESCAN", "5"))
GAP = 0.5  # seconds between two reads of one stream, at least
KEEPALIVE = 15.0
SHARED_FOR = 0.2  # seconds a shared read serves the streams asking for it (``Feed.shared``)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Last:
    """What ``fresh`` answers when its page can change no more: these messages, then the end
    of the stream."""

    messages: list[str]


class Subscription:
    """One open stream: a flag, set by ``Feed.poke``, and how often it read."""

    __slots__ = ("_flag", "reads")

    def __init__(self) -> None:
        self._flag = asyncio.Event()
        self.reads = 0

    def poke(self) -> None:
        self._flag.set()

    async def wait(self, timeout: float) -> bool:
        """Until poked (True) or ``timeout`` seconds passed (False)."""
        poked = self._flag.is_set()
        if not poked and timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flag.wait(), timeout)
                poked = True
        self._flag.clear()
        return poked


class Feed:
    """The open streams of this process, poked when the storage changed."""

    def __init__(self, storage: Storage, supervisor: Supervisor) -> None:
        self._storage = storage
        self._supervisor = supervisor
        self._subscribers: set[Subscription] = set()
        self._listener: asyncio.Task[None] | None = None
        self._shared: dict[Hashable, tuple[float, asyncio.Future[Any]]] = {}

    def poke(self, *_: object) -> None:
        """Something changed: every stream looks again (takes any arguments, so it can stand
        as an ingest observer)."""
        self._shared.clear()
        for subscriber in self._subscribers:
            subscriber.poke()

    def __len__(self) -> int:
        return len(self._subscribers)

    async def shared(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        """``read()``'s result, shared by the streams that ask with the same ``key`` (what the
        read depends on: a page's filters and cursor) within ``SHARED_FOR`` seconds and with no
        poke between: twenty open copies of a page cost one read and one render, not twenty.
        Busy streams read on a common beat (``stream``), so that they ask together."""
        now = asyncio.get_running_loop().time()
        found = self._shared.get(key)
        if found is None or now - found[0] > SHARED_FOR or (
                found[1].done() and found[1].exception() is not None):
            if len(self._shared) > 1000:  # pages gone: forget what they asked for
                self._shared = {k: v for k, v in self._shared.items()
                                if now - v[0] <= SHARED_FOR}
            found = self._shared[key] = (now, asyncio.ensure_future(read()))
        result: T = await asyncio.shield(found[1])
        return result

    def reads(self) -> list[int]:
        """How many times each open stream read (tests: a stalled one reads no more)."""
        return [subscriber.reads for subscriber in self._subscribers]

    @contextlib.contextmanager
    def subscribed(self) -> Iterator[Subscription]:
        subscription = Subscription()
        if not self._subscribers:
            # The storage's commits are heard only while a stream is open: with none, a
            # write costs no callback (``SQLiteStorage._write``). Reads shared before were
            # not poked since; writes queued before commit unheard, so the streams are poked
            # once more a gap from now, as if one had been heard.
            self._shared.clear()
            self._storage.changes.add(self.poke)
            self._storage.changes.committed()
        self._subscribers.add(subscription)
        self._listen()
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)
            if not self._subscribers:
                self._storage.changes.remove(self.poke)

    def _listen(self) -> None:
        """Hear other processes' commits from the first open stream on (PostgreSQL)."""
        if self._storage.notifies and (self._listener is None or self._listener.done()):
            watch = self._storage.watch
            self._listener = self._supervisor.start(
                "tidings-live-listener", lambda ok: watch(self.poke, partial(self._heard, ok)))

    def _heard(self, ok: Ok) -> None:
        """Listening (again): what was told before is lost, so every stream looks now."""
        ok()
        self.poke()

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        self._storage.changes.remove(self.poke)

    async def stream(self, fresh: Callable[[], Awaitable[list[str] | Last]], *,
                     period: float | None = None) -> AsyncIterator[str]:
        """Server-sent-events text: what ``fresh()`` finds each time the stream is woken
        (``fresh`` keeps its own cursor), and a comment after ``KEEPALIVE`` seconds of silence,
        so that proxies keep the connection open. Unpoked, it reads again after ``period``
        (``RESCAN`` by default). It ends once ``fresh`` answers ``Last``."""
        period = RESCAN if period is None else period
        loop = asyncio.get_running_loop()
        with self.subscribed() as subscription:
            yield "retry: 1000\n\n"
            sent = loop.time()
            while True:
                began = loop.time()
                found = await fresh()
                subscription.reads += 1
                messages = found.messages if isinstance(found, Last) else found
                for message in messages:
                    yield message
                if isinstance(found, Last):
                    return
                if messages:
                    sent = loop.time()
                # The next read on the common beat (a multiple of GAP), so that copies of a
                # page read together and share it (``shared``).
                rest = math.ceil((began + GAP) / GAP) * GAP - loop.time()
                if rest > 0:
                    await asyncio.sleep(rest)
                due = began + period
                while True:
                    if loop.time() - sent >= KEEPALIVE:
                        sent = loop.time()
                        yield ": still here\n\n"
                    wake = min(due, sent + KEEPALIVE)
                    if await subscription.wait(wake - loop.time()) or loop.time() >= due:
                        break


def sse(event: str, html: str, ident: str | None = None) -> str:
    """One server-sent event carrying HTML (each line of it a ``data:`` line)."""
    lines = [f"event: {event}"]
    if ident is not None:
        lines.append(f"id: {ident}")
    lines.extend(f"data: {line}" for line in html.splitlines() or [""])
    return "\n".join(lines) + "\n\n"
