"""Flow control of native functions, written as Inngest's SDKs write it.

Each value turns into the JSON an Inngest SDK registers (``to_json``), so native and SDK-served
functions are read, checked and applied by the same code (``tidings.flow``). Durations are a
``timedelta``, milliseconds, or text like ``"30s"``, ``"5m"``, ``"2h"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from tidings.durations import Duration, to_ms, to_text


def _duration(value: Duration) -> str:
    return to_text(to_ms(value))


@dataclass(frozen=True, slots=True, kw_only=True)
class Concurrency:
    """At most ``limit`` steps of runs with the same ``key`` (CEL over ``event``) at once,
    counted per function (``scope="fn"``), across the environment or the whole account."""

    limit: int
    key: str | None = None
    scope: Literal["fn", "env", "account"] = "fn"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"limit": self.limit, "scope": self.scope}
        if self.key:
            out["key"] = self.key
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Throttle:
    """At most ``limit`` run starts per ``period`` per key, ``burst`` of them back to back;
    runs over it wait their turn."""

    limit: int
    period: Duration
    burst: int = 1
    key: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"limit": self.limit, "period": _duration(self.period),
                               "burst": self.burst}
        if self.key:
            out["key"] = self.key
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """At most ``limit`` runs per ``period`` (up to 24 h) per key; events over it start no
    run (the skip is recorded on the event)."""

    limit: int
    period: Duration
    key: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"limit": self.limit, "period": _duration(self.period)}
        if self.key:
            out["key"] = self.key
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Debounce:
    """One run per burst of events with the same key, with the last event: it starts once
    ``period`` (1 s to 7 d) passes without a new event, or ``timeout`` after the first."""

    period: Duration
    key: str | None = None
    timeout: Duration | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"period": _duration(self.period)}
        if self.key:
            out["key"] = self.key
        if self.timeout is not None:
            out["timeout"] = _duration(self.timeout)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    """One run for up to ``max_size`` events with the same key (``ctx.events``), started when
    the batch is full or ``timeout`` after its first event. Events for which ``if_`` is false
    run alone at once."""

    max_size: int
    timeout: Duration
    key: str | None = None
    if_: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"maxSize": self.max_size, "timeout": _duration(self.timeout)}
        if self.key:
            out["key"] = self.key
        if self.if_:
            out["if"] = self.if_
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Priority:
    """``run``: CEL over ``event`` giving seconds (±12 h at most): the run is queued that much
    earlier (later when negative)."""

    run: str

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run}


@dataclass(frozen=True, slots=True, kw_only=True)
class Singleton:
    """One active run per key: a new one is skipped (``mode="skip"``) or replaces the active
    one, which is cancelled (``mode="cancel"``)."""

    mode: Literal["skip", "cancel"] = "skip"
    key: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode}
        if self.key:
            out["key"] = self.key
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancel:
    """Cancel the run when ``event`` arrives and ``if_`` (CEL over ``event``, the run's
    trigger, and ``async``, the new event) holds, within ``timeout`` (default one year)."""

    event: str
    if_: str | None = None
    timeout: Duration | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.event}
        if self.if_:
            out["if"] = self.if_
        if self.timeout is not None:
            out["timeout"] = _duration(self.timeout)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """``start``: the longest a run may wait to start; ``finish``: the longest it may take
    once started. A run past either is cancelled."""

    start: Duration | None = None
    finish: Duration | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.start is not None:
            out["start"] = _duration(self.start)
        if self.finish is not None:
            out["finish"] = _duration(self.finish)
        return out


def flow_config(*, concurrency: int | Concurrency | list[Concurrency] | None = None,
                throttle: Throttle | None = None, rate_limit: RateLimit | None = None,
                idempotency: str | None = None, debounce: Debounce | None = None,
                batch_events: Batch | None = None, priority: Priority | None = None,
                singleton: Singleton | None = None, cancel: list[Cancel] | None = None,
                timeouts: Timeouts | None = None) -> dict[str, Any]:
    """The config keys of these settings, as an Inngest SDK registers them."""
    out: dict[str, Any] = {}
    if concurrency is not None:
        if isinstance(concurrency, int):
            concurrency = Concurrency(limit=concurrency)
        entries = concurrency if isinstance(concurrency, list) else [concurrency]
        out["concurrency"] = [c.to_json() for c in entries]
    for name, value in (("throttle", throttle), ("rateLimit", rate_limit),
                        ("debounce", debounce), ("batchEvents", batch_events),
                        ("priority", priority), ("singleton", singleton),
                        ("timeouts", timeouts)):
        if value is not None:
            out[name] = value.to_json()
    if idempotency is not None:
        out["idempotency"] = idempotency
    if cancel:
        out["cancel"] = [c.to_json() for c in cancel]
    return out
