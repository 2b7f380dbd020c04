"""Which storage failures are an outage: the database is away or cannot write *for now* (a
restart, a failover, a lost connection, a full disk, a lock held past the busy timeout), as
opposed to a statement the database refuses whatever the moment (a constraint, bad data, a
bug). What fails in an outage is tried again unchanged once the database is back; the rest is
an error of the work that caused it (``engine/executor.py`` counts it as an attempt)."""

from __future__ import annotations

import sqlite3
import sys

from tidings.errors import DatabaseUnavailable

# SQLite's primary result codes that pass: busy or locked, out of memory or disk, I/O, a
# database file that cannot be opened or is read-only for now.
_SQLITE_TRANSIENT = frozenset({
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PROTOCOL,
})


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the database is unavailable for now."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, DatabaseUnavailable):
            return True
        if isinstance(current, sqlite3.OperationalError):
            code = getattr(current, "sqlite_errorcode", None)
            return code is not None and code & 0xFF in _SQLITE_TRANSIENT
        # psycopg is only looked at when it is loaded: a SQLite process never imports it.
        psycopg = sys.modules.get("psycopg")
        if psycopg is not None and isinstance(current, psycopg.OperationalError):
            return True
        current = current.__cause__
        seen += 1
    return False
