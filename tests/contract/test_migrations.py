"""A database brought up migration by migration equals one created from the current schema."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import psycopg
import pytest

from tidings.storage.postgres import PostgresStorage
from tidings.storage.sql import migration_files
from tidings.storage.sqlite import SQLiteStorage


def _sqlite_schema(path: Path) -> list[tuple[str, ...]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL "
            "ORDER BY type, name").fetchall()
    return [(t, n, tbl, _spaced(sql)) for t, n, tbl, sql in rows]


def _spaced(sql: str) -> str:
    """``sql`` with its layout normalised. ``ALTER TABLE … ADD COLUMN`` splices the new column
    into the stored ``CREATE TABLE`` as a line ``, name TYPE)``, where ``schema.sql`` writes the
    same column its own way: space next to ``(``, ``)`` and ``,`` means nothing, so it goes."""
    return re.sub(r"\s*([(),])\s*", r"\1", re.sub(r"\s+", " ", sql)).strip()


def _versions_sqlite(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM tidings_migrations ORDER BY 1")]


async def test_sqlite_migrated_equals_fresh(tmp_path: Path) -> None:
    migrated, fresh = tmp_path / "migrated.db", tmp_path / "fresh.db"
    store = SQLiteStorage(f"sqlite:///{migrated}")
    applied = await store.migrate(fresh_schema=False)
    await store.close()
    store = SQLiteStorage(f"sqlite:///{fresh}")
    await store.migrate()
    await store.close()
    every = [v for v, _, _ in migration_files("sqlite")]
    assert applied == every
    assert _versions_sqlite(migrated) == _versions_sqlite(fresh) == every
    assert _sqlite_schema(migrated) == _sqlite_schema(fresh)


PG_SCHEMA_QUERIES = {
    "columns": """SELECT table_name, column_name, data_type, is_nullable, column_default
                  FROM information_schema.columns WHERE table_schema = current_schema()
                  ORDER BY 1, 2""",
    "indexes": """SELECT indexname, indexdef FROM pg_indexes
                  WHERE schemaname = current_schema() ORDER BY 1""",
    "constraints": """SELECT c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c
                      JOIN pg_namespace n ON n.oid = c.connamespace
                      WHERE n.nspname = current_schema() ORDER BY 1""",
}


def _pg_schema(url: str) -> dict[str, list[tuple[object, ...]]]:
    with psycopg.connect(url) as conn:
        schema = conn.execute("SELECT current_schema()").fetchone()
        assert schema is not None
        dump = {k: conn.execute(q).fetchall() for k, q in PG_SCHEMA_QUERIES.items()}
    # Index definitions name their schema; compare them without it.
    dump["indexes"] = [(n, str(d).replace(f"{schema[0]}.", "")) for n, d in dump["indexes"]]
    return dump


def _schema_url(url: str, schema: str) -> str:
    return re.sub(r"search_path%3D\w+", f"search_path%3D{schema}", url)


@pytest.mark.postgres
async def test_postgres_migrated_equals_fresh(pg_url: str) -> None:
    other = "t_fresh_" + re.findall(r"search_path%3D(\w+)", pg_url)[0]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {other}")
    try:
        migrated = PostgresStorage(pg_url, min_size=1, max_size=2)
        await migrated._pool.open()
        applied = await migrated.migrate(fresh_schema=False)
        await migrated.close()
        fresh_url = _schema_url(pg_url, other)
        fresh = PostgresStorage(fresh_url, min_size=1, max_size=2)
        await fresh.open()
        await fresh.close()
        assert applied == [v for v, _, _ in migration_files("postgres")]
        assert _pg_schema(pg_url) == _pg_schema(fresh_url)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {other} CASCADE")


# No 0020 was ever written (0021 was the next number taken): numbers only grow, gaps stay.
GAPS = [20]


def test_the_numbers_left_out_are_the_known_gaps() -> None:
    """A gap is never filled: a database that has the migrations above it would run the new
    one after them, out of order. A new migration takes the next number above every other
    (docs/STORAGE.md)."""
    for dialect in ("sqlite", "postgres"):
        every = [v for v, _, _ in migration_files(dialect)]
        assert sorted(set(range(1, max(every) + 1)) - set(every)) == GAPS, dialect


async def test_sqlite_at_0019_migrates_over_the_gap_to_the_fresh_schema(tmp_path: Path) -> None:
    old, fresh = tmp_path / "old.db", tmp_path / "fresh.db"
    with sqlite3.connect(old, isolation_level=None) as conn:
        conn.execute("CREATE TABLE tidings_migrations (version INTEGER PRIMARY KEY,"
                     " name TEXT NOT NULL, applied_at INTEGER NOT NULL)")
        for version, name, sql in migration_files("sqlite"):
            if version <= 19:
                conn.executescript(f"BEGIN;\n{sql}\nINSERT INTO tidings_migrations VALUES "
                                   f"({version}, '{name}', 0);\nCOMMIT;")
    store = SQLiteStorage(f"sqlite:///{old}")
    applied = await store.migrate()
    await store.close()
    store = SQLiteStorage(f"sqlite:///{fresh}")
    await store.migrate()
    await store.close()

    assert applied == [v for v, _, _ in migration_files("sqlite") if v > 19]
    assert _versions_sqlite(old) == _versions_sqlite(fresh)
    assert _sqlite_schema(old) == _sqlite_schema(fresh)
