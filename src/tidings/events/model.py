"""Event values: what ingest validated (``NewEvent``), what the log holds (``StoredEvent``).

One event carries the fields of both seeds: Inngest's ``name``/``data``/``user``/``id``/``ts``/``v``
and ``meta`` (sessions, ``events/meta.py``), and Trigger.dev's ``payload`` (= data), ``context``,
``source``, ``timestamp`` (= ts) and delayed delivery (``deliver_at``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

DEFAULT_SOURCE = "tidings"


class NewEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A validated event, not stored yet.

    A msgspec struct rather than a frozen dataclass: ingest builds one per event, and a struct
    is built about ten times faster. Not tracked by the garbage collector (``gc=False``): it
    holds JSON values, which cannot refer back to it, and thousands of them are in flight at
    once under load.
    """

    name: str
    data: bytes  # the JSON object, as stored
    user: dict[str, Any]
    key: str | None
    ts: int
    v: str | None = None
    meta: dict[str, Any] | None = None  # resolved: ``{"sessions": {...}}``
    source: str = DEFAULT_SOURCE
    context: dict[str, Any] | None = None
    account_id: str | None = None
    deliver_at: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredEvent:
    """An event as the event log holds it, with ``user`` decrypted."""

    id: str
    env_id: str
    name: str
    data: dict[str, Any]
    user: dict[str, Any]
    key: str | None
    ts: int
    v: str | None
    meta: dict[str, Any] | None
    source: str
    context: dict[str, Any] | None
    account_id: str | None
    received_at: int
    deliver_at: int | None
    delivered_at: int | None
    cancelled_at: int | None
    user_erased: bool = False  # its person was erased: ``user`` is ``{}``

    def to_json(self, *, reads_user: bool = True) -> dict[str, Any]:
        """The record the read API and the SDK see; ``user`` masked (``{}``, ``user_masked``)
        for a reader without the permission to read it (``keys.Access``)."""
        masked = bool(self.user) and not reads_user
        return {
            "id": self.id,
            "internal_id": self.id,  # what Inngest's REST API names it
            "name": self.name,
            "data": self.data,
            "user": {} if masked else self.user,
            "user_masked": masked,
            "event_id": self.key if self.key is not None else self.id,
            "idempotency_key": self.key,
            "ts": self.ts,
            "timestamp": iso(self.ts),
            "v": self.v,
            "meta": self.meta,
            "source": self.source,
            "context": self.context,
            "account_id": self.account_id,
            "received_at": iso(self.received_at),
            "deliver_at": iso(self.deliver_at),
            "delivered_at": iso(self.delivered_at),
            "cancelled_at": iso(self.cancelled_at),
            "user_erased": self.user_erased,
        }


def iso(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ISO-8601 UTC with milliseconds, or None."""
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
