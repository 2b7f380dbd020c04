"""PostgreSQL storage: a psycopg 3 connection pool, one transaction per operation.

Many server and worker processes share one database. Idempotency claims use
``INSERT ... ON CONFLICT``, so concurrent duplicates resolve to one stored event; migrations take
an advisory lock, so processes starting together apply them once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import psycopg
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from tidings.errors import DatabaseUnavailable, StorageError
from tidings.ids import new_id, now_ms
from tidings.storage import migrations
from tidings.storage.base import EventRow, Sealed
from tidings.storage.changes import Changes
from tidings.storage.sql import dialect_file, split_queries
from tidings.storage.threads import Gate, in_thread
from tidings.storage.tx import PostgresTx, Tx, committed

T = TypeVar("T")
Q = split_queries(dialect_file("postgres", "queries.sql"))
COPY_MIN_ROWS = 16  # from this many rows on, COPY beats INSERTs (it has to be set up first)
MIGRATION_LOCK = 0x7469_6469_6E67  # "tiding"
RUNS_CHANNEL = "tidings_runs"  # payload: a queue whose runs are due ("*": any)
KEYS_CHANNEL = "tidings_keys"  # a key was revoked
LIVE_CHANNEL = "tidings_live"  # payload: the token of a process that committed writes
LIVE_GAP = 0.1  # seconds between two NOTIFY tidings_live of one process, at least
log = logging.getLogger("tidings.storage")


class PostgresStorage:
    """The scale-out backend."""

    dialect = "postgres"
    routes_inline = False  # events are routed after their commit (``router/service.py``)
    ordered_writes = False  # a pool of connections: writes commit in any order
    notifies = True  # LISTEN/NOTIFY
    binary_data = False  # events.data is json

    def __init__(self, url: str, *, min_size: int = 2, max_size: int = 16) -> None:
        self.url = url
        self._pool = AsyncConnectionPool(
            url, min_size=min_size, max_size=max_size, open=False,
            kwargs={"autocommit": True}, name="tidings",
        )
        # As many threads as pooled connections (the default executor has only cpus + 4).
        self._threads = ThreadPoolExecutor(max_workers=max_size, thread_name_prefix="tidings-pg")
        self._purging = threading.Lock()
        self._sync_pool = ConnectionPool(
            url, min_size=1, max_size=max_size, open=False, kwargs={"autocommit": True},
            configure=_text_json, name="tidings-sync",
        )
        self._backlog = 0  # rows (events; 1 per other operation) handed over, not answered
        # ``read_now``'s, under ``_now_lock``; not the pool's: its every connection may be
        # held by a transaction whose reader is the one asking.
        self._now: psycopg.Connection[Any] | None = None
        self._now_lock = threading.Lock()
        # Commits of this process: its hooks, and the other processes (``storage/changes.py``).
        self.changes = Changes()
        self._token = new_id()  # this process's name in its NOTIFY tidings_live
        self._tell: asyncio.Event | None = None
        self._teller: asyncio.Task[None] | None = None
        self.changes.add(self._changed)

    async def open(self) -> None:
        try:
            await self._pool.open(wait=True, timeout=15)
            await asyncio.to_thread(self._sync_pool.open, True, 15)
        except psycopg.Error as exc:
            raise StorageError(f"cannot connect to PostgreSQL: {exc}") from None
        except Exception as exc:  # the pool raises its own PoolTimeout
            raise StorageError(f"cannot connect to PostgreSQL at {self.url}: {exc}") from None
        await self.migrate()

    async def close(self) -> None:
        self.changes.close()
        if self._teller is not None:
            self._teller.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await self._teller
            self._teller = None
        await self._pool.close()
        # Calls handed to the threads end first: the pool's close leaves a connection in use
        # open, its statement running after this returned (and holding its locks).
        await asyncio.to_thread(self._threads.shutdown)
        await asyncio.to_thread(self._sync_pool.close)
        with self._now_lock:
            if self._now is not None:
                self._now.close()
                self._now = None

    async def write(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in one transaction on a pooled connection (in a worker thread)."""
        self._backlog += 1
        try:
            gate = Gate()
            result, tx = await in_thread(self._threads, partial(self._transact, fn, gate), gate)
        finally:
            self._backlog -= 1
        if tx.later:
            committed(tx)
        if tx.changed:
            self.changes.committed()
        return result

    async def read(self, fn: Callable[[Tx], T]) -> T:
        self._backlog += 1
        try:
            gate = Gate()
            result, tx = await in_thread(self._threads, partial(self._autocommit, fn, gate), gate)
        finally:
            self._backlog -= 1
        if tx.later:
            committed(tx)
        return result

    def read_now(self, fn: Callable[[Tx], T]) -> T:
        with self._now_lock:
            if self._now is None or self._now.closed:
                self._now = psycopg.connect(self.url, autocommit=True)
                _text_json(self._now)
            try:
                return fn(PostgresTx(self._now))
            except psycopg.OperationalError:
                self._now.close()  # the next call connects again
                raise

    def backlog(self) -> int:
        """Rows handed to the pools and not answered yet: waiting for a connection or being
        written (events count one each, any other operation one)."""
        return self._backlog

    def _transact(self, fn: Callable[[Tx], T], gate: Gate) -> tuple[T, PostgresTx]:
        """``fn``'s result, and the transaction it ran in once that committed."""
        for attempt in range(5):
            try:
                with self._sync_pool.connection() as conn:
                    gate.enter()
                    with conn.transaction():
                        tx = PostgresTx(conn)
                        result = fn(tx)
                return result, tx
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                if attempt == 4:
                    raise
            except psycopg.OperationalError:
                self._purge()
                raise
        raise AssertionError("unreachable")

    def _autocommit(self, fn: Callable[[Tx], T], gate: Gate) -> tuple[T, PostgresTx]:
        try:
            with self._sync_pool.connection() as conn:
                gate.enter()
                tx = PostgresTx(conn)
                return fn(tx), tx
        except psycopg.OperationalError:
            self._purge()
            raise

    def _purge(self) -> None:
        """A connection failed: test the idle ones and drop the broken. After a server restart
        every pooled connection is dead, and would otherwise fail one operation each before the
        pool learns of it (one failed try per connection, with each loop's backoff between)."""
        if self._purging.acquire(blocking=False):  # one thread at a time is enough
            try:
                with contextlib.suppress(Exception):  # the failure that led here is raised
                    self._sync_pool.check()
            finally:
                self._purging.release()

    async def subscribe(self, due: Callable[[str], None], revoked: Callable[[], None],
                        listening: Callable[[], None]) -> None:
        """Hear other processes until the connection fails (it raises: the caller's
        supervisor connects again) or the task is cancelled: ``due(queue)`` on every ``NOTIFY
        tidings_runs``, ``revoked()`` on every ``NOTIFY tidings_keys``. ``listening()`` is
        called once ``LISTEN`` took effect: what was notified before then was missed."""
        conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        async with conn:
            await conn.execute(f"LISTEN {RUNS_CHANNEL}")
            await conn.execute(f"LISTEN {KEYS_CHANNEL}")
            listening()
            async for note in conn.notifies():
                if note.channel == KEYS_CHANNEL:
                    revoked()
                else:
                    due(note.payload)
        raise DatabaseUnavailable("the LISTEN connection to PostgreSQL ended")

    async def watch(self, changed: Callable[[], None], listening: Callable[[], None]) -> None:
        """Hear the commits of other processes until the connection fails (it raises) or the
        task is cancelled: ``changed()`` on every ``NOTIFY tidings_live`` but this process's
        own; ``listening()`` once ``LISTEN`` took effect."""
        conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        async with conn:
            await conn.execute(f"LISTEN {LIVE_CHANNEL}")
            listening()
            async for note in conn.notifies():
                if note.payload != self._token:
                    changed()
        raise DatabaseUnavailable("the LISTEN connection to PostgreSQL ended")

    def _changed(self) -> None:
        """This process committed writes: tell the others (``_tell_others``, one at a time)."""
        if self._teller is None or self._teller.done():
            self._tell = asyncio.Event()
            self._teller = asyncio.get_running_loop().create_task(
                self._tell_others(self._tell), name="tidings-live-notify")
        assert self._tell is not None
        self._tell.set()

    async def _tell_others(self, tell: asyncio.Event) -> None:
        """``NOTIFY tidings_live`` after commits, at most one every ``LIVE_GAP`` seconds, on
        a pooled connection of its own (not in the writes' transactions: they never wait for
        it). One that fails is logged; the pages of other processes then see the change at
        their next periodic read."""
        while True:
            await tell.wait()
            tell.clear()
            try:
                async with self._pool.connection() as conn:
                    await conn.execute(Q["notify_live"], (self._token,))
            except Exception as exc:
                log.warning("could not tell other processes of a change (NOTIFY %s): %s",
                            LIVE_CHANNEL, exc)
            await asyncio.sleep(LIVE_GAP)

    async def migrate(self, *, fresh_schema: bool = True) -> list[int]:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS tidings_migrations (version INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
            )
            cur = await conn.execute("SELECT version FROM tidings_migrations")
            done = {row[0] for row in await cur.fetchall()}
            todo = migrations.plan(self.dialect, done, fresh_schema=fresh_schema)
            if todo.schema is not None:
                await conn.execute(todo.schema.encode())
            for version, name, sql in todo.steps:
                if todo.schema is None:
                    await conn.execute(sql.encode())
                await conn.execute(
                    "INSERT INTO tidings_migrations VALUES (%s, %s, %s)",
                    (version, name, now_ms()),
                )
        return todo.versions

    # -- events --------------------------------------------------------------------------------

    async def append_events(self, rows: Sequence[EventRow], dedup_until: int, *,
                            route: Callable[[Tx, list[EventRow]], Any] | None = None
                            ) -> list[str]:
        if route is not None:
            raise NotImplementedError("PostgreSQL routes stored events after their commit")
        weight = len(rows)
        self._backlog += weight
        try:
            ids = await self._append(rows, dedup_until, copy=weight >= COPY_MIN_ROWS)
        except psycopg.errors.UniqueViolation:
            # COPY cannot skip an id that is already stored (a retried request with seeded
            # ids): store them again the slow way, which skips it.
            ids = await self._append(rows, dedup_until, copy=False)
        finally:
            self._backlog -= weight
        self.changes.committed()
        return ids

    async def _append(self, rows: Sequence[EventRow], dedup_until: int, *, copy: bool
                      ) -> list[str]:
        if all(row.key is None for row in rows):
            async with self._pool.connection() as conn:
                if copy or len(rows) == 1:
                    # One statement is atomic by itself: no BEGIN and COMMIT round trips.
                    await _insert_events(conn, rows, copy=copy)
                else:
                    async with conn.transaction():
                        await _insert_events(conn, rows, copy=False)
            return [row.id for row in rows]
        ids: list[str] = []
        fresh: list[EventRow] = []
        async with self._pool.connection() as conn, conn.transaction():
            for row in rows:
                if row.key is not None:
                    cur = await conn.execute(
                        Q["claim_event_key"],
                        (row.env_id, Sealed.claim_key(row), row.id, dedup_until,
                         row.received_at),
                    )
                    if await cur.fetchone() is None:
                        cur = await conn.execute(Q["event_id_for_key"],
                                                 (row.env_id, Sealed.claim_key(row)))
                        found = await cur.fetchone()
                        assert found is not None
                        ids.append(found[0])
                        continue
                ids.append(row.id)
                fresh.append(row)
            if fresh:
                await _insert_events(conn, fresh, copy=copy)
        return ids

    async def scrub(self) -> None:
        return None


def _text_json(conn: psycopg.Connection[Any]) -> None:
    """JSON columns come back as text: the shared logic decodes them itself."""
    conn.adapters.register_loader("json", TextLoader)
    conn.adapters.register_loader("jsonb", TextLoader)


async def _insert_events(conn: psycopg.AsyncConnection[Any], rows: Sequence[EventRow], *,
                         copy: bool) -> None:
    """One statement: COPY (many rows; fails on an id already stored) or INSERTs that skip
    stored ids."""
    if len(rows) == 1:
        await conn.execute(Q["insert_event"], _event_params(rows[0]))
    elif not copy:
        async with conn.cursor() as cur:
            await cur.executemany(Q["insert_event"], [_event_params(row) for row in rows])
    else:
        async with conn.cursor() as cur, cur.copy(Q["copy_events"]) as pipe:
            for row in rows:
                await pipe.write_row(_event_params(row))


def _event_params(row: EventRow) -> tuple[Any, ...]:
    sealed = row.sealed
    context, meta = (row.context, row.meta) if sealed is None else (sealed.context, sealed.meta)
    return (
        row.id, row.env_id, row.name, (row.data if sealed is None else sealed.data).decode(),
        row.user, row.user_subject, row.key if sealed is None else sealed.key,
        row.ts, row.v, row.source, context.decode() if context is not None else None,
        row.account_id, row.received_at, row.deliver_at, row.delivered_at,
        meta.decode() if meta is not None else None, row.traceparent,
    )
