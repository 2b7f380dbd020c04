"""The storage interface: everything Tidings keeps, behind one narrow protocol.

Two backends implement it (``sqlite.py``, ``postgres.py``); ``tests/contract`` runs one behavioural
suite against both. Rows are plain frozen values; JSON travels as encoded bytes so that neither
backend re-encodes what ingest already encoded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import msgspec

if TYPE_CHECKING:
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

    async def open(self) -> None:
        """Connect and apply pending migrations."""

    async def close(self) -> None: ...

    async def migrate(self, *, fresh_schema: bool = True) -> list[int]:
        """Apply pending migrations; return the versions applied.

        A database with no migrations at all gets ``schema.sql`` (the current schema) in one go
        unless ``fresh_schema`` is false; either way the result is the same schema.
        """

    async def schema_version(self) -> int: ...

    async def write(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in a write transaction; its result once committed."""

    async def read(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` on a read connection."""

    def backlog(self) -> int:
        """Rows handed to the database and not answered yet (an event counts one, any other
        write one; on PostgreSQL reads too, as they wait for the same pool): how far behind
        it is. The server refuses new events beyond a bound
        (``Load.max_write_backlog``) rather than queue without end."""

    async def ensure_env(self, name: str, parent_id: str | None = None) -> Environment:
        """The environment of that name under that parent, created if missing."""

    async def get_env(self, env_id: str) -> Environment | None: ...

    async def create_key(self, env_id: str, kind: KeyKind, key_hash: str, prefix: str) -> ApiKey:
        ...

    async def key_by_hash(self, key_hash: str) -> ApiKey | None:
        """The key with that hash, revoked or not."""

    async def list_keys(self) -> list[ApiKey]: ...

    async def revoke_key(self, key_id: str) -> bool: ...

    async def append_events(self, rows: Sequence[EventRow], dedup_until: int, *,
                            route: Callable[[Tx, list[EventRow]], Any] | None = None
                            ) -> list[str]:
        """Store events atomically; return one id per row, in order.

        A row whose ``key`` matches a live idempotency entry of its environment is not stored:
        its id in the result is the original event's. New keys are remembered until
        ``dedup_until`` (an absolute time in ms).
        """

    async def get_event(self, env_id: str, event_id: str) -> EventRow | None: ...

    async def list_events(self, query: EventQuery) -> list[EventRow]: ...

    async def get_secret(self, name: str) -> bytes | None: ...

    async def put_secret(self, name: str, value: bytes, *, replace: bool = False) -> bytes:
        """Store a secret; without ``replace`` an existing one wins and is returned."""

    async def ensure_user_key(self, env_id: str, subject: bytes, wrapped: bytes) -> bytes:
        """The wrapped data key of a user, storing ``wrapped`` if there is none yet."""

    async def get_user_key(self, env_id: str, subject: bytes) -> bytes | None: ...

    async def delete_user_key(self, env_id: str, subject: bytes) -> bool: ...

    async def list_user_keys(self) -> list[WrappedKey]: ...

    async def replace_user_keys(self, keys: Sequence[WrappedKey]) -> None: ...


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
    from importlib import resources

    folder = resources.files("tidings.storage") / "sql" / dialect / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


def dialect_file(dialect: str, name: str) -> str:
    from importlib import resources

    return (resources.files("tidings.storage") / "sql" / dialect / name).read_text()


