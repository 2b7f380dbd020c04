"""The body an SDK registers its functions with (``POST /fn/register``, or the answer to an
in-band sync), read as the Go server reads it: a key matches whatever its case (``appname`` and
``appName``) and, beyond Go, whatever its underscores (``deploy_type``); ``null`` is absent.

Each function becomes a ``FunctionDef`` on queue ``http`` whose config holds its triggers, its
retries (``retries.attempts`` counts *retries*: default 4, at most 20, as Inngest's server reads
it) and its flow control as the SDK gave it, for the engine to apply.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard
from urllib.parse import urlsplit

import jcs

from tidings.errors import ConfigError, RequestRejected
from tidings.functions.flow_config import fold, get, parse_flow
from tidings.functions.registration import FunctionDef
from tidings.sdk.function import MAX_TRIGGERS, TriggerCron, TriggerEvent

DEFAULT_RETRIES = 4
MAX_RETRIES = 20
FLOW_CONTROL = {  # folded key -> the name the config keeps
    "concurrency": "concurrency", "throttle": "throttle", "ratelimit": "rateLimit",
    "debounce": "debounce", "batchevents": "batchEvents", "priority": "priority",
    "cancel": "cancel", "singleton": "singleton", "timeouts": "timeouts",
    "idempotency": "idempotency", "checkpoint": "checkpoint",
}
_SLUG = re.compile(r"[^a-z0-9]+")


def is_http_url(value: Any) -> TypeGuard[str]:
    """True for text an HTTP client can call: an http(s) URL with a host."""
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
        _ = parts.port  # reading it checks it
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed IPv6 bracket, a port out of range
        return False


def has_nul(value: Any) -> bool:
    """True when some text in ``value`` holds a NUL character (PostgreSQL text cannot)."""
    return nul_at(value) is not None


def nul_at(value: Any, path: str = "") -> str | None:
    """Where the first text in ``value`` holding NUL is (``functions[0].name``), or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                return where
            found = nul_at(item, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = nul_at(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def strip_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_nulls(v) for v in value]
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class AppConfig:
    """One registration: the app, where it is served, and its functions."""

    app_id: str
    url: str
    sdk: str | None
    framework: str | None
    functions: tuple[FunctionDef, ...]
    checksum: str


def parse_app(body: Any, *, connected: bool = False) -> AppConfig:
    """Read a register body; ``RequestRejected`` says what is wrong with it. ``connected``: the
    app's worker registered over a Connect socket, and its URLs are placeholders (the gateway
    gives its functions URLs of its own)."""
    if not isinstance(body, Mapping):
        raise RequestRejected("Invalid request: the body is not a JSON object")
    nul = nul_at(body)
    if nul is not None:
        raise RequestRejected(f"Invalid request: {nul[:200]!r} holds a NUL character, "
                              "which cannot be stored as text")
    app_id = get(body, "appName") or get(body, "app_id")
    if not isinstance(app_id, str) or not app_id:
        raise RequestRejected("App ID required")
    url = get(body, "url")
    if not connected and not is_http_url(url):
        raise RequestRejected(f"Invalid request: the app URL {url!r} is not an http(s) URL")
    raw_functions = get(body, "functions") or []
    if not isinstance(raw_functions, list):
        raise RequestRejected("Invalid request: functions is not a list")
    functions: list[FunctionDef] = []
    for index, raw in enumerate(raw_functions):
        try:
            functions.append(parse_function(raw, connected=connected))
        except ConfigError as exc:
            name = get(raw, "id") if isinstance(raw, Mapping) else None
            raise RequestRejected(f"At least one function is invalid: function "
                             f"{name or index!r}: {exc.message}") from None
    slugs = [f.slug for f in functions]
    duplicated = sorted({s for s in slugs if slugs.count(s) > 1})
    if duplicated:
        raise RequestRejected(f"At least one function is invalid: duplicate function ids "
                         f"{', '.join(duplicated)}")
    sdk, framework = get(body, "sdk"), get(body, "framework")
    digest = hashlib.sha256(jcs.canonicalize(strip_nulls(
        {"app": app_id, "url": url, "functions": raw_functions}))).hexdigest()
    return AppConfig(app_id=app_id, url=url, sdk=sdk if isinstance(sdk, str) else None,
                     framework=framework if isinstance(framework, str) else None,
                     functions=tuple(functions), checksum=digest)


def parse_function(raw: Any, *, connected: bool = False) -> FunctionDef:
    if not isinstance(raw, Mapping):
        raise ConfigError("not a JSON object")
    name = get(raw, "name")
    slug = get(raw, "id") or (_SLUG.sub("-", name.lower()).strip("-")
                              if isinstance(name, str) else None)
    if not isinstance(slug, str) or not slug:
        raise ConfigError("a function id is required")
    if name is None:
        name = slug
    if not isinstance(name, str):
        raise ConfigError("the name is not a string")
    triggers = _triggers(get(raw, "triggers"))
    url, retries, step = _step(get(raw, "steps"), get(raw, "retries"), connected)
    config: dict[str, Any] = {"id": slug, "name": name, "triggers": triggers,
                              "retries": retries, "runtime": "http", "step": step}
    for key, value in raw.items():
        canonical = FLOW_CONTROL.get(fold(key))
        if canonical is not None and value is not None:
            config[canonical] = strip_nulls(value)
    parse_flow(config)
    return FunctionDef(slug=slug, name=name, url=url, config=config)


def _triggers(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("at least one trigger is required")
    if len(raw) > MAX_TRIGGERS:
        raise ConfigError(f"at most {MAX_TRIGGERS} triggers")
    out: list[dict[str, Any]] = []
    for trigger in raw:
        if not isinstance(trigger, Mapping):
            raise ConfigError("a trigger is a JSON object")
        event, cron = get(trigger, "event"), get(trigger, "cron")
        if isinstance(cron, str) and event is None:
            TriggerCron(cron=cron).check()
            normal: dict[str, Any] = {"cron": cron}
        elif isinstance(event, str):
            expression = get(trigger, "expression")
            if expression is not None and not isinstance(expression, str):
                raise ConfigError(f"trigger {event!r}: the expression is not a string")
            TriggerEvent(event=event, if_=expression or None).check()
            normal = {"event": event, **({"expression": expression} if expression else {})}
        else:
            raise ConfigError("a trigger has an event name or a cron schedule")
        if normal in out:
            raise ConfigError(f"duplicate trigger {normal}")
        out.append(normal)
    return out


def _step(raw: Any, top_retries: Any,
          connected: bool = False) -> tuple[str, int, dict[str, Any]]:
    """The one step's URL, the function's retries, and the step as registered (its id, name
    and, when the SDK gave any, its retries: what ``GET /dev`` shows, as Inngest does)."""
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise ConfigError("exactly one step is required")
    key, step = next(iter(raw.items()))
    if not isinstance(step, Mapping):
        raise ConfigError("the step is not a JSON object")
    runtime = get(step, "runtime") or {}
    url = get(runtime, "url") if isinstance(runtime, Mapping) else None
    if connected:
        url = ""  # the gateway's to give
    elif not is_http_url(url):
        raise ConfigError(f"the step URL {url!r} is not an http(s) URL")
    retries = get(step, "retries")
    attempts = get(retries, "attempts") if isinstance(retries, Mapping) else None
    if attempts is None:
        attempts = top_retries if top_retries is not None else DEFAULT_RETRIES
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0:
        raise ConfigError(f"retries.attempts must be a whole number from 0, got {attempts!r}")
    step_id, step_name = get(step, "id"), get(step, "name")
    registered: dict[str, Any] = {
        "id": step_id if isinstance(step_id, str) else str(key),
        "name": step_name if isinstance(step_name, str) else str(key)}
    if isinstance(retries, Mapping) or top_retries is not None:
        registered["retries"] = min(attempts, MAX_RETRIES)
    return url, min(attempts, MAX_RETRIES), registered
