"""How long an environment keeps what it stores: its retention settings.

* ``events_ttl``: events older than this are deleted (``engine/housekeeping.py``), except those
  a run still needs: the trigger of a run that has not ended, the events of a batch not ended,
  and delayed events not delivered yet;
* ``runs_ttl``: runs that ended longer ago than this are deleted, with their steps;
* ``dedup_window``: how long an event's ``id`` (idempotency key) keeps a second event with the
  same ``id`` from being stored; never longer than ``events_ttl``.

Each is set per environment (``POST /v1/settings``, ``tidings settings set``) or left to the
default of the mode: ``tidings dev`` keeps everything, ``tidings serve`` keeps events and runs
30 days; the dedup window is 24 hours in both. Stored in ``env_settings``: NULL is the default,
0 is "forever". A process believes what it read for a few seconds (``env_settings.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from tidings.durations import to_ms, to_text
from tidings.errors import ConfigError, RequestRejected
from tidings.storage.tx import Tx

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
MAX_TTL_MS = 3650 * DAY_MS  # ten years: beyond, say "forever"
MIN_TTL_MS = HOUR_MS
MIN_DEDUP_MS = 1000
FOREVER = "forever"
FIELDS = ("events_ttl", "runs_ttl", "dedup_window")


@dataclass(frozen=True, slots=True, kw_only=True)
class Retention:
    """Effective settings; a ttl of None keeps forever."""

    events_ttl_ms: int | None
    runs_ttl_ms: int | None
    dedup_window_ms: int

    def to_json(self) -> dict[str, Any]:
        return {"events_ttl": _text(self.events_ttl_ms), "runs_ttl": _text(self.runs_ttl_ms),
                "dedup_window": to_text(self.dedup_window_ms)}


def _text(ms: int | None) -> str:
    return FOREVER if ms is None else to_text(ms)


def defaults(dev: bool) -> Retention:
    """The mode's defaults: dev keeps everything; serve keeps events and runs 30 days."""
    ttl = None if dev else 30 * DAY_MS
    return Retention(events_ttl_ms=ttl, runs_ttl_ms=ttl, dedup_window_ms=DAY_MS)


@dataclass(frozen=True, slots=True, kw_only=True)
class Stored:
    """An environment's own settings: None is the default, 0 is forever."""

    events_ttl_ms: int | None = None
    runs_ttl_ms: int | None = None
    dedup_window_ms: int | None = None

    def effective(self, base: Retention) -> Retention:
        def ttl(own: int | None, default: int | None) -> int | None:
            return default if own is None else (own or None)

        return Retention(events_ttl_ms=ttl(self.events_ttl_ms, base.events_ttl_ms),
                         runs_ttl_ms=ttl(self.runs_ttl_ms, base.runs_ttl_ms),
                         dedup_window_ms=self.dedup_window_ms or base.dedup_window_ms)


def parse_changes(payload: Any, current: Stored, base: Retention, *,
                  others: tuple[str, ...] = ()) -> Stored:
    """``current`` with the changes of a request body applied: each field a duration (``"30d"``,
    milliseconds), ``"forever"`` (the ttls) or null (back to the default). ``RequestRejected``
    naming the setting when one is bad or the result does not hold together. ``others``: the
    settings of the same body that are not retention's (named in the messages)."""
    allowed = ", ".join((*FIELDS, *others))
    if not isinstance(payload, dict) or not payload:
        raise RequestRejected("the body is a JSON object with one or more of: " + allowed)
    unknown = sorted(set(payload) - set(FIELDS))
    if unknown:
        raise RequestRejected(f"unknown field(s): {', '.join(unknown)}; allowed: {allowed}")
    changed = current
    for name, value in payload.items():
        changed = replace(changed, **{f"{name}_ms": _value(name, value)})
    check(changed.effective(base), changed)
    return changed


def _value(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if value == FOREVER:
        if name == "dedup_window":
            raise RequestRejected("dedup_window: a duration (the window cannot be forever)")
        return 0
    if not isinstance(value, (int, str)) or isinstance(value, bool):
        raise RequestRejected(f"{name}: a duration like 30d or 12h, milliseconds, "
                              f"{FOREVER!r} or null (the default)")
    if isinstance(value, str) and ("\x00" in value or len(value) > 64):
        raise RequestRejected(f"{name}: a duration like 30d or 12h")
    try:
        ms = to_ms(value, name)
    except ConfigError as exc:
        raise RequestRejected(exc.message) from None
    if name == "dedup_window":
        if not MIN_DEDUP_MS <= ms <= MAX_TTL_MS:
            raise RequestRejected(f"dedup_window: from 1s to {to_text(MAX_TTL_MS)}")
    elif not MIN_TTL_MS <= ms <= MAX_TTL_MS:
        raise RequestRejected(f"{name}: from 1h to {to_text(MAX_TTL_MS)}, or {FOREVER!r}")
    return ms


def check(effective: Retention, stored: Stored) -> None:
    """The dedup window may not outlive the events it protects."""
    ttl = effective.events_ttl_ms
    if ttl is not None and effective.dedup_window_ms > ttl:
        blamed = "dedup_window" if stored.dedup_window_ms is not None else "events_ttl"
        raise RequestRejected(
            f"{blamed}: events_ttl ({to_text(ttl)}) may not be shorter than the dedup window "
            f"({to_text(effective.dedup_window_ms)}): an event must outlive the window in "
            "which its id keeps duplicates out")


def stored(tx: Tx, env_id: str) -> Stored:
    row = tx.one("retention_of_env", (env_id,))
    if row is None:
        return Stored()
    return Stored(events_ttl_ms=row[0], runs_ttl_ms=row[1], dedup_window_ms=row[2])


def save(tx: Tx, env_id: str, settings: Stored, now: int) -> None:
    tx.run("retention_save", (env_id, settings.events_ttl_ms, settings.runs_ttl_ms,
                              settings.dedup_window_ms, now))

