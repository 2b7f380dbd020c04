"""Which migrations a database needs, decided once for both backends; each backend applies
them in its own way (SQLite under a file lock, PostgreSQL under an advisory lock).

A database with no migrations at all gets the current schema (``schema.sql``) in one go, with
every migration marked as applied, unless ``fresh_schema`` is false (the test that a migrated
database equals a fresh one); either way the result is the same schema.

Any other database gets the migrations it has not recorded, in number order. Numbers may skip
(there is no 0020) but only grow: a number filled in below a database's newest would run after
the migrations above it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tidings.errors import MigrationError
from tidings.storage.sql import dialect_file, migration_files
from tidings.storage.tx import Tx


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    schema: str | None  # the whole current schema, for a new database; else None
    steps: list[tuple[int, str, str]]  # ``(version, name, sql)`` to apply (or mark) in order

    @property
    def versions(self) -> list[int]:
        return [version for version, _, _ in self.steps]


def plan(dialect: str, done: set[int], *, fresh_schema: bool = True) -> Plan:
    """What to apply to a database that has the migrations ``done``; ``MigrationError`` when
    it is newer than this Tidings."""
    known = migration_files(dialect)
    newest = max((v for v, _, _ in known), default=0)
    if done and max(done) > newest:
        raise MigrationError(
            f"database schema version {max(done)} is newer than this Tidings "
            f"({newest}); upgrade Tidings"
        )
    if not done and fresh_schema:
        return Plan(schema=dialect_file(dialect, "schema.sql"), steps=known)
    return Plan(schema=None, steps=[step for step in known if step[0] not in done])


def schema_version(tx: Tx) -> int:
    """The newest migration applied to the database (``storage.read(schema_version)``)."""
    row = tx.one("schema_version")
    return int(row[0] or 0) if row else 0
