"""Why a run that has not started (or is between calls) is held back, for the runs API."""

from __future__ import annotations

from typing import Any

from tidings.events.model import iso
from tidings.runs.model import QUEUED, TERMINAL, Run
from tidings.storage.tx import Tx

REASONS = {"concurrency": "concurrency_limited", "throttled": "throttled",
           "debounce": "debounced", "batch": "batching"}


def key_shown(key: str) -> str:
    """The key's value without the scope it is stored under."""
    parts = {"c:f:": 4, "c:e:": 3, "c:a:": 2, "t:": 2}
    for prefix, skip in parts.items():
        if key.startswith(prefix):
            pieces = key.split(":", skip)
            return pieces[skip] if len(pieces) > skip else ""
    return key


def waiting(tx: Tx, run: Run) -> dict[str, Any] | None:
    """``{"reason", "key", "since", "until"}`` (``size`` for a batch or debounce) when flow
    control holds the run back; None otherwise."""
    if run.status in TERMINAL or run.lease_owner is not None:
        return None
    row = tx.one("flow_wait_of", (run.id,))
    if row is not None:
        reason, key, since, until = row
        return {"reason": REASONS.get(reason, reason), "key": key_shown(key), "since": since,
                "until": until}
    if run.status == QUEUED and run.started_at is None:
        pending = tx.one("flow_pending_of", (run.id,))
        if pending is not None:
            kind, key, first_at, size = pending
            return {"reason": REASONS.get(kind, kind), "key": key, "since": first_at,
                    "until": run.due_at, "size": size}
    return None


def skips(tx: Tx, event_id: str) -> list[dict[str, Any]]:
    """The functions this event started no run of because of their flow control, and why
    (``rate_limited``, ``idempotency``, ``singleton``)."""
    return [{"function": slug, "reason": reason, "at": iso(at)}
            for slug, reason, at in tx.all("flow_skips_of_event", (event_id,))]
