"""Injected database faults, for tests only: nothing here is reachable from production code.

- ``FaultySQLite``: a switch that makes the SQLite connections of a process fail as a full disk
  or a held lock would, with SQLite's own error codes: the readers' statements fail with
  ``database is locked`` (SQLITE_BUSY) and the writer's data statements with ``database or disk
  is full`` (SQLITE_FULL); transaction control still works, as it does in SQLite. With the mode
  ``die`` the writer's COMMIT raises something that is not an ``Exception``, which kills the
  writer thread. ``install`` wraps ``connect`` where the SQLite backend calls it (the readers
  in ``tidings.storage.sqlite``, the writer in ``tidings.storage.sqlite_writer``); a test uses
  pytest's ``monkeypatch``, a ``tidings`` process ``tests/reliability/faulty_cli.py``.
- ``FlakyStorage``: wraps any storage; while ``failing`` its ``read`` and ``write`` raise the
  backend's own outage error (the executor's and router's paths), everything else works.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONTROL = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "PRAGMA"})


class Death(BaseException):
    """Not an ``Exception``: what a panic in a native library looks like to Python."""


def _error(message: str, code: int) -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorcode = code  # type: ignore[attr-defined]
    exc.sqlite_errorname = "SQLITE_BUSY" if code == sqlite3.SQLITE_BUSY else "SQLITE_FULL"  # type: ignore[attr-defined]
    return exc


class FaultySQLite:
    """Reads the fault mode from a file: absent (no fault), ``io`` or ``die``."""

    def __init__(self, switch: Path) -> None:
        self.switch = switch

    def mode(self) -> str | None:
        try:
            return self.switch.read_text().strip() or "io"
        except FileNotFoundError:
            return None

    def install(self, setattr_: Callable[[Any, str, Any], None] | None = None) -> None:
        import tidings.storage.sqlite as readers
        import tidings.storage.sqlite_writer as writer

        real = writer.connect

        def connect(path: str, *, readonly: bool = False, synced: bool = True) -> Any:
            return _Connection(real(path, readonly=readonly, synced=synced), self, readonly)

        for backend in (readers, writer):
            (setattr_ or setattr)(backend, "connect", connect)


class _Connection:
    def __init__(self, conn: sqlite3.Connection, faults: FaultySQLite, reader: bool) -> None:
        self._conn = conn
        self._faults = faults
        self._reader = reader

    def _check(self, sql: str) -> None:
        mode = self._faults.mode()
        if mode is None:
            return
        verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if mode == "die":
            if verb == "COMMIT" and not self._reader:
                raise Death("the writer thread is killed")
            return
        if verb in CONTROL:
            return
        if self._reader:
            raise _error("database is locked", sqlite3.SQLITE_BUSY)
        raise _error("database or disk is full", sqlite3.SQLITE_FULL)

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self._conn.executemany(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class FlakyStorage:
    """A storage whose ``read``/``write`` fail with the backend's outage error while
    ``failing``; ``failures`` counts them."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.failing = False
        self.failures = 0

    def _outage(self) -> Exception:
        self.failures += 1
        if self._inner.dialect == "postgres":
            import psycopg

            return psycopg.OperationalError("server closed the connection unexpectedly")
        return _error("database is locked", sqlite3.SQLITE_BUSY)

    async def read(self, fn: Callable[[Any], Any]) -> Any:
        if self.failing:
            raise self._outage()
        return await self._inner.read(fn)

    async def write(self, fn: Callable[[Any], Any]) -> Any:
        if self.failing:
            raise self._outage()
        return await self._inner.write(fn)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def switch_from_env() -> FaultySQLite | None:
    path = os.environ.get("TIDINGS_TEST_FAULTS")
    return FaultySQLite(Path(path)) if path else None
