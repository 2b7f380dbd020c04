"""Storage backends behind one interface (``base.Storage``)."""

from __future__ import annotations

from tidings.storage.base import Storage


def storage_for(url: str) -> Storage:
    """The backend a database URL selects: ``postgresql://`` or SQLite (anything else)."""
    if url.startswith(("postgresql://", "postgres://")):
        from tidings.storage.postgres import PostgresStorage

        return PostgresStorage(url)
    from tidings.storage.sqlite import SQLiteStorage

    return SQLiteStorage(url)


__all__ = ["Storage", "storage_for"]
