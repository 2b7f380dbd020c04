"""Changes: who hears that the database changed, in this process and in the others.

The dashboard's live pages (``server/dashboard/live.py``) read what is new when they are told
that something may be; nothing is pushed to them. A storage calls ``Changes.committed()``
after each of its write transactions commits (events stored, runs created, moved on or ended,
and everything else: a list of which writes matter would drift from the pages), while any hook
listens (``heard``: the dashboard's hook is there only while one of its streams is open, so
with none SQLite adds no callback to a write). That costs a flag check: the hooks run at most
once every ``gap`` seconds, however many writes commit, so a busy ingest wakes the pages a few
times a second, not once per write.

On PostgreSQL one hook tells the other processes (``PostgresStorage``: one ``NOTIFY
tidings_live`` at a time, after the commit, never inside the writing transaction), and
``Storage.watch`` hears theirs. Each process sends its own token as the payload and ignores
its own notifications (it has already told its hooks). A notification lost (a process dying
between its commit and its ``NOTIFY``, a listener reconnecting) delays a page until its next
periodic read (``live.RESCAN``); it loses nothing, since pages read from the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger("tidings.storage")

GAP = 0.05  # seconds between two calls of the hooks, at most one call per gap


class Changes:
    """The hooks to call, coalesced, when this process committed a write."""

    def __init__(self, gap: float = GAP) -> None:
        self._gap = gap
        self._hooks: list[Callable[[], None]] = []
        self._due: asyncio.TimerHandle | None = None
        self._due_loop: asyncio.AbstractEventLoop | None = None

    def add(self, hook: Callable[[], None]) -> None:
        self._hooks.append(hook)

    def remove(self, hook: Callable[[], None]) -> None:
        if hook in self._hooks:
            self._hooks.remove(hook)

    @property
    def heard(self) -> bool:
        """Whether any hook listens: a storage need not note its commits when none does."""
        return bool(self._hooks)

    @property
    def due(self) -> bool:
        """Whether the hooks are to be called (a commit told, the gap not over yet)."""
        return self._due is not None

    def committed(self) -> None:
        """A write committed (called on the event loop): the hooks run within ``gap``."""
        if not self._hooks:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a write finished outside any loop: no hook could run anyway
            return
        if self._due is not None and self._due_loop is loop:
            return  # already due (a call left on a closed loop does not count)
        self._due, self._due_loop = loop.call_later(self._gap, self._call), loop

    def _call(self) -> None:
        self._due = self._due_loop = None
        for hook in list(self._hooks):
            try:
                hook()
            except Exception:
                log.exception("a hook of the storage's changes failed: %r", hook)

    def close(self) -> None:
        """Forget a call still due (its loop may be closing)."""
        if self._due is not None:
            self._due.cancel()
            self._due = self._due_loop = None
