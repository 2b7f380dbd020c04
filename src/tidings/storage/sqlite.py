"""SQLite storage: WAL, one writer thread with group commit, a pool of reader threads.

Every write is a function of a connection queued to the writer thread. The writer takes
everything queued at that moment, runs each function in its own savepoint inside one transaction
and commits once. Neighbouring event appends are merged into one savepoint and a few multi-row
INSERTs (``Append``).

No caller is answered before its commit is on disk. The writer commits at
``synchronous=NORMAL`` (the commit is written to the WAL, not yet synced) and hands the answers
to the syncer thread (``Syncer``), which ``fdatasync``s the WAL and only then resolves the
callers' futures. One fsync covers every commit made before it, and the writer goes on with the
next transaction while the disk syncs the last, so the fsync's wait is taken out of the writer's
path. (``synchronous=FULL`` would sync inside each COMMIT, holding the writer for it.)
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tidings.errors import StorageError, StorageStopped
from tidings.ids import now_ms
from tidings.storage import migrations
from tidings.storage.base import EventRow
from tidings.storage.changes import Changes
from tidings.storage.sqlite_append import Append
from tidings.storage.sqlite_writer import Checkpointer, Job, Writer, connect, fail_queue
from tidings.storage.threads import in_thread
from tidings.storage.tx import SQLiteTx, Tx, committed

T = TypeVar("T")


def path_from_url(url: str) -> str:
    if url.startswith("sqlite:///"):
        return url.removeprefix("sqlite:///") or ":memory:"
    if url.startswith("sqlite://"):
        return url.removeprefix("sqlite://")
    return url

log = logging.getLogger("tidings.storage")


class _Counted:
    """A write job that notes whether it changed any row (a claim that found nothing due
    did not: ``changes`` is not told of it)."""

    __slots__ = ("_changed", "_fn")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        self._fn = fn
        self._changed = False

    def __call__(self, conn: sqlite3.Connection) -> Any:
        before = conn.total_changes
        try:
            return self._fn(conn)
        finally:
            self._changed = conn.total_changes != before

    def committed(self, then: Callable[[asyncio.Future[Any]], None]
                  ) -> Callable[[asyncio.Future[Any]], None]:
        """``then(future)`` once answered, if this job changed rows (the writer thread set
        ``_changed`` before it answered)."""
        return lambda future: then(future) if self._changed else None


class SQLiteStorage:
    """The embedded backend. One process writes at a time; any number may read."""

    dialect = "sqlite"
    routes_inline = True  # append_events(route=...) routes in the storing transaction
    ordered_writes = True  # one writer thread, jobs committed in submission order
    notifies = False  # nothing between processes: their executors poll
    binary_data = True  # events.data is a BLOB

    def __init__(self, url: str) -> None:
        self.path = path_from_url(url)
        self._writer: Writer | None = None
        self._pending: dict[asyncio.AbstractEventLoop, list[Job]] = {}
        self._checkpointer: Checkpointer | None = None
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tidings-sqlite-read")
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._now: sqlite3.Connection | None = None  # ``read_now``'s, under ``_now_lock``
        self._now_lock = threading.Lock()
        self._backlog = 0  # rows (events; 1 per other write) queued and not yet answered
        self.changes = Changes()  # commits of this process (``storage/changes.py``)

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        await self.migrate()
        writer = Writer(self.path)
        writer.start()
        await asyncio.to_thread(writer.ready.wait)
        if writer.failure is not None:
            raise StorageError(f"cannot open SQLite database {self.path}: {writer.failure}")
        self._writer = writer
        if self.path != ":memory:":
            self._checkpointer = Checkpointer(self.path)
            self._checkpointer.start()

    async def close(self) -> None:
        self.changes.close()
        for loop in list(self._pending):
            self._hand_over(loop)
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.jobs.put(None)
            await asyncio.to_thread(writer.join)
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stopping.set()
            await asyncio.to_thread(checkpointer.join)
        await asyncio.to_thread(self._readers.shutdown)
        with self._lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
        with self._now_lock:
            if self._now is not None:
                self._now.close()
                self._now = None

    async def write(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in the writer's next group commit; its result once committed."""
        self._backlog += 1
        ran: list[SQLiteTx] = []

        def job(conn: sqlite3.Connection) -> T:
            tx = SQLiteTx(conn)
            ran.append(tx)
            return fn(tx)

        try:
            result = await self._write(job)
        finally:
            self._backlog -= 1
        if ran[-1].later:
            committed(ran[-1])
        return result

    async def subscribe(self, due: Callable[[str], None], revoked: Callable[[], None],
                        listening: Callable[[], None]) -> None:
        """SQLite tells other processes nothing (``notifies`` is false): there is nothing to
        hear, so this only waits to be cancelled."""
        listening()
        await asyncio.Event().wait()

    async def watch(self, changed: Callable[[], None], listening: Callable[[], None]) -> None:
        """Other processes' commits are not told (no ``NOTIFY`` in SQLite): this only waits to
        be cancelled; pages find them at their next periodic read."""
        listening()
        await asyncio.Event().wait()

    def backlog(self) -> int:
        """Rows waiting for the writer: queued, being committed, or committed and waiting for
        the sync (events count one each, any other write one)."""
        return self._backlog

    async def read(self, fn: Callable[[Tx], T]) -> T:
        ran: list[SQLiteTx] = []

        def job(conn: sqlite3.Connection) -> T:
            tx = SQLiteTx(conn)
            ran.append(tx)
            return fn(tx)

        result = await self._read(job)
        if ran[-1].later:
            committed(ran[-1])
        return result

    def read_now(self, fn: Callable[[Tx], T]) -> T:
        with self._now_lock:
            if self._now is None:
                self._now = connect(self.path, readonly=True)
            return fn(SQLiteTx(self._now))

    async def migrate(self, *, fresh_schema: bool = True) -> list[int]:
        return await asyncio.to_thread(self._migrate, fresh_schema)

    def _migrate(self, fresh_schema: bool) -> list[int]:
        lock_path = self.path + ".lock" if self.path != ":memory:" else None
        lock = open(lock_path, "a") if lock_path else None  # noqa: SIM115
        try:
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            conn = connect(self.path)
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS tidings_migrations (version INTEGER PRIMARY KEY,"
                    " name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
                )
                done = {row[0] for row in conn.execute("SELECT version FROM tidings_migrations")}
                todo = migrations.plan(self.dialect, done, fresh_schema=fresh_schema)
                if todo.schema is not None:
                    marks = "".join(
                        f"INSERT INTO tidings_migrations VALUES ({v}, '{n}', {now_ms()});\n"
                        for v, n, _ in todo.steps
                    )
                    conn.executescript(f"BEGIN IMMEDIATE;\n{todo.schema}\n{marks}COMMIT;")
                    return todo.versions
                for version, name, sql in todo.steps:
                    conn.executescript(
                        f"BEGIN IMMEDIATE;\n{sql}\nINSERT INTO tidings_migrations VALUES "
                        f"({version}, '{name}', {now_ms()});\nCOMMIT;"
                    )
                return todo.versions
            finally:
                conn.close()
        finally:
            if lock is not None:
                lock.close()

    # -- plumbing ------------------------------------------------------------------------------

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue a job for the writer. The jobs of one event-loop iteration go over together
        (``_hand_over``): one wake-up of the writer thread, not one per request."""
        if self._writer is None:
            raise StorageError("storage is not open")
        if self._writer.stopped is not None:
            raise StorageStopped(self._writer.stopped.message)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = []
            loop.call_soon(self._hand_over, loop)
        # Commits are told only while something listens (a dashboard stream is open): with
        # nothing, a write costs no callback. One queued before the first stream opened and
        # committed after is seen by that stream's next periodic read.
        if self.changes.heard:
            if type(fn) is Append:  # events stored (its type tells the writer to batch it)
                future.add_done_callback(self._committed)
            else:
                fn = _Counted(fn)
                future.add_done_callback(fn.committed(self._committed))
        pending.append((fn, future, loop))
        return future

    def _committed(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.changes.committed()

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        jobs = self._pending.pop(loop, None)
        if not jobs:
            return
        if self._writer is None:
            failure = StorageError("storage is closed")
            for _, future, _ in jobs:
                if not future.done():
                    future.set_exception(failure)
            return
        writer = self._writer
        writer.jobs.put(jobs)
        if writer.stopped is not None:  # it died meanwhile: no one else will answer them
            fail_queue(writer.jobs, writer.stopped)

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            self._local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await in_thread(self._readers, lambda: fn(self._reader()))

    # -- events --------------------------------------------------------------------------------

    async def append_events(self, rows: Sequence[EventRow], dedup_until: int, *,
                            route: Callable[[Tx, list[EventRow]], Any] | None = None
                            ) -> list[str]:
        """Append events; with ``route``, call it in the same transaction with the rows that
        were stored (not duplicates), so routing commits with the events."""
        weight = len(rows)
        self._backlog += weight
        append = Append(rows, dedup_until, route)
        try:
            ids = await self._write(append)
        finally:
            self._backlog -= weight
        if append.tx is not None and append.tx.later:
            committed(append.tx)
        return ids

    async def scrub(self) -> None:
        """Copy the WAL into the database and truncate it. Erasures delete with
        ``secure_delete`` on, so the database holds zeros where the rows were; the WAL still
        holds the pages as they were before, until it is truncated."""
        if self.path != ":memory:":
            await asyncio.to_thread(_truncate_wal, self.path)


def _truncate_wal(path: str, tries: int = 20) -> None:
    """A TRUNCATE checkpoint reports busy at once while another checkpoint runs (the
    checkpointer's, every quarter second) or a reader is mid-statement: try again after a
    pause that grows (7 s in all), not 20 times in the same instant."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    try:
        conn.execute("PRAGMA busy_timeout = 2000")
        pause = 0.02
        for _ in range(tries):
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return
            time.sleep(pause)
            pause = min(pause * 1.5, 0.5)
        log.warning("the WAL of %s could not be truncated after an erasure (the database was "
                    "busy %d times): erased rows stay in it until the next checkpoint",
                    path, tries)
    finally:
        conn.close()
