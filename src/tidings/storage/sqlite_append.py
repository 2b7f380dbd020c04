"""Event appends in the SQLite writer: neighbouring appends without idempotency keys are merged
into one savepoint and a few multi-row INSERTs (``append_together``); every other job runs in a
savepoint of its own (``run_alone``), so its failure undoes only its own writes."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Sequence
from functools import cache
from itertools import compress
from operator import is_not
from typing import Any

from tidings.storage.base import EventRow, Sealed
from tidings.storage.sql import dialect_file, split_queries
from tidings.storage.tx import SQLiteTx, Tx

Q = split_queries(dialect_file("sqlite", "queries.sql"))
INSERT_CHUNK = 256  # rows per multi-row INSERT: 256 x 16 parameters, well under SQLite's 32,766

# sqlite3 binds exact int, float and str parameters directly, but first treats every bytes and
# None parameter as something to adapt: two failed attribute lookups, each raising and formatting
# an AttributeError, about a third of the cost of binding an event row. Identity adapters make
# that a dictionary hit and a call in C (``bytes(b) is b``; ``{}.get(None)`` is None).
sqlite3.register_adapter(bytes, bytes)
_NO_ADAPTERS: dict[None, None] = {}
sqlite3.register_adapter(type(None), _NO_ADAPTERS.get)


def run_alone(
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


class Append:
    """Events queued for appending. Appends without idempotency keys are plain inserts, so the
    writer runs neighbouring ones together (``append_together``)."""

    __slots__ = ("dedup_until", "plain", "route", "rows", "tx")

    def __init__(self, rows: Sequence[EventRow], dedup_until: int,
                 route: Callable[[Tx, list[EventRow]], Any] | None = None) -> None:
        self.rows = rows
        self.dedup_until = dedup_until
        self.plain = all(row.key is None for row in rows)
        self.route = route
        # The routing's transaction, the last attempt's (one merged with others may be
        # undone and run again alone): what it left for after the commit is called then.
        self.tx: SQLiteTx | None = None

    def routed(self, conn: sqlite3.Connection, fresh: list[EventRow],
               shared: dict[str, Any] | None = None) -> None:
        """Route what was stored, in the same transaction (see ``append_events``)."""
        if self.route is not None and fresh:
            self.tx = SQLiteTx(conn, shared)
            self.route(self.tx, fresh)

    def __call__(self, conn: sqlite3.Connection) -> list[str]:
        ids: list[str] = []
        fresh: list[EventRow] = []
        for row in self.rows:
            if row.key is not None:
                claimed = conn.execute(
                    Q["claim_event_key"],
                    (row.env_id, Sealed.claim_key(row), row.id, self.dedup_until,
                     row.received_at),
                ).fetchone()
                if claimed is None:
                    found = conn.execute(Q["event_id_for_key"],
                                         (row.env_id, Sealed.claim_key(row)))
                    ids.append(found.fetchone()[0])
                    continue
            ids.append(row.id)
            fresh.append(row)
        _insert_events(conn, fresh)
        self.routed(conn, fresh)
        return ids


def plain_append(fn: object) -> bool:
    return type(fn) is Append and fn.plain


def append_together(
    conn: sqlite3.Connection, appends: list[Append], outcomes: list[tuple[bool, Any]], *,
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
        sealed = row.sealed
        if sealed is None:
            values = (row.id, row.env_id, row.name, row.data, row.user, row.user_subject,
                      row.key, row.ts, row.v, row.source, row.context, row.account_id,
                      row.received_at, row.deliver_at, row.delivered_at, row.meta,
                      row.traceparent)
        else:
            values = (row.id, row.env_id, row.name, sealed.data, row.user, row.user_subject,
                      sealed.key, row.ts, row.v, row.source, sealed.context, row.account_id,
                      row.received_at, row.deliver_at, row.delivered_at, sealed.meta,
                      row.traceparent)
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
