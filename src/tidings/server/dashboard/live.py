"""Live pages: one server-sent-events stream per open page, which reads what is new since its
own cursor, never fed rows by the writers.

Each stream wakes every ``PERIOD`` seconds (or at once when poked: the dashboard's own actions
poke the ``Feed``), reads what changed since its cursor (indexed reads: events after an id, the
first page of runs, one run) and sends it. Reading is what makes every writer visible, in this
process or another (a worker finishing a run, another server ingesting), on SQLite and on
PostgreSQL alike, without a message between processes. A poke only sets one flag per open
stream, so nothing a browser does, slow or stalled, reaches a writer, and no buffer grows with
it: a stalled stream holds at most the one message it is writing. A browser that drops the
stream reconnects (``retry: 1000``) with ``Last-Event-ID`` or the page's own newest id and
catches up from there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

PERIOD = 0.5
KEEPALIVE = 15.0


class Subscription:
    """One open stream: a flag, set by ``Feed.poke``."""

    __slots__ = ("_flag",)

    def __init__(self) -> None:
        self._flag = asyncio.Event()

    def poke(self) -> None:
        self._flag.set()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._flag.wait(), timeout)
        self._flag.clear()


class Feed:
    """The open streams of this process."""

    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()

    def poke(self, *_: object) -> None:
        """Something changed: every stream looks again (takes any arguments, so it can stand
        as an ingest observer)."""
        for subscriber in self._subscribers:
            subscriber.poke()

    def __len__(self) -> int:
        return len(self._subscribers)

    @contextlib.contextmanager
    def subscribed(self) -> Iterator[Subscription]:
        subscription = Subscription()
        self._subscribers.add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)

    async def stream(self, fresh: Callable[[], Awaitable[list[str]]], *,
                     period: float = PERIOD) -> AsyncIterator[str]:
        """Server-sent-events text: what ``fresh()`` finds each time the stream is woken
        (``fresh`` keeps its own cursor), and a comment now and then so that proxies keep the
        connection open."""
        with self.subscribed() as subscription:
            yield "retry: 1000\n\n"
            quiet = 0.0
            while True:
                messages = await fresh()
                for message in messages:
                    yield message
                if messages:
                    quiet = 0.0
                else:
                    quiet += period
                    if quiet >= KEEPALIVE:
                        quiet = 0.0
                        yield ": still here\n\n"
                await subscription.wait(period)


def sse(event: str, html: str, ident: str | None = None) -> str:
    """One server-sent event carrying HTML (each line of it a ``data:`` line)."""
    lines = [f"event: {event}"]
    if ident is not None:
        lines.append(f"id: {ident}")
    lines.extend(f"data: {line}" for line in html.splitlines() or [""])
    return "\n".join(lines) + "\n\n"
