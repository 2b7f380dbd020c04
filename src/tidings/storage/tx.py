"""A transaction as the shared storage logic sees it, whichever database is underneath.

Logic that is the same on both backends (runs, steps, pauses, routing) is written once, as plain
functions of a ``Tx``. SQLite runs them in its writer thread, inside a group commit; PostgreSQL
runs them in a worker thread on a pooled connection, inside one transaction. Queries are named SQL
(``sql/shared/*.sql`` with ``?`` placeholders, overridden per dialect where the dialects differ;
loaded by ``sql/__init__.py``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from tidings.storage.sql import queries

Row = tuple[Any, ...]


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


class SQLiteTx:
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection, shared: dict[str, Any] | None = None) -> None:
        self._conn = conn
        self._q = queries("sqlite")
        self.shared = shared

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


class PostgresTx:
    dialect = "postgres"

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._q = queries("postgres")
        self.shared: dict[str, Any] | None = None

    def one(self, name: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self._conn.execute(self._q[name], params).fetchone()
        return row

    def all(self, name: str, params: Sequence[Any] = ()) -> list[Row]:
        rows: list[Row] = self._conn.execute(self._q[name], params).fetchall()
        return rows

    def run(self, name: str, params: Sequence[Any] = ()) -> int:
        count: int = self._conn.execute(self._q[name], params).rowcount
        return count

    def many(self, name: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(self._q[name], list(rows))

    def many_count(self, name: str, rows: Iterable[Sequence[Any]]) -> int:
        return sum(self.run(name, row) for row in rows)
