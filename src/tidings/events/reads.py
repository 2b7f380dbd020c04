"""Reads of the event log as stored (``storage/sql/shared/events.sql``): one event, or a page
newest first. ``user`` stays sealed here; ``ingest.EventLog`` opens it."""

from __future__ import annotations

from tidings.storage.base import EventQuery, EventRow, event_from_row
from tidings.storage.tx import Tx

ID_MAX = "~"  # above every ULID


def get_event(tx: Tx, env_id: str, event_id: str) -> EventRow | None:
    row = tx.one("get_event", (env_id, event_id))
    return event_from_row(row) if row else None


def list_events(tx: Tx, query: EventQuery) -> list[EventRow]:
    """A page of ``query``: ids from ``min_id`` up to before ``max_id`` and ``before_id``."""
    low = query.min_id or ""
    high = min(query.max_id or ID_MAX, query.before_id or ID_MAX)
    if query.name is None:
        rows = tx.all("list_events", (query.env_id, low, high, query.limit))
    else:
        rows = tx.all("list_events_by_name", (query.env_id, query.name, low, high, query.limit))
    return [event_from_row(row) for row in rows]
