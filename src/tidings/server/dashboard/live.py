"""Live pages: one server-sent-events stream per open page, woken when something may have
changed, never fed rows by the writers.

Writers (ingest, the runs API) only ``poke`` the ``Feed``: that sets one flag per open stream
and returns, so a slow or stalled browser costs ingest nothing and no buffer grows with it.
Each stream, once woken (or after ``PERIOD`` seconds, whichever comes first), reads what is new
since its own cursor and sends it. The period is what makes other processes' writes appear (a
worker finishing a run, another server ingesting) without a message between processes;
PostgreSQL's ``LISTEN`` can poke the feed as well, and the period is then only a safety net.
A browser that drops the stream reconnects with ``Last-Event-ID`` (or the page's own newest id)
and catches up from there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

PERIOD = 1.0
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
