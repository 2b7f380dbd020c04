"""The SQLite writer: one thread takes every job queued at that moment, runs them in one
transaction and commits once (group commit); the syncer thread ``fdatasync``s the WAL before the
callers hear of their commits; the checkpointer copies the WAL back in its own thread. Why, in
``sqlite.py``'s opening."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tidings.errors import DatabaseUnavailable, StorageError, StorageStopped
from tidings.outage import unavailable
from tidings.storage.sqlite_append import Append, append_together, plain_append, run_alone
from tidings.supervision import Outage

log = logging.getLogger("tidings.storage")
MAX_BATCH = 1024

Job = tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


def connect(path: str, *, readonly: bool = False, synced: bool = True) -> sqlite3.Connection:
    """A connection; ``synced=False`` (the writer's, see ``Syncer``) leaves the fsync of each
    commit to the caller."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA foreign_keys = ON")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    else:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL" if synced else "PRAGMA synchronous = NORMAL")
        # Checkpoints run in their own thread (``Checkpointer``), not inside the writer's
        # commits, where they would hold up every request waiting on that commit.
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        # Savepoints keep the pages they may have to restore in a sub-journal: in memory, not
        # a temporary file opened, written and deleted on every commit.
        conn.execute("PRAGMA temp_store = MEMORY")
    return conn


def _resolve(done: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in done:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class Writer(threading.Thread):
    """The one thread that writes. A failed transaction (a full disk, a lock held too long)
    fails the callers of that batch and the writer goes on with the next. Should the thread
    itself die, the storage stops: every write waiting or to come fails with
    ``StorageStopped``, which stops the process's loops for good (``supervision.py``) rather
    than leaving them waiting for answers that never come."""

    def __init__(self, path: str) -> None:
        super().__init__(name="tidings-sqlite-writer", daemon=True)
        self.path = path
        # Jobs arrive in lists: each list is what one event-loop iteration submitted.
        self.jobs: queue.SimpleQueue[list[Job] | None] = queue.SimpleQueue()
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self.stopped: StorageStopped | None = None
        self.syncer: Syncer | None = None

    def run(self) -> None:
        syncer = None
        try:
            conn = connect(self.path, synced=False)
            if _wal_mode(conn):
                syncer = self.syncer = Syncer(self.path + "-wal")
                syncer.start()
            else:
                conn.execute("PRAGMA synchronous = FULL")
        except BaseException as exc:
            self.failure = exc
            self.ready.set()
            return
        self.ready.set()
        batch: list[Job] = []
        try:
            stop = False
            while not stop:
                lists, stop = _take(self.jobs, MAX_BATCH)
                if not lists:
                    continue
                batch = [job for jobs in lists for job in jobs]
                answers = self._commit(conn, batch)
                batch = []
                if syncer is None:
                    _answer(answers)
                    continue
                syncer.answers.put(answers)
                if syncer.stopped is not None:
                    raise syncer.stopped
        except BaseException as exc:
            # Logged, and told to every caller: the thread ends without raising further.
            self.stopped = exc if isinstance(exc, StorageStopped) else _stopped("writer", exc)
            fail_queue(self.jobs, self.stopped, [batch])
            if syncer is not None and syncer.stopped is not None:
                fail_queue(syncer.answers, self.stopped)
        finally:
            if syncer is not None:
                syncer.answers.put(None)
                syncer.join()
            conn.close()

    @staticmethod
    def _commit(conn: sqlite3.Connection, batch: list[Job]) -> _Answers:
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            start, size = 0, len(batch)
            while start < size:
                end = start
                while end < size and plain_append(batch[end][0]):
                    end += 1
                if end - start > 1:
                    appends = [fn for fn, _, _ in batch[start:end] if isinstance(fn, Append)]
                    if append_together(conn, appends, outcomes, first=start == 0):
                        start = end
                        continue
                for fn, _, _ in batch[start:max(end, start + 1)]:
                    run_alone(conn, fn, outcomes)
                start = max(end, start + 1)
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            kind = DatabaseUnavailable if unavailable(exc) else StorageError
            failure = kind(f"SQLite transaction failed: {exc}")
            failure.__cause__ = exc
            outcomes = [(False, failure)] * len(batch)
        answers: _Answers = {}
        for (_, future, loop), (ok, value) in zip(batch, outcomes, strict=True):
            answers.setdefault(loop, []).append((future, ok, value))
        return answers


_Answers = dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]]
Queued = TypeVar("Queued", list[Job], _Answers)


def _take(source: queue.SimpleQueue[Queued | None], limit: int = sys.maxsize
          ) -> tuple[list[Queued], bool]:
    """The next item (waiting for it), then those queued behind it while their sizes total
    under ``limit``; and whether the stop mark (None) was taken, which ends the queue."""
    first = source.get()
    if first is None:
        return [], True
    taken, size = [first], len(first)
    while size < limit:
        try:
            item = source.get_nowait()
        except queue.Empty:
            break
        if item is None:
            return taken, True
        taken.append(item)
        size += len(item)
    return taken, False


def _answer(answers: _Answers) -> None:
    for loop, done in answers.items():
        # A loop closed meanwhile has no one left to answer.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, done)


def _stopped(thread: str, exc: BaseException) -> StorageStopped:
    log.critical("the SQLite %s thread died: %s; no write can be made any more", thread, exc,
                 exc_info=exc)
    stopped = StorageStopped(f"the SQLite {thread} thread stopped ({exc!r}): restart Tidings")
    stopped.__cause__ = exc
    return stopped


def fail_queue(source: queue.SimpleQueue[Any], failure: StorageStopped,
                taken: Sequence[Any] = ()) -> None:
    """Fail what a dead thread had ``taken`` and what is queued for it: writes (lists of jobs)
    or answers."""
    pending = list(taken)
    while True:
        if pending:
            item = pending.pop()
        else:
            try:
                item = source.get_nowait()
            except queue.Empty:
                return
        if isinstance(item, dict):
            _answer({loop: [(future, False, failure) for future, _, _ in done]
                     for loop, done in item.items()})
        elif item is not None:
            _answer({loop: [(future, False, failure)] for _, future, loop in item})


def _wal_mode(conn: sqlite3.Connection) -> bool:
    """Whether the database is in WAL mode (``connect`` asks for it; a database that cannot use
    it, such as ``:memory:``, stays in another mode and syncs in each COMMIT)."""
    return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"


class Syncer(threading.Thread):
    """Makes the writer's commits durable before their callers hear of them.

    The writer commits without syncing and passes each commit's answers here, in commit order.
    The syncer takes every answer queued, ``fdatasync``s the WAL file once (on Linux that writes
    out the file's data, whichever descriptor wrote it), and only then answers them all: the
    sync started after all those commits had written their frames, so it covers them. If the
    sync fails, their callers get an error rather than an acknowledgement.

    SQLite itself syncs the WAL before every checkpoint and when the WAL is reset, so what a
    checkpoint copies into the database is always on disk first.
    """

    def __init__(self, wal: str) -> None:
        super().__init__(name="tidings-sqlite-syncer", daemon=True)
        self.wal = wal
        self.answers: queue.SimpleQueue[_Answers | None] = queue.SimpleQueue()
        self.stopped: StorageStopped | None = None
        self._fd: int | None = None

    def run(self) -> None:
        waiting: list[_Answers] = []
        try:
            stop = False
            while not stop:
                waiting, stop = _take(self.answers)
                if not waiting:
                    continue
                try:
                    self._sync()
                except OSError as exc:
                    failure = DatabaseUnavailable(
                        f"SQLite commit could not be synced to disk: {exc}")
                    waiting = [{loop: [(future, False, failure) for future, _, _ in done]
                                for loop, done in answers.items()} for answers in waiting]
                for answers in waiting:
                    _answer(answers)
        except BaseException as exc:
            # The writer sees it at its next commit and stops the storage.
            self.stopped = _stopped("syncer", exc)
            fail_queue(self.answers, self.stopped, waiting)
        finally:
            if self._fd is not None:
                os.close(self._fd)

    def _sync(self) -> None:
        """``fdatasync`` the WAL. It is opened once: SQLite deletes a WAL file only when its last
        connection closes, and the writer's stays open as long as this thread runs."""
        if self._fd is None:
            self._fd = os.open(self.wal, os.O_RDONLY | os.O_CLOEXEC)
        os.fdatasync(self._fd)


class Checkpointer(threading.Thread):
    """Copies the WAL back into the database every ``interval`` seconds (PASSIVE: it never
    blocks the writer or readers), and truncates it when the storage closes."""

    def __init__(self, path: str, interval: float = 0.25) -> None:
        super().__init__(name="tidings-sqlite-checkpoint", daemon=True)
        self.path = path
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        outage = Outage("the SQLite checkpointer", logger=log)
        conn: sqlite3.Connection | None = None
        wait = self.interval
        while not self.stopping.wait(wait):
            try:
                if conn is None:
                    conn = sqlite3.connect(self.path, isolation_level=None,
                                           check_same_thread=False)
                    conn.execute("PRAGMA busy_timeout = 1000")
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception as exc:
                # The WAL only grows meanwhile: keep trying, and say so once.
                wait = max(self.interval, outage.failed(exc))
                continue
            outage.ok()
            wait = self.interval
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
