"""The storage interface: everything Tidings keeps, behind one narrow protocol.

Two backends implement it (``sqlite.py``, ``postgres.py``); ``tests/contract`` runs one behavioural
suite against both. Domain code reads and writes through functions of a ``Tx`` (``tx.py``)
that it hands to ``Storage.read`` or ``Storage.write``; a backend itself only opens, migrates,
runs those, appends events and hears other processes. Rows are plain frozen values; JSON travels
as encoded bytes so that neither backend re-encodes what ingest already encoded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import msgspec

from tidings.sealing import (
    SEALED_BYTES,
    SEALS,
    TEXT_MARK,
    context_aad,
    event_aad,
    meta_aad,
    open_key,
    opened,
)

if TYPE_CHECKING:
    from tidings.storage.changes import Changes
    from tidings.storage.tx import Tx

KeyKind = Literal["event", "api"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Environment:
    id: str
    name: str
    parent_id: str | None
    created_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    id: str
    env_id: str
    env_name: str
    kind: KeyKind
    key_hash: str
    prefix: str
    created_at: int
    revoked_at: int | None
    reads_user: bool = False  # an API key: what it reads carries events' user decrypted


class EventRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One event as stored. ``user`` is ciphertext; ``data``/``context``/``meta`` are JSON bytes.

    A msgspec struct rather than a frozen dataclass: ingest builds one per event, and a struct
    is built about ten times faster. It holds only strings, bytes and numbers, so the garbage
    collector need not track it (``gc=False``).
    """

    id: str
    env_id: str
    name: str
    data: bytes
    user: bytes | None
    user_subject: bytes | None
    key: str | None
    ts: int
    v: str | None
    source: str
    context: bytes | None
    account_id: str | None
    received_at: int
    deliver_at: int | None
    delivered_at: int | None = None
    cancelled_at: int | None = None
    meta: bytes | None = None
    # The W3C context it was sent in, kept when tracing is on (``observe/tracing.py``).
    traceparent: str | None = None
    # What is stored in place of ``data``, ``key``, ``context`` and ``meta`` when the
    # environment seals its data (``sealing.py``); they stay plaintext for routing in the same
    # transaction.
    sealed: Sealed | None = None


class Sealed(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An event's ``data``, ``id``, ``context`` and ``meta`` as stored sealed, and the blind
    index of its ``id`` (``event_idempotency`` holds that instead of the ``id``)."""

    data: bytes
    key: str | None = None
    dedup: str | None = None
    context: bytes | None = None
    meta: bytes | None = None

    @staticmethod
    def claim_key(row: EventRow) -> str | None:
        """The idempotency key of ``row`` as ``event_idempotency`` holds it."""
        return row.key if row.sealed is None else row.sealed.dedup


def internal_event(*, event_id: str, env_id: str, name: str, data: Any, ts: int,
                   received_at: int, meta: bytes | None = None, user: bytes | None = None,
                   user_subject: bytes | None = None) -> EventRow:
    """An event Tidings itself emits (``tidings/...``: a run's lifecycle, an invocation, a cron
    tick): ``data`` as a value, encoded here; no key, version, context or account."""
    return EventRow(id=event_id, env_id=env_id, name=name, data=msgspec.json.encode(data),
                    user=user, user_subject=user_subject, key=None, ts=ts, v=None,
                    source="tidings", context=None, account_id=None, received_at=received_at,
                    deliver_at=None, meta=meta)


def env_from_row(row: Any) -> Environment:
    """An ``Environment`` from ``id, name, parent_id, created_at``."""
    return Environment(id=row[0], name=row[1], parent_id=row[2], created_at=row[3])


def key_from_row(row: Any) -> ApiKey:
    """An ``ApiKey`` from the columns the key queries select (the environment's name third)."""
    return ApiKey(
        id=row[0], env_id=row[1], env_name=row[2], kind=row[3], key_hash=row[4], prefix=row[5],
        created_at=row[6], revoked_at=row[7], reads_user=bool(row[8]),
    )


def event_from_row(r: Sequence[Any]) -> EventRow:
    """An ``EventRow`` from the columns of ``events`` in table order, as either database gives
    them back (JSON as text on PostgreSQL, as bytes on SQLite); ``traceparent`` when the query
    reads it (the runs' calls do: ``event_rows``)."""
    data, key = _bytes(r[3]), r[6]
    if data.startswith(SEALED_BYTES):
        data = SEALS.open_json(data, event_aad(r[0]))
    if key is not None and key.startswith(TEXT_MARK):
        key = open_key(key, r[0])
    return EventRow(
        id=r[0], env_id=r[1], name=r[2], data=data, user=_blob(r[4]),
        user_subject=_blob(r[5]), key=key, ts=r[7], v=r[8], source=r[9],
        context=opened(_bytes(r[10]), context_aad(r[0])) if r[10] is not None else None,
        account_id=r[11], received_at=r[12], deliver_at=r[13], delivered_at=r[14],
        cancelled_at=r[15],
        meta=opened(_bytes(r[16]), meta_aad(r[0])) if r[16] is not None else None,
        traceparent=r[17] if len(r) > 17 else None)


def _bytes(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _blob(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class EventQuery:
    """A page of the event log, newest first. Bounds are event ids (ULIDs sort by time)."""

    env_id: str
    name: str | None = None
    min_id: str | None = None
    max_id: str | None = None
    before_id: str | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class WrappedKey:
    env_id: str
    subject: bytes
    wrapped: bytes


class Storage(Protocol):
    """What the engine and the server need from a database."""

    dialect: str
    # ``append_events(route=...)`` routes stored events in the transaction that stores them.
    routes_inline: bool
    # Writes commit in the order they are made (one writer thread), so a caller may go on
    # while its write commits and the next one still lands after it.
    ordered_writes: bool
    # ``subscribe`` hears other processes (runs due, keys revoked); without, they are polled.
    notifies: bool
    # Events' ``data`` takes bytes as they are (a BLOB), so sealed data is stored in binary
    # (``sealing.py``); without, it is JSON and sealed data is a JSON string.
    binary_data: bool
    # This process's commits, told to hooks (coalesced): ``storage/changes.py``.
    changes: Changes

    async def open(self) -> None:
        """Connect and apply pending migrations."""

    async def close(self) -> None: ...

    async def migrate(self, *, fresh_schema: bool = True) -> list[int]:
        """Apply pending migrations; return the versions applied.

        A database with no migrations at all gets ``schema.sql`` (the current schema) in one go
        unless ``fresh_schema`` is false; either way the result is the same schema.
        """

    async def write(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in a write transaction; its result once committed."""

    async def read(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` on a read connection."""

    def read_now(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in the calling thread, at once, on a connection of its own (one at a
        time): for the rare read that cannot wait for the event loop, a key reference made by
        another process met by a reader with no transaction at hand (``sealing.py``)."""

    async def subscribe(self, due: Callable[[str], None], revoked: Callable[[], None],
                        listening: Callable[[], None]) -> None:
        """Hear other processes until the connection fails (it raises) or the task is
        cancelled: ``due(queue)`` when runs of a queue are due (``"*"``: any), ``revoked()``
        when a key was revoked; ``listening()`` once listening took effect."""

    async def watch(self, changed: Callable[[], None], listening: Callable[[], None]) -> None:
        """Hear that other processes committed writes until the connection fails (it raises)
        or the task is cancelled: ``changed()`` (coalesced) after their commits, never this
        process's own (``changes`` has them); ``listening()`` once listening took effect.
        SQLite tells nothing between processes: it only waits."""

    def backlog(self) -> int:
        """Rows handed to the database and not answered yet (an event counts one, any other
        write one; on PostgreSQL reads too, as they wait for the same pool): how far behind
        it is. The server refuses new events beyond a bound
        (``Load.max_write_backlog``) rather than queue without end."""

    async def append_events(self, rows: Sequence[EventRow], dedup_until: int, *,
                            route: Callable[[Tx, list[EventRow]], Any] | None = None
                            ) -> list[str]:
        """Store events atomically; return one id per row, in order.

        A row whose ``key`` matches a live idempotency entry of its environment is not stored:
        its id in the result is the original event's. New keys are remembered until
        ``dedup_until`` (an absolute time in ms).
        """

    async def scrub(self) -> None:
        """Leave no copy of deleted rows in the database's files (after an erasure): SQLite
        checkpoints its WAL and truncates it; PostgreSQL has nothing to do (a dump holds no
        deleted rows; autovacuum reclaims their space)."""
