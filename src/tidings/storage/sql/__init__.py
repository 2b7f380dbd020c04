"""The SQL of Tidings, as data: named queries (``-- name: NAME`` blocks) in ``shared/`` for
what both databases run alike (``?`` placeholders) and in ``sqlite/`` or ``postgres/`` where
they differ, and numbered migrations with the current schema of each dialect."""

from __future__ import annotations

import contextlib
from functools import cache
from importlib import resources


def split_queries(text: str) -> dict[str, str]:
    """Named queries from a ``.sql`` file: each starts with a line ``-- name: NAME``."""
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("-- name:"):
            if name:
                queries[name] = "\n".join(lines).strip().rstrip(";")
            name, lines = line.removeprefix("-- name:").strip(), []
        elif name:
            lines.append(line)
    if name:
        queries[name] = "\n".join(lines).strip().rstrip(";")
    return queries


def migration_files(dialect: str) -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of every migration of a dialect, in order."""
    folder = resources.files(__name__) / dialect / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


def dialect_file(dialect: str, name: str) -> str:
    """A file of the ``dialect`` folder (``shared`` for the queries both databases run)."""
    return (resources.files(__name__) / dialect / name).read_text()


SHARED_FILES = ("runs.sql", "apps.sql", "flow.sql", "housekeeping.sql", "triggerdev.sql",
                "connect.sql", "privacy.sql", "retention.sql", "views.sql", "keys.sql",
                "events.sql", "migrations.sql", "sealing.sql")


@cache
def queries(dialect: str) -> dict[str, str]:
    """The named queries of a dialect: the shared ones, then the dialect's own overrides."""
    shared = {name: sql for file in SHARED_FILES
              for name, sql in split_queries(dialect_file("shared", file)).items()}
    if dialect == "postgres":
        shared = {name: sql.replace("?", "%s") for name, sql in shared.items()}
    own: dict[str, str] = {}
    for file in ("runs.sql", "privacy.sql", "keys.sql"):
        with contextlib.suppress(FileNotFoundError):
            own.update(split_queries(dialect_file(dialect, file)))
    return {**shared, **own}
