"""A transaction as the shared storage logic sees it, whichever database is underneath.

Logic that is the same on both backends (runs, steps, pauses, routing) is written once, as plain
functions of a ``Tx``. SQLite runs them in its writer thread, inside a group commit; PostgreSQL
runs them in a worker thread on a pooled connection, inside one transaction. Queries are named SQL
(``sql/shared/*.sql`` with ``?`` placeholders, overridden per dialect where the dialects differ;
loaded by ``sql/__init__.py``).

Where the databases differ in more than a query, the ``Tx`` says so once, here: how JSON and id
lists are passed, and named locks, which PostgreSQL needs (transactions run side by side) and
SQLite does not (its one writer runs them one at a time), so there they cost nothing.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from typing import Any, Protocol

import msgspec

from tidings.storage.sql import queries

Row = tuple[Any, ...]
log = logging.getLogger("tidings.storage")


class Tx(Protocol):
    dialect: str
    # What several jobs of one group commit may share (``route_new``'s reads); None when the
    # transaction is a job's own.
    shared: dict[str, Any] | None

    def one(self, name: str, params: Sequence[Any] = ()) -> Row | None: ...

    def all(self, name: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def run(self, name: str, params: Sequence[Any] = ()) -> int:
        """Execute; return the number of rows changed."""

    def many(self, name: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def many_count(self, name: str, rows: Iterable[Sequence[Any]]) -> int:
        """Execute for each row; return the number of rows changed in all."""

    # Transactions run side by side: shared state is locked by name (the ``lock`` calls).
    concurrent: bool

    def json(self, value: bytes | None) -> bytes | str | None:
        """JSON bytes as the ``events`` table of this database takes them."""

    def ids(self, ids: Sequence[str]) -> str | list[str]:
        """A list of ids as one query parameter (JSON for SQLite's ``json_each``, an array for
        PostgreSQL's ``ANY``)."""

    def lock(self, name: str) -> None:
        """Hold the named lock until the transaction ends."""

    def lock_shared(self, name: str) -> None:
        """Hold the named lock, shared with other holders of it shared, until the end."""

    def lock_all(self, names: Sequence[str]) -> None:
        """Hold every named lock (``names`` sorted) until the end."""

    def try_lock(self, name: str) -> bool:
        """Take the named lock if no other transaction holds it; False when one does."""

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once the transaction has committed, in the caller's thread (what it
        tells — a span, a count, a log line — must not be told of a change rolled back);
        never when it fails."""


def committed(tx: Any) -> None:
    """Call what ``tx`` left for after its commit (``Tx.after_commit``); one that raises is
    logged, and the others still called: the commit stands."""
    for fn in tx.later:
        try:
            fn()
        except Exception:
            log.exception("after a commit: %r failed", fn)


class SQLiteTx:
    dialect = "sqlite"
    concurrent = False

    def __init__(self, conn: sqlite3.Connection, shared: dict[str, Any] | None = None) -> None:
        self._conn = conn
        self._q = queries("sqlite")
        self.shared = shared
        self.later: list[Callable[[], None]] = []

    def one(self, name: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self._conn.execute(self._q[name], params).fetchone()
        return row

    def all(self, name: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._conn.execute(self._q[name], params).fetchall()

    def run(self, name: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(self._q[name], params).rowcount

    def many(self, name: str, rows: Iterable[Sequence[Any]]) -> None:
        self._conn.executemany(self._q[name], rows)

    def many_count(self, name: str, rows: Iterable[Sequence[Any]]) -> int:
        return self._conn.executemany(self._q[name], rows).rowcount

    def json(self, value: bytes | None) -> bytes | str | None:
        return value

    def ids(self, ids: Sequence[str]) -> str | list[str]:
        return msgspec.json.encode(list(ids)).decode()

    def lock(self, name: str) -> None:
        pass

    def lock_shared(self, name: str) -> None:
        pass

    def lock_all(self, names: Sequence[str]) -> None:
        pass

    def try_lock(self, name: str) -> bool:
        return True

    def after_commit(self, fn: Callable[[], None]) -> None:
        self.later.append(fn)


_CHANGES = re.compile(r"\b(INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM)\b", re.IGNORECASE)


@cache
def changing(dialect: str) -> frozenset[str]:
    """The named queries that insert, update or delete rows."""
    return frozenset(name for name, sql in queries(dialect).items() if _CHANGES.search(sql))


@cache
def planned_each_call(dialect: str) -> frozenset[str]:
    """The named queries to plan with their values on every call, never prepared: a prepared
    statement switches to a generic plan after five calls, and for these it can be far worse
    (their SQL says so in a comment: ``Planned on each call``)."""
    return frozenset(name for name, sql in queries(dialect).items()
                     if "Planned on each call" in sql)


class PostgresTx:
    dialect = "postgres"
    concurrent = True

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._q = queries("postgres")
        self._changing = changing("postgres")
        self._each_call = planned_each_call("postgres")
        self.shared: dict[str, Any] | None = None
        self.later: list[Callable[[], None]] = []
        # Whether a statement changed rows (``storage.changes`` is told of the commit; a
        # claim that found nothing due changed none).
        self.changed = False

    def _execute(self, name: str, params: Sequence[Any]) -> Any:
        cur = self._conn.execute(self._q[name], params,
                                 prepare=False if name in self._each_call else None)
        if name in self._changing and cur.rowcount > 0:
            self.changed = True
        return cur

    def one(self, name: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self._execute(name, params).fetchone()
        return row

    def all(self, name: str, params: Sequence[Any] = ()) -> list[Row]:
        rows: list[Row] = self._execute(name, params).fetchall()
        return rows

    def run(self, name: str, params: Sequence[Any] = ()) -> int:
        count: int = self._execute(name, params).rowcount
        return count

    def many(self, name: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        with self._conn.cursor() as cur:
            cur.executemany(self._q[name], rows)
        if rows and name in self._changing:
            self.changed = True

    def many_count(self, name: str, rows: Iterable[Sequence[Any]]) -> int:
        return sum(self.run(name, row) for row in rows)

    def json(self, value: bytes | None) -> bytes | str | None:
        return None if value is None else value.decode()

    def ids(self, ids: Sequence[str]) -> str | list[str]:
        return list(ids)

    def lock(self, name: str) -> None:
        self.one("lock_name", (name,))

    def lock_shared(self, name: str) -> None:
        self.one("lock_name_shared", (name,))

    def lock_all(self, names: Sequence[str]) -> None:
        self.one("lock_names", (names,))

    def try_lock(self, name: str) -> bool:
        row = self.one("try_lock_name", (name,))
        return row is not None and bool(row[0])

    def after_commit(self, fn: Callable[[], None]) -> None:
        self.later.append(fn)
