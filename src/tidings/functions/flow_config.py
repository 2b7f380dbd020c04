"""A function's flow control, read from its stored configuration (the shape Inngest SDKs
register; the native SDK writes the same shape) and checked once, at registration.

Keys are matched whatever their case and underscores (``batchEvents``/``batch_events``,
``maxSize``/``max_size``), as the Go server reads JSON.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import msgspec

from tidings.durations import to_ms, to_text
from tidings.errors import ConfigError
from tidings.functions.cel_check import check_expression
from tidings.functions.expressions import evaluate

SECOND, HOUR, DAY = 1000, 3_600_000, 86_400_000
MAX_CONCURRENCY_LIMITS = 2
MAX_CANCELS = 5
MAX_BATCH = 1000
CANCEL_DEFAULT_MS = 365 * DAY
PRIORITY_MAX_S = 43_200  # ±12 h, as Inngest's code clamps it
IDEMPOTENCY_MS = DAY
SCOPES = ("fn", "env", "account")


def fold(key: str) -> str:
    return key.replace("_", "").lower()


def get(obj: Mapping[str, Any], key: str) -> Any:
    """``obj[key]`` matched as Go matches JSON keys (and ignoring ``_``); None when absent."""
    wanted = fold(key)
    for name, value in obj.items():
        if fold(name) == wanted and value is not None:
            return value
    return None


@dataclass(frozen=True, slots=True)
class Concurrency:
    limit: int
    key: str | None
    scope: str


@dataclass(frozen=True, slots=True)
class Rate:
    """A throttle (``burst`` used) or a rate limit: ``limit`` per ``period_ms`` per key."""

    limit: int
    period_ms: int
    key: str | None
    burst: int = 1


@dataclass(frozen=True, slots=True)
class Debounce:
    period_ms: int
    key: str | None
    timeout_ms: int | None


@dataclass(frozen=True, slots=True)
class Batch:
    max_size: int
    timeout_ms: int
    key: str | None
    condition: str | None


@dataclass(frozen=True, slots=True)
class Singleton:
    key: str | None
    mode: str  # skip | cancel


@dataclass(frozen=True, slots=True)
class CancelOn:
    event: str
    condition: str | None
    timeout_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowControl:
    concurrency: tuple[Concurrency, ...] = ()
    throttle: Rate | None = None
    rate_limit: Rate | None = None
    idempotency: str | None = None
    debounce: Debounce | None = None
    batch: Batch | None = None
    priority: str | None = None
    singleton: Singleton | None = None
    cancel: tuple[CancelOn, ...] = ()
    start_ms: int | None = None
    finish_ms: int | None = None

    @property
    def at_route(self) -> bool:
        """Something is decided when an event creates a run."""
        return bool(self.rate_limit or self.idempotency or self.debounce or self.batch
                    or self.priority or self.singleton or self.cancel)

    def expressions(self) -> list[tuple[str, str, tuple[str, ...], bool]]:
        """Every CEL expression: ``(setting, source, variables it is given, is a condition)``."""
        event, both = ("event",), ("event", "async")
        found: list[tuple[str, str | None, tuple[str, ...], bool]] = [
            *(("concurrency.key", c.key, event, False) for c in self.concurrency),
            ("throttle.key", self.throttle.key if self.throttle else None, event, False),
            ("rateLimit.key", self.rate_limit.key if self.rate_limit else None, event, False),
            ("idempotency", self.idempotency, event, False),
            ("debounce.key", self.debounce.key if self.debounce else None, event, False),
            ("batchEvents.key", self.batch.key if self.batch else None, event, False),
            ("batchEvents.if", self.batch.condition if self.batch else None, event, True),
            ("priority.run", self.priority, event, False),
            ("singleton.key", self.singleton.key if self.singleton else None, event, False),
            *(("cancel.if", c.condition, both, True) for c in self.cancel),
        ]
        return [(setting, source, names, condition)
                for setting, source, names, condition in found if source]

    @property
    def at_claim(self) -> bool:
        """Something is decided when a worker claims a run, or released when a call ends."""
        return bool(self.concurrency or self.throttle or self.start_ms or self.finish_ms
                    or self.cancel)


def parse_flow(config: Mapping[str, Any]) -> FlowControl | None:
    """The flow control of a function's config, checked as at registration (its expressions
    too); None when it has none. ``ConfigError`` says what is wrong, naming the setting."""
    flow = _read(config)
    if flow is not None:
        for setting, source, names, condition in flow.expressions():
            try:
                check_expression(source, names=names, condition=condition)
            except ConfigError as exc:
                raise ConfigError(f"{setting}: {exc.message}") from None
    return flow


def _read(config: Mapping[str, Any]) -> FlowControl | None:
    flow = FlowControl(
        concurrency=_concurrency(get(config, "concurrency")),
        throttle=_rate(get(config, "throttle"), "throttle"),
        rate_limit=_rate(get(config, "rateLimit"), "rateLimit"),
        idempotency=_idempotency(get(config, "idempotency")),
        debounce=_debounce(get(config, "debounce")),
        batch=_batch(get(config, "batchEvents")),
        priority=_priority(get(config, "priority")),
        singleton=_singleton(get(config, "singleton")),
        cancel=_cancel(get(config, "cancel")),
        **_timeouts(get(config, "timeouts")),
    )
    if flow.batch is not None:
        # Inngest refuses these (Function.Validate, CodeComboUnsupported).
        for name, used in (("cancel", flow.cancel), ("debounce", flow.debounce),
                           ("singleton", flow.singleton), ("priority.run", flow.priority)):
            if used:
                raise ConfigError(f"batchEvents cannot be combined with {name}: "
                                  "Inngest does not support this combination")
    if flow == FlowControl():
        return None
    return flow


def flow_of(config: Mapping[str, Any]) -> FlowControl | None:
    """The flow control of a config already accepted at registration (never raises). Its
    expressions are not checked again: one accepted by an older check still applies, and
    evaluating it logs why if it cannot work."""
    try:
        return _read(config)
    except ConfigError:
        return None


# -- keys ------------------------------------------------------------------------------------

_PATH = re.compile(r"event(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_MISSING = object()


@lru_cache(maxsize=1024)
def _field_path(expression: str) -> tuple[str, ...] | None:
    """``("data", "user_id")`` for a plain field path like ``event.data.user_id``, the usual
    key: it is looked up directly, without running CEL (the same value, far cheaper)."""
    text = expression.strip()
    return tuple(text.split(".")[1:]) if _PATH.fullmatch(text) else None


def _lookup(event: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = event
    for name in path:
        if not isinstance(value, Mapping):
            return _MISSING
        value = value.get(name, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def key_value(expression: str | None, event: Mapping[str, Any], slug: str = "") -> str:
    """The value of a key expression of function ``slug`` for an event, as text. No
    expression, or one that cannot be evaluated for this event (an error, or too costly:
    logged), gives the empty key (one group for all such events)."""
    if not expression:
        return ""
    path = _field_path(expression)
    if path is not None:
        value = _lookup(event, path)
        value = None if value is _MISSING else value
    else:
        value = evaluate(expression, {"event": event}, f"function {slug}")
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return msgspec.json.encode(value).decode()


def priority_seconds(expression: str, event: Mapping[str, Any], slug: str = "") -> int:
    """``priority.run`` for an event, clamped to ±12 h; 0 when it is not a number."""
    value = evaluate(expression, {"event": event}, f"function {slug}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(-PRIORITY_MAX_S, min(PRIORITY_MAX_S, int(value)))


# -- readers ---------------------------------------------------------------------------------

def _object(raw: Any, what: str) -> Mapping[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{what}: expected an object, got {raw!r}")
    return raw


def _int(obj: Mapping[str, Any], key: str, what: str, *, default: int | None = None) -> int:
    value = get(obj, key)
    if value is None:
        if default is None:
            raise ConfigError(f"{what}.{key} is required")
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ConfigError(f"{what}.{key}: expected a whole number, got {value!r}")
    return int(value)


def _expression(obj: Mapping[str, Any], key: str, what: str) -> str | None:
    value = get(obj, key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{what}.{key} is a CEL expression, got {value!r}")
    return value


def _duration(obj: Mapping[str, Any], key: str, what: str, *, low: int | None = None,
              high: int | None = None, required: bool = False) -> int | None:
    value = get(obj, key)
    if value is None:
        if required:
            raise ConfigError(f"{what}.{key} is required")
        return None
    ms = to_ms(value, f"{what}.{key}")
    if low is not None and ms < low:
        raise ConfigError(f"{what}.{key}: at least {to_text(low)}, got {value!r}")
    if high is not None and ms > high:
        raise ConfigError(f"{what}.{key}: at most {to_text(high)}, got {value!r}")
    return ms


def _concurrency(raw: Any) -> tuple[Concurrency, ...]:
    if raw is None:
        return ()
    entries = raw if isinstance(raw, list) else [raw]
    if len(entries) > MAX_CONCURRENCY_LIMITS:
        raise ConfigError(f"concurrency: at most {MAX_CONCURRENCY_LIMITS} limits, "
                          f"got {len(entries)}")
    out = []
    for entry in entries:
        if isinstance(entry, int) and not isinstance(entry, bool):
            entry = {"limit": entry}
        obj = _object(entry, "concurrency")
        assert obj is not None
        limit = _int(obj, "limit", "concurrency")
        if limit < 0:
            raise ConfigError(f"concurrency.limit: at least 0, got {limit}")
        scope = get(obj, "scope") or "fn"
        if scope not in SCOPES:
            raise ConfigError(f"concurrency.scope: fn, env or account, got {scope!r}")
        key = _expression(obj, "key", "concurrency")
        if limit == 0:
            continue  # 0 means no limit of its own, as in Inngest
        out.append(Concurrency(limit=limit, key=key, scope=scope))
    return tuple(out)


def _rate(raw: Any, what: str) -> Rate | None:
    obj = _object(raw, what)
    if obj is None:
        return None
    limit = _int(obj, "limit", what)
    if what == "throttle":
        limit = max(limit, 1)  # Inngest reads 0 as 1
        burst = _int(obj, "burst", what, default=1)
        if burst < 1:
            raise ConfigError(f"throttle.burst: at least 1, got {burst}")
        period = _duration(obj, "period", what, low=SECOND, high=7 * DAY, required=True)
    else:
        if limit < 1:
            raise ConfigError(f"rateLimit.limit: at least 1, got {limit}")
        burst = 1
        period = _duration(obj, "period", what, low=SECOND, high=DAY, required=True)
    assert period is not None
    return Rate(limit=limit, period_ms=period, key=_expression(obj, "key", what), burst=burst)


def _idempotency(raw: Any) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise ConfigError(f"idempotency is a CEL expression, got {raw!r}")
    return raw


def _debounce(raw: Any) -> Debounce | None:
    obj = _object(raw, "debounce")
    if obj is None:
        return None
    period = _duration(obj, "period", "debounce", low=SECOND, high=7 * DAY, required=True)
    timeout = _duration(obj, "timeout", "debounce", low=SECOND, high=7 * DAY)
    assert period is not None
    return Debounce(period_ms=period, key=_expression(obj, "key", "debounce"),
                    timeout_ms=timeout)


def _batch(raw: Any) -> Batch | None:
    obj = _object(raw, "batchEvents")
    if obj is None:
        return None
    size = _int(obj, "maxSize", "batchEvents")
    if not 2 <= size <= MAX_BATCH:
        raise ConfigError(f"batchEvents.maxSize: 2 to {MAX_BATCH}, got {size}")
    timeout = _duration(obj, "timeout", "batchEvents", low=SECOND, high=7 * DAY, required=True)
    assert timeout is not None
    return Batch(max_size=size, timeout_ms=timeout, key=_expression(obj, "key", "batchEvents"),
                 condition=_expression(obj, "if", "batchEvents"))


def _priority(raw: Any) -> str | None:
    obj = _object(raw, "priority")
    return None if obj is None else _expression(obj, "run", "priority")


def _singleton(raw: Any) -> Singleton | None:
    obj = _object(raw, "singleton")
    if obj is None:
        return None
    mode = get(obj, "mode") or "skip"
    if mode not in ("skip", "cancel"):
        raise ConfigError(f"singleton.mode: skip or cancel, got {mode!r}")
    return Singleton(key=_expression(obj, "key", "singleton"), mode=mode)


def _cancel(raw: Any) -> tuple[CancelOn, ...]:
    if raw is None:
        return ()
    entries = raw if isinstance(raw, list) else [raw]
    if len(entries) > MAX_CANCELS:
        raise ConfigError(f"cancel: at most {MAX_CANCELS} cancellations, got {len(entries)}")
    out = []
    for entry in entries:
        obj = _object(entry, "cancel")
        assert obj is not None
        event = get(obj, "event")
        if not isinstance(event, str) or not event or len(event) > 255:
            raise ConfigError("cancel.event: each cancellation names an event (1 to 255 "
                              "characters)")
        timeout = _duration(obj, "timeout", "cancel", low=SECOND)
        out.append(CancelOn(event=event, condition=_expression(obj, "if", "cancel"),
                            timeout_ms=timeout or CANCEL_DEFAULT_MS))
    return tuple(out)


def _timeouts(raw: Any) -> dict[str, int | None]:
    obj = _object(raw, "timeouts")
    if obj is None:
        return {}
    return {"start_ms": _duration(obj, "start", "timeouts", low=SECOND),
            "finish_ms": _duration(obj, "finish", "timeouts", low=SECOND)}
