"""SQLite storage: WAL, one writer thread with group commit, a pool of reader threads.

Every write is a function of a connection queued to the writer thread. The writer takes
everything queued at that moment, runs each function in its own savepoint inside one transaction
and commits once. Neighbouring event appends are merged into one savepoint and a few multi-row
INSERTs (``_Append``).

No caller is answered before its commit is on disk. The writer commits at
``synchronous=NORMAL`` (the commit is written to the WAL, not yet synced) and hands the answers
to the syncer thread (``_Syncer``), which ``fdatasync``s the WAL and only then resolves the
callers' futures. One fsync covers every commit made before it, and the writer goes on with the
next transaction while the disk syncs the last, so the fsync's wait is taken out of the writer's
path. (``synchronous=FULL`` would sync inside each COMMIT, holding the writer for it.)
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import re
import sqlite3
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from itertools import compress
from operator import is_not
from pathlib import Path
from typing import Any, TypeVar

from tidings.errors import DatabaseUnavailable, StorageError, StorageStopped
from tidings.ids import new_id, now_ms
from tidings.outage import unavailable
from tidings.storage import migrations
from tidings.storage.base import (
    ApiKey,
    Environment,
    EventQuery,
    EventRow,
    KeyKind,
    WrappedKey,
    event_from_row,
)
from tidings.storage.sql import dialect_file, split_queries
from tidings.storage.tx import SQLiteTx, Tx
from tidings.supervision import Outage

T = TypeVar("T")
log = logging.getLogger("tidings.storage")
Q = split_queries(dialect_file("sqlite", "queries.sql"))
MAX_BATCH = 1024
ID_MAX = "~"
INSERT_CHUNK = 256  # rows per multi-row INSERT: 256 x 16 parameters, well under SQLite's 32,766

# sqlite3 binds exact int, float and str parameters directly, but first treats every bytes and
# None parameter as something to adapt: two failed attribute lookups, each raising and formatting
# an AttributeError, about a third of the cost of binding an event row. Identity adapters make
# that a dictionary hit and a call in C (``bytes(b) is b``; ``{}.get(None)`` is None).
sqlite3.register_adapter(bytes, bytes)
_NO_ADAPTERS: dict[None, None] = {}
sqlite3.register_adapter(type(None), _NO_ADAPTERS.get)

_Job = tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


def path_from_url(url: str) -> str:
    if url.startswith("sqlite:///"):
        return url.removeprefix("sqlite:///") or ":memory:"
    if url.startswith("sqlite://"):
        return url.removeprefix("sqlite://")
    return url


def connect(path: str, *, readonly: bool = False, synced: bool = True) -> sqlite3.Connection:
    """A connection; ``synced=False`` (the writer's, see ``_Syncer``) leaves the fsync of each
    commit to the caller."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA foreign_keys = ON")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    else:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL" if synced else "PRAGMA synchronous = NORMAL")
        # Checkpoints run in their own thread (``_Checkpointer``), not inside the writer's
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


def _run_alone(
    conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any],
    outcomes: list[tuple[bool, Any]],
) -> None:
    """One job in its own savepoint: its failure undoes only its own writes."""
    conn.execute("SAVEPOINT job")
    try:
        value = fn(conn)
    except BaseException as exc:  # a panic in a native library too: it is this job's failure
        conn.execute("ROLLBACK TO job")
        outcomes.append((False, exc))
    else:
        outcomes.append((True, value))
    conn.execute("RELEASE job")


class _Append:
    """Events queued for appending. Appends without idempotency keys are plain inserts, so the
    writer runs neighbouring ones together (``_append_together``)."""

    __slots__ = ("dedup_until", "plain", "route", "rows")

    def __init__(self, rows: Sequence[EventRow], dedup_until: int,
                 route: Callable[[Tx, list[EventRow]], Any] | None = None) -> None:
        self.rows = rows
        self.dedup_until = dedup_until
        self.plain = all(row.key is None for row in rows)
        self.route = route

    def routed(self, conn: sqlite3.Connection, fresh: list[EventRow],
               shared: dict[str, Any] | None = None) -> None:
        """Route what was stored, in the same transaction (see ``append_events``)."""
        if self.route is not None and fresh:
            self.route(SQLiteTx(conn, shared), fresh)

    def __call__(self, conn: sqlite3.Connection) -> list[str]:
        ids: list[str] = []
        fresh: list[EventRow] = []
        for row in self.rows:
            if row.key is not None:
                claimed = conn.execute(
                    Q["claim_event_key"],
                    (row.env_id, row.key, row.id, self.dedup_until, row.received_at),
                ).fetchone()
                if claimed is None:
                    found = conn.execute(Q["event_id_for_key"], (row.env_id, row.key))
                    ids.append(found.fetchone()[0])
                    continue
            ids.append(row.id)
            fresh.append(row)
        _insert_events(conn, fresh)
        self.routed(conn, fresh)
        return ids


def _plain_append(fn: object) -> bool:
    return type(fn) is _Append and fn.plain


def _append_together(
    conn: sqlite3.Connection, appends: list[_Append], outcomes: list[tuple[bool, Any]], *,
    first: bool,
) -> bool:
    """Plain appends of several requests in one savepoint and a few multi-row INSERTs, rather
    than a savepoint and an INSERT each; ``first`` in the transaction, not even the savepoint
    (undoing them is undoing the transaction). False (nothing written) when that fails: the
    caller then runs them one by one, so only the bad one fails."""
    if not first:
        conn.execute("SAVEPOINT job")
    try:
        _insert_events(conn, [row for append in appends for row in append.rows])
        # Plain appends change neither functions nor waits: their routing reads are shared.
        shared: dict[str, Any] = {}
        for append in appends:
            append.routed(conn, list(append.rows), shared)
    except Exception:
        if first:
            conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
        else:
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
        return False
    if not first:
        conn.execute("RELEASE job")
    outcomes.extend((True, [row.id for row in append.rows]) for append in appends)
    return True


def _insert_events(conn: sqlite3.Connection, rows: Sequence[EventRow]) -> None:
    """Insert rows with multi-row INSERTs: one statement step for up to ``INSERT_CHUNK`` rows
    instead of one per row (less work, and far fewer hand-overs of the GIL).

    Rows are grouped by which columns they fill: a NULL column is left out of the INSERT rather
    than bound (most events have no ``user``, idempotency key, ``v``, context, meta or delay), so
    each row binds about half the parameters."""
    by_shape: dict[tuple[bool, ...], list[Any]] = {}
    for row in rows:
        values = (row.id, row.env_id, row.name, row.data, row.user, row.user_subject, row.key,
                  row.ts, row.v, row.source, row.context, row.account_id, row.received_at,
                  row.deliver_at, row.delivered_at, row.meta, row.traceparent)
        shape = tuple(map(is_not, values, _NONES))
        params = by_shape.get(shape)
        if params is None:
            params = by_shape[shape] = []
        params.extend(compress(values, shape))
    for shape, params in by_shape.items():
        width = sum(shape)
        done, total = 0, len(params) // width
        while done < total:
            # Sizes are powers of two, so a handful of cached statements serve every batch.
            size = min(INSERT_CHUNK, 1 << ((total - done).bit_length() - 1))
            conn.execute(_insert_sql(shape, size), params[done * width:(done + size) * width])
            done += size


def _split_insert(sql: str) -> tuple[str, list[str], str]:
    """``INSERT INTO table``, its column names, and what follows the ``VALUES (...)`` group."""
    found = re.match(r"(?s)(INSERT INTO \w+)\s*\(([^)]*)\)\s*VALUES\s*\([?,\s]*\)(.*)", sql)
    if found is None:
        raise ValueError(f"not a single-row INSERT: {sql}")
    head, columns, tail = found.groups()
    return head, [c.strip() for c in columns.split(",")], tail


_INSERT = _split_insert(Q["insert_event"])
_NONES = (None,) * len(_INSERT[1])


@cache
def _insert_sql(shape: tuple[bool, ...], rows: int) -> str:
    """``insert_event`` for the columns ``shape`` keeps, with ``rows`` groups of placeholders."""
    head, columns, tail = _INSERT
    kept = [column for column, keep in zip(columns, shape, strict=True) if keep]
    group = "(" + ", ".join(["?"] * len(kept)) + ")"
    return f"{head} ({', '.join(kept)}) VALUES {', '.join([group] * rows)}{tail}"


class _Writer(threading.Thread):
    """The one thread that writes. A failed transaction (a full disk, a lock held too long)
    fails the callers of that batch and the writer goes on with the next. Should the thread
    itself die, the storage stops: every write waiting or to come fails with
    ``StorageStopped``, which stops the process's loops for good (``supervision.py``) rather
    than leaving them waiting for answers that never come."""

    def __init__(self, path: str) -> None:
        super().__init__(name="tidings-sqlite-writer", daemon=True)
        self.path = path
        # Jobs arrive in lists: each list is what one event-loop iteration submitted.
        self.jobs: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self.stopped: StorageStopped | None = None
        self.syncer: _Syncer | None = None

    def run(self) -> None:
        syncer = None
        try:
            conn = connect(self.path, synced=False)
            if _wal_mode(conn):
                syncer = self.syncer = _Syncer(self.path + "-wal")
                syncer.start()
            else:
                conn.execute("PRAGMA synchronous = FULL")
        except BaseException as exc:
            self.failure = exc
            self.ready.set()
            return
        self.ready.set()
        batch: list[_Job] = []
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
            _fail_queue(self.jobs, self.stopped, [batch])
            if syncer is not None and syncer.stopped is not None:
                _fail_queue(syncer.answers, self.stopped)
        finally:
            if syncer is not None:
                syncer.answers.put(None)
                syncer.join()
            conn.close()

    @staticmethod
    def _commit(conn: sqlite3.Connection, batch: list[_Job]) -> _Answers:
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            start, size = 0, len(batch)
            while start < size:
                end = start
                while end < size and _plain_append(batch[end][0]):
                    end += 1
                if end - start > 1:
                    appends = [fn for fn, _, _ in batch[start:end] if isinstance(fn, _Append)]
                    if _append_together(conn, appends, outcomes, first=start == 0):
                        start = end
                        continue
                for fn, _, _ in batch[start:max(end, start + 1)]:
                    _run_alone(conn, fn, outcomes)
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
Queued = TypeVar("Queued", list[_Job], _Answers)


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


def _fail_queue(source: queue.SimpleQueue[Any], failure: StorageStopped,
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


class _Syncer(threading.Thread):
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
            _fail_queue(self.answers, self.stopped, waiting)
        finally:
            if self._fd is not None:
                os.close(self._fd)

    def _sync(self) -> None:
        """``fdatasync`` the WAL. It is opened once: SQLite deletes a WAL file only when its last
        connection closes, and the writer's stays open as long as this thread runs."""
        if self._fd is None:
            self._fd = os.open(self.wal, os.O_RDONLY | os.O_CLOEXEC)
        os.fdatasync(self._fd)


class _Checkpointer(threading.Thread):
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


class SQLiteStorage:
    """The embedded backend. One process writes at a time; any number may read."""

    dialect = "sqlite"
    routes_inline = True  # append_events(route=...) routes in the storing transaction
    ordered_writes = True  # one writer thread, jobs committed in submission order
    notifies = False  # nothing between processes: their executors poll

    def __init__(self, url: str) -> None:
        self.path = path_from_url(url)
        self._writer: _Writer | None = None
        self._pending: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        self._checkpointer: _Checkpointer | None = None
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tidings-sqlite-read")
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._backlog = 0  # rows (events; 1 per other write) queued and not yet answered

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        await self.migrate()
        writer = _Writer(self.path)
        writer.start()
        await asyncio.to_thread(writer.ready.wait)
        if writer.failure is not None:
            raise StorageError(f"cannot open SQLite database {self.path}: {writer.failure}")
        self._writer = writer
        if self.path != ":memory:":
            self._checkpointer = _Checkpointer(self.path)
            self._checkpointer.start()

    async def close(self) -> None:
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

    async def write(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in the writer's next group commit; its result once committed."""
        self._backlog += 1
        try:
            return await self._write(lambda conn: fn(SQLiteTx(conn)))
        finally:
            self._backlog -= 1

    async def subscribe(self, due: Callable[[str], None], revoked: Callable[[], None],
                        listening: Callable[[], None]) -> None:
        """SQLite tells other processes nothing (``notifies`` is false): there is nothing to
        hear, so this only waits to be cancelled."""
        listening()
        await asyncio.Event().wait()

    def backlog(self) -> int:
        """Rows waiting for the writer: queued, being committed, or committed and waiting for
        the sync (events count one each, any other write one)."""
        return self._backlog

    async def read(self, fn: Callable[[Tx], T]) -> T:
        return await self._read(lambda conn: fn(SQLiteTx(conn)))

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

    async def schema_version(self) -> int:
        rows = await self._read(lambda c: c.execute(
            "SELECT max(version) FROM tidings_migrations").fetchall())
        return int(rows[0][0] or 0)

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
        pending.append((fn, future, loop))
        return future

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
            _fail_queue(writer.jobs, writer.stopped)

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            self._local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: fn(self._reader()))

    # -- environments and keys -----------------------------------------------------------------

    async def ensure_env(self, name: str, parent_id: str | None = None) -> Environment:
        def run(conn: sqlite3.Connection) -> Environment:
            conn.execute(Q["insert_env"], (new_id(), name, parent_id, now_ms()))
            return _env(conn.execute(Q["env_by_name"], (name,)).fetchone())

        return await self._write(run)

    async def get_env(self, env_id: str) -> Environment | None:
        row = await self._read(lambda c: c.execute(Q["env_by_id"], (env_id,)).fetchone())
        return _env(row) if row else None

    async def create_key(self, env_id: str, kind: KeyKind, key_hash: str, prefix: str) -> ApiKey:
        def run(conn: sqlite3.Connection) -> ApiKey:
            conn.execute(Q["insert_key"], (new_id(), env_id, kind, key_hash, prefix, now_ms()))
            return _key(conn.execute(Q["key_by_hash"], (key_hash,)).fetchone())

        return await self._write(run)

    async def key_by_hash(self, key_hash: str) -> ApiKey | None:
        row = await self._read(lambda c: c.execute(Q["key_by_hash"], (key_hash,)).fetchone())
        return _key(row) if row else None

    async def list_keys(self) -> list[ApiKey]:
        rows = await self._read(lambda c: c.execute(Q["list_keys"]).fetchall())
        return [_key(r) for r in rows]

    async def revoke_key(self, key_id: str) -> bool:
        return await self._write(
            lambda c: c.execute(Q["revoke_key"], (now_ms(), key_id)).rowcount > 0
        )

    # -- events --------------------------------------------------------------------------------

    async def append_events(self, rows: Sequence[EventRow], dedup_until: int, *,
                            route: Callable[[Tx, list[EventRow]], Any] | None = None
                            ) -> list[str]:
        """Append events; with ``route``, call it in the same transaction with the rows that
        were stored (not duplicates), so routing commits with the events."""
        weight = len(rows)
        self._backlog += weight
        try:
            return await self._write(_Append(rows, dedup_until, route))
        finally:
            self._backlog -= weight

    async def get_event(self, env_id: str, event_id: str) -> EventRow | None:
        row = await self._read(lambda c: c.execute(Q["get_event"], (env_id, event_id)).fetchone())
        return event_from_row(row) if row else None

    async def list_events(self, query: EventQuery) -> list[EventRow]:
        low = query.min_id or ""
        high = min(query.max_id or ID_MAX, query.before_id or ID_MAX)
        params: tuple[Any, ...]
        if query.name is None:
            sql, params = Q["list_events"], (query.env_id, low, high, query.limit)
        else:
            sql = Q["list_events_by_name"]
            params = (query.env_id, query.name, low, high, query.limit)
        rows = await self._read(lambda c: c.execute(sql, params).fetchall())
        return [event_from_row(r) for r in rows]

    # -- secrets and data keys -----------------------------------------------------------------

    async def get_secret(self, name: str) -> bytes | None:
        row = await self._read(lambda c: c.execute(Q["get_secret"], (name,)).fetchone())
        return bytes(row[0]) if row else None

    async def put_secret(self, name: str, value: bytes, *, replace: bool = False) -> bytes:
        def run(conn: sqlite3.Connection) -> bytes:
            conn.execute(Q["replace_secret" if replace else "insert_secret"], (name, value))
            return bytes(conn.execute(Q["get_secret"], (name,)).fetchone()[0])

        return await self._write(run)

    async def ensure_user_key(self, env_id: str, subject: bytes, wrapped: bytes) -> bytes:
        def run(conn: sqlite3.Connection) -> bytes:
            conn.execute(Q["insert_user_key"], (env_id, subject, wrapped, now_ms()))
            return bytes(conn.execute(Q["get_user_key"], (env_id, subject)).fetchone()[0])

        return await self._write(run)

    async def get_user_key(self, env_id: str, subject: bytes) -> bytes | None:
        row = await self._read(lambda c: c.execute(Q["get_user_key"], (env_id, subject)).fetchone())
        return bytes(row[0]) if row else None

    async def delete_user_key(self, env_id: str, subject: bytes) -> bool:
        return await self._write(
            lambda c: c.execute(Q["delete_user_key"], (env_id, subject)).rowcount > 0
        )

    async def list_user_keys(self) -> list[WrappedKey]:
        rows = await self._read(lambda c: c.execute(Q["list_user_keys"]).fetchall())
        return [WrappedKey(env_id=r[0], subject=bytes(r[1]), wrapped=bytes(r[2])) for r in rows]

    async def replace_user_keys(self, keys: Sequence[WrappedKey]) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.executemany(
                Q["update_user_key"], [(k.wrapped, k.env_id, k.subject) for k in keys]
            )

        await self._write(run)


def _env(row: Any) -> Environment:
    return Environment(id=row[0], name=row[1], parent_id=row[2], created_at=row[3])


def _key(row: Any) -> ApiKey:
    return ApiKey(
        id=row[0], env_id=row[1], env_name=row[2], kind=row[3], key_hash=row[4], prefix=row[5],
        created_at=row[6], revoked_at=row[7],
    )
