"""Searching the event log, newest first, by cursor: by name (exact, or a prefix written
``billing/*``), by time range, and by a CEL condition over the event as triggers see it
(``event.data.plan == 'pro'``). ``GET /v1/events`` and the dashboard's events page both read
through ``search``.

A condition cannot use an index, so one page reads at most ``SCAN`` events past its cursor. A
page may then come back short, even empty, with a cursor to carry on from: ``scanned`` says how
far it looked, so a caller can say "no match in the last 2,000 events" instead of scanning the
whole log in one request.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import msgspec

from tidings.events.model import StoredEvent
from tidings.events.reads import ID_MAX, list_events
from tidings.functions.cel_check import check_expression
from tidings.functions.expressions import matches
from tidings.ingest import EventLog
from tidings.runs import store
from tidings.storage.base import EventQuery, EventRow, Storage
from tidings.storage.tx import Tx
from tidings.vault import Lookups

SCAN = 2000
BATCH = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class EventSearch:
    """What to look for. ``name`` ending in ``*`` is a prefix; ``condition`` is CEL over
    ``event`` (checked with ``check_condition`` first)."""

    env_id: str
    name: str | None = None
    condition: str | None = None
    min_id: str | None = None
    max_id: str | None = None
    before_id: str | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class EventPage:
    events: list[StoredEvent]
    cursor: str | None  # where the next page starts; None: nothing older is left
    scanned: int  # events read to fill the page (more than its length under a condition)


def check_condition(source: str) -> None:
    """``ExpressionError`` when the condition cannot work for any event (as at registration)."""
    check_expression(source, condition=True)


def event_variables(row: EventRow) -> dict[str, Any]:
    """The event as a condition sees it: the shape triggers' ``if`` expressions get."""
    event: dict[str, Any] = {"id": row.key or row.id, "name": row.name,
                             "data": msgspec.json.decode(row.data), "ts": row.ts}
    if row.v is not None:
        event["v"] = row.v
    if row.meta:
        event["meta"] = msgspec.json.decode(row.meta)
    return {"event": event}


async def search(storage: Storage, log: EventLog, query: EventSearch) -> EventPage:
    """One page of events matching ``query``, with ``user`` decrypted (the page's data-key
    lookups shared)."""
    lookups: Lookups = {}
    if query.condition is None:
        rows = await _rows(storage, query, query.before_id, query.limit + 1)
        page = rows[:query.limit]
        cursor = page[-1].id if len(rows) > query.limit else None
        return EventPage(events=[await log.open(row, lookups) for row in page], cursor=cursor,
                         scanned=len(page))
    found: list[EventRow] = []
    before, scanned, exhausted = query.before_id, 0, False
    while len(found) < query.limit and scanned < SCAN and not exhausted:
        want = min(BATCH, SCAN - scanned)
        rows = await _rows(storage, query, before, want)
        exhausted = len(rows) < want
        for row in rows:
            scanned += 1
            before = row.id
            if matches(query.condition, event_variables(row), "event search"):
                found.append(row)
                if len(found) == query.limit:
                    exhausted = exhausted and row is rows[-1]
                    break
    if not exhausted and before is not None:
        # Is anything older left at all? (one row, no condition)
        exhausted = not await _rows(storage, query, before, 1)
    cursor = None if exhausted else before
    return EventPage(events=[await log.open(row, lookups) for row in found], cursor=cursor,
                     scanned=scanned)


async def _rows(storage: Storage, query: EventSearch, before: str | None,
                limit: int) -> list[EventRow]:
    name = query.name
    if name is not None and name.endswith("*"):
        return await storage.read(partial(_by_prefix, prefix=name[:-1], query=query,
                                          before=before, limit=limit))
    page = EventQuery(env_id=query.env_id, name=name, min_id=query.min_id,
                      max_id=query.max_id, before_id=before, limit=limit)
    return await storage.read(lambda tx: list_events(tx, page))


def _by_prefix(tx: Tx, prefix: str, query: EventSearch, before: str | None,
               limit: int) -> list[EventRow]:
    high = min(query.max_id or ID_MAX, before or ID_MAX)
    ids = [r[0] for r in tx.all("event_ids_by_prefix", (
        query.env_id, len(prefix), prefix, query.min_id or "", high, limit))]
    if not ids:
        return []
    return sorted(store.event_rows(tx, ids), key=lambda row: row.id, reverse=True)


def run_counts(tx: Tx, event_ids: list[str]) -> dict[str, dict[str, int]]:
    """How many runs each event started, by status."""
    return {event_id: dict(tx.all("run_statuses_of_event", (event_id,)))
            for event_id in event_ids}
