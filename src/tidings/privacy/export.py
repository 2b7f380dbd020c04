"""Exporting a person (right of access): every event of theirs, newest first, ``user``
decrypted, each with the runs it started and their statuses; a page at a time, so a person
with millions of events is exported without holding them all."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from tidings.events.model import iso
from tidings.events.reads import ID_MAX
from tidings.ingest import EventLog
from tidings.runs import admin, store
from tidings.storage.base import EventRow, Storage
from tidings.storage.tx import Tx
from tidings.vault import Lookups, UserVault


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportPage:
    events: list[dict[str, Any]]
    cursor: str | None  # the next page's, None at the end


def person_events(tx: Tx, env_id: str, subject: bytes, before_id: str, limit: int
                  ) -> tuple[list[EventRow], dict[str, list[dict[str, Any]]]]:
    """A page of a person's event rows, newest first, with the runs each started."""
    ids = [str(r[0]) for r in tx.all("privacy_person_events", (env_id, subject, before_id,
                                                                limit))]
    rows = sorted(store.event_rows(tx, ids), key=lambda row: row.id, reverse=True)
    runs = {row.id: [_run(run, slug) for run, slug in admin.runs_started_by(tx, env_id, row.id)]
            for row in rows}
    return rows, runs


def _run(run: Any, slug: str) -> dict[str, Any]:
    return {"id": run.id, "function": slug, "status": run.status,
            "created_at": iso(run.created_at), "ended_at": iso(run.ended_at)}


def count(tx: Tx, env_id: str, subject: bytes) -> int:
    row = tx.one("privacy_count_events", (env_id, subject))
    return int(row[0]) if row else 0


async def export_page(storage: Storage, vault: UserVault, env_id: str, external_id: str, *,
                      cursor: str | None, limit: int) -> ExportPage:
    """One page of a person's events (``cursor``: where the last page ended)."""
    subject = vault.subject(env_id, external_id)
    rows, runs = await storage.read(partial(person_events, env_id=env_id, subject=subject,
                                            before_id=cursor or ID_MAX, limit=limit + 1))
    page = rows[:limit]
    log = EventLog(storage, vault)
    lookups: Lookups = {}
    events = [{**(await log.open(row, lookups)).to_json(), "runs": runs[row.id]}
              for row in page]
    return ExportPage(events=events, cursor=page[-1].id if len(rows) > limit else None)
