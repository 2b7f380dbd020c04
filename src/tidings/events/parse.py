"""From request bytes to validated events.

Every event of a request is checked before any is stored: a request with one bad event stores
nothing, and its error lists every bad event with its index and field.

Text is checked for what the backends cannot store, the same way on both: ``data`` is kept as
the bytes it came as (msgspec checks its structure and escapes but not its UTF-8), so it is
checked to be UTF-8 here (one ``isascii`` scan when it is ASCII, as it nearly always is); and
the fields stored as text columns (``name``, ``id``, ``v``, ``source``, ``account_id``) may not
hold NUL, which PostgreSQL text cannot. A ``\\u0000`` escape inside ``data``, ``user``,
``context`` or ``meta`` is kept: those are stored as ``json`` (not ``jsonb``) on PostgreSQL and
as text on SQLite, so it round-trips on both.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import msgspec

from tidings.errors import EventsInvalid, FieldError, PayloadTooLarge, RequestRejected
from tidings.events.meta import MetaError, resolve_meta
from tidings.events.model import DEFAULT_SOURCE, NewEvent
from tidings.json_input import blame, is_utf8, reason, shallow_enough
from tidings.sealing import TEXT_MARK
from tidings.settings import Limits

RESERVED_PREFIXES = ("inngest/", "tidings/")
TS_MIN = 315_532_800_000  # 1980-01-01T00:00:00Z
TS_MAX = 4_102_444_800_000  # 2100-01-01T00:00:00Z, exclusive
INTERNAL_DATA_KEY = "_inngest"

NOT_EVENTS = "request body must contain an event object or an array of event objects"

JsonObject = dict[str, Any]


class _WireEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    name: str
    data: msgspec.Raw = msgspec.Raw(b"")  # kept as JSON: ingest stores it as it came
    payload: JsonObject | None = None
    user: JsonObject | None = None
    id: str | None = None
    ts: int | None = None
    timestamp: int | str | None = None
    v: str | None = None
    meta: JsonObject | None = None
    source: str | None = None
    context: JsonObject | None = None
    account_id: str | None = None
    deliver_at: int | str | None = None
    deliver_after: int | None = None


_decode_list = msgspec.json.Decoder(list[msgspec.Raw]).decode
_decode_event = msgspec.json.Decoder(_WireEvent).decode
_decode_wires = msgspec.json.Decoder(list[_WireEvent]).decode
_MSGSPEC_AT = re.compile(r"^(.*?)(?: - at `\$(?:\.(?P<path>.+))?`)?$", re.S)
_MSGSPEC_FIELD = re.compile(r"field `(?P<field>[^`]+)`")


def parse_events(body: bytes, limits: Limits, now: int) -> list[NewEvent]:
    """Validate a request body (one event object or an array of them) into events.

    Raises ``RequestRejected`` for a body that is not events at all, ``PayloadTooLarge`` when a
    limit is exceeded, and ``EventsInvalid`` naming every bad event otherwise.
    """
    quick = _all_plain(body, limits, now)
    if quick is not None:
        return quick
    raws = _split(body, limits)
    events: list[NewEvent] = []
    errors: list[FieldError] = []
    too_large = False
    max_bytes, max_depth = limits.max_event_bytes, limits.max_depth
    for index, raw in enumerate(raws):
        text = raw if type(raw) is bytes else bytes(raw)
        size = len(text)
        if size > max_bytes:
            too_large = True
            errors.append(
                FieldError(index, "", f"event is {size} bytes, over the limit of "
                           f"{limits.max_event_bytes} bytes")
            )
            continue
        try:
            wire = _decode_event(text)
        except msgspec.ValidationError as exc:
            errors.append(_field_error(index, str(exc)))
            continue
        except (msgspec.DecodeError, RecursionError) as exc:
            errors.append(_decode_error(index, text, exc, max_depth))
            continue
        # No value can nest deeper than the event has brackets (strings only add to the count),
        # so a small count spares walking data, user and context.
        shallow = text.count(b"{") + text.count(b"[") <= max_depth
        event = _plain(wire, limits, now) if shallow else None
        if event is None:
            event = _check(index, wire, limits, now, errors)
        if event is not None:
            events.append(event)
    if errors:
        if too_large:
            raise PayloadTooLarge(EventsInvalid(errors).message)
        raise EventsInvalid(errors)
    return events


def _all_plain(body: bytes, limits: Limits, now: int) -> list[NewEvent] | None:
    """The common case in one pass: an array no bigger than one event may be (so no event can be
    over the limit) of plain, valid events. None sends the body down the careful path, which
    finds and names whatever is wrong."""
    if len(body) > limits.max_event_bytes or body[:1] != b"[":
        return None
    try:
        wires = _decode_wires(body)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None
    if len(wires) > limits.max_events_per_request:
        return None
    events = []
    for wire in wires:
        if wire.user is not None or wire.context is not None:
            return None
        data = bytes(wire.data)
        if data.count(b"{") + data.count(b"[") > limits.max_depth:
            return None
        event = _plain(wire, limits, now)
        if event is None:
            return None
        events.append(event)
    return events


def _split(body: bytes, limits: Limits) -> list[msgspec.Raw] | list[bytes]:
    start = body.lstrip()[:1]
    if not start:
        raise RequestRejected("request body is empty: " + NOT_EVENTS)
    if start == b"{":
        return [body]
    if start != b"[":
        try:
            msgspec.json.decode(body)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise RequestRejected(f"malformed JSON: {reason(exc)}") from None
        raise RequestRejected(NOT_EVENTS)
    try:
        raws = _decode_list(body)
    except msgspec.ValidationError:
        raise RequestRejected(NOT_EVENTS) from None
    except RecursionError:
        path = blame(body, limits.max_depth + 1) or []  # + 1: the array holding the events
        index = path[0] if path and isinstance(path[0], int) else 0
        raise EventsInvalid([FieldError(index, _field(path[1:]), _too_deep(limits.max_depth))
                             ]) from None
    except msgspec.DecodeError as exc:
        raise RequestRejected(f"malformed JSON: {reason(exc)}") from None
    if len(raws) > limits.max_events_per_request:
        raise PayloadTooLarge(
            f"a request may hold at most {limits.max_events_per_request} events, got {len(raws)}"
        )
    return raws


def _decode_error(index: int, text: bytes, exc: BaseException, max_depth: int) -> FieldError:
    """An event msgspec could not decode, with the field to blame when it can be found."""
    if isinstance(exc, RecursionError):
        return FieldError(index, _field(blame(text, max_depth + 1)), _too_deep(max_depth))
    if "UTF-8" in str(exc):
        return FieldError(index, _field(blame(text, max_depth + 1)), "is not valid UTF-8")
    return FieldError(index, "", f"malformed JSON: {reason(exc)}")


def _field(path: list[str | int] | None) -> str:
    """The event field a path inside an event starts with (empty when it names none)."""
    return path[0] if path and isinstance(path[0], str) else ""


def _too_deep(limit: int) -> str:
    return f"is nested more than {limit} levels deep"


def _field_error(index: int, text: str) -> FieldError:
    match = _MSGSPEC_AT.match(text)
    message = match.group(1) if match else text
    path = match.group("path") if match else None
    if path is None:
        named = _MSGSPEC_FIELD.search(message)
        if named:
            path = named.group("field")
            if message.startswith("Object missing required field"):
                message = "is required"
            elif message.startswith("Object contains unknown field"):
                message = "is not a known event field"
    if path is None and message.startswith("Expected `object`, got "):
        message = "an event must be a JSON object, got " + message.rsplit(" ", 1)[-1]
    elif message.startswith("Expected"):
        message = "expected" + message[len("Expected"):]
    return FieldError(index, path or "", message)


def _plain(wire: _WireEvent, limits: Limits, now: int) -> NewEvent | None:
    """The event, when it is a valid plain one: no ``payload``/``timestamp`` aliases, no delayed
    delivery, no ``meta`` to resolve, no ``_inngest`` data, nesting already known to be within
    the limit. Anything else is None and goes through ``_check``, which names what is wrong."""
    if (wire.payload is not None or wire.timestamp is not None or wire.deliver_at is not None
            or wire.deliver_after is not None or wire.meta is not None):
        return None
    name = wire.name
    if not name or len(name) > limits.max_name_chars or name[:8].lower().startswith(
            RESERVED_PREFIXES) or "\x00" in name:
        return None
    data = bytes(wire.data)
    if not data or data == b"null":
        data = b"{}"
    elif data[:1] != b"{" or _INTERNAL_MARK in data or not is_utf8(data):
        return None
    ts = wire.ts
    if not ts:
        ts = now
    elif not TS_MIN <= ts < TS_MAX:
        return None
    key = wire.id
    if key is not None and (not key or len(key) > limits.max_id_chars or "\x00" in key
                            or key.startswith(SEAL_MARK)):
        return None
    source = wire.source
    if source is None:
        source = DEFAULT_SOURCE
    elif not source or len(source) > limits.max_name_chars or "\x00" in source:
        return None
    if (wire.v is not None and "\x00" in wire.v) or (
            wire.account_id is not None and "\x00" in wire.account_id):
        return None
    return NewEvent(name=name, data=data, user=wire.user or {}, key=key, ts=ts, v=wire.v,
                    source=source, context=wire.context, account_id=wire.account_id)


def _check(
    index: int, wire: _WireEvent, limits: Limits, now: int, errors: list[FieldError]
) -> NewEvent | None:
    before = len(errors)

    def bad(field: str, message: str) -> None:
        errors.append(FieldError(index, field, message))

    name = wire.name
    if not name:
        bad("name", "must be a non-empty string")
    elif len(name) > limits.max_name_chars:
        bad("name", f"must be at most {limits.max_name_chars} characters, got {len(name)}")
    elif name.lower().startswith(RESERVED_PREFIXES):
        bad("name", f"{name!r} uses a prefix reserved for internal events "
            f"({', '.join(RESERVED_PREFIXES)})")
    for field, text in (("name", name), ("id", wire.id), ("v", wire.v),
                        ("source", wire.source), ("account_id", wire.account_id)):
        if text is not None and "\x00" in text:
            bad(field, NO_NUL)

    data = _data_object(wire.data, bad)
    if wire.payload is not None:
        if data is not None and data != wire.payload:
            bad("payload", "give `data` or `payload` (the same field), not both")
        data = wire.payload
    if data is None:
        data = {}
    elif INTERNAL_DATA_KEY in data:
        data = {k: v for k, v in data.items() if k != INTERNAL_DATA_KEY}

    ts = wire.ts
    if wire.timestamp is not None:
        stamp = _millis(wire.timestamp, "timestamp", bad)
        if ts:
            # One moment, one field: the OpenAPI document can say "not both" but not "both
            # equal" (they may differ in type), so both are refused even when they agree.
            bad("timestamp", "give `ts` or `timestamp` (the same field), not both")
        if not ts:
            ts = stamp
    if not ts:
        ts = now
    elif not TS_MIN <= ts < TS_MAX:
        bad("ts", f"must be milliseconds since the epoch between 1980 and 2100, got {ts}")

    key = wire.id
    if key == "":
        bad("id", "must be a non-empty string when given (omit it, or send null, for none)")
    elif key is not None and len(key) > limits.max_id_chars:
        bad("id", f"must be at most {limits.max_id_chars} characters, got {len(key)}")
    elif key is not None and key.startswith(SEAL_MARK):
        bad("id", NO_SEAL_MARK)

    source = DEFAULT_SOURCE if wire.source is None else wire.source
    if not source or len(source) > limits.max_name_chars:
        bad("source", f"must be a non-empty string of at most {limits.max_name_chars} characters")

    deliver_at: int | None = None
    if wire.deliver_at is not None:
        deliver_at = _millis(wire.deliver_at, "deliver_at", bad)
    elif wire.deliver_after is not None:
        if wire.deliver_after < 0:
            bad("deliver_after", "must be a non-negative number of seconds")
        else:
            deliver_at = now + wire.deliver_after * 1000
    if deliver_at is not None and not TS_MIN <= deliver_at < TS_MAX:
        bad("deliver_at" if wire.deliver_at is not None else "deliver_after",
            "must fall between 1980 and 2100")

    for field, value in (("data", data), ("user", wire.user), ("context", wire.context)):
        if value and not shallow_enough(value, limits.max_depth):
            bad(field, _too_deep(limits.max_depth))

    meta = None
    if wire.meta is not None:
        try:
            meta = resolve_meta(wire.meta)
        except MetaError as exc:
            bad(exc.field, exc.message)

    if len(errors) != before:
        return None
    return NewEvent(
        name=name,
        data=_encode(data),
        user=wire.user or {},
        key=key,
        ts=ts,
        v=wire.v,
        meta=meta,
        source=source,
        context=wire.context,
        account_id=wire.account_id,
        deliver_at=deliver_at,
    )


_INTERNAL_MARK = b'"_inngest"'
# A stored text that starts with U+001F is read as sealed (``sealing.TEXT_MARK``): an id sent so
# would be stored in clear and then fail every read of it (lists included).
SEAL_MARK = TEXT_MARK[0]
NO_SEAL_MARK = "must not start with U+001F (\\u001f): it marks a sealed value"
NO_NUL = "must not contain NUL (\\u0000): it cannot be stored as text"
_encode = msgspec.json.encode
_JSON_TYPES = {dict: "object", list: "array", str: "str", bool: "bool", int: "int",
               float: "float"}


def _data_object(raw: msgspec.Raw, bad: Any) -> dict[str, Any] | None:
    """The ``data`` of an event as an object (None when absent or null); a clear error
    otherwise."""
    text = bytes(raw)
    if not text:
        return None
    try:
        value = msgspec.json.decode(text)
    except RecursionError:
        bad("data", "is nested too deeply")
        return None
    except msgspec.DecodeError as exc:
        bad("data", "is not valid UTF-8" if "UTF-8" in str(exc) else
            f"is not JSON: {reason(exc)}")
        return None
    if value is None or isinstance(value, dict):
        return value
    bad("data", f"expected `object | null`, got `{_JSON_TYPES.get(type(value), 'value')}`")
    return None


def _millis(value: int | str, field: str, bad: Any) -> int | None:
    if isinstance(value, int):
        return value
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        bad(field, f"must be milliseconds since the epoch or an ISO-8601 time, got {value!r}")
        return None
    if moment.tzinfo is None:
        bad(field, f"an ISO-8601 time needs a UTC offset (for example Z), got {value!r}")
        return None
    return int(moment.timestamp() * 1000)
