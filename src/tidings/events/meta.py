"""Inngest's event ``meta``: the sessions that group the runs an event starts.

An SDK sends up to two layers of sessions (``{key: id}``). ``meta.sessions`` is the user's: an
id that is null cuts the inherited session of that key, and a null ``sessions`` cuts them all.
``meta.propagated_sessions`` is stamped by the SDK from the run that sends the event (inngest-js
4 does it by default). Tidings folds them into one layer, as Inngest's server does at ingest
(``EventMeta.ResolveSessions``): every session of the user stays, inherited ones fill the free
places up to ``MAX_SESSIONS`` in key order. Numeric ids become strings.

What is stored, listed and given to functions is ``{"sessions": {key: id}}``, or no meta at
all: no nulls and no second layer, which is the shape the SDKs read back (inngest-js's
``ReceivedEventMeta``). Other keys of ``meta`` are dropped, as Inngest's server drops them, so
an SDK that adds one is not refused.
"""

from __future__ import annotations

from typing import Any

import msgspec

# Inngest's limits (``consts.MaxEventSessions`` and friends); inngest-js caps the sessions it
# propagates at the same five.
MAX_SESSIONS = 5
MAX_KEY_BYTES = 128
MAX_ID_BYTES = 512
# inngest-js 4.24 spells the inherited layer ``propagated_sessions``; earlier releases of it
# and of Inngest's server spelt it ``propagatedSessions``.
PROPAGATED_KEYS = ("propagated_sessions", "propagatedSessions")


class MetaError(ValueError):
    """A ``meta`` that cannot be resolved: which field, and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def resolve_meta(meta: Any) -> dict[str, Any] | None:
    """``meta`` as Tidings keeps it: its sessions resolved into one layer, or None when there
    are none. Raises ``MetaError``."""
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise MetaError("meta", f"expected `object | null`, got `{_kind(meta)}`")
    manual = meta.get("sessions")
    sessions, cut = ({}, set()) if manual is None else _layer(manual, "meta.sessions", cuts=True)
    inherited: dict[str, str] = {}
    for name in PROPAGATED_KEYS:
        if meta.get(name) is not None:
            inherited, _ = _layer(meta[name], f"meta.{name}", cuts=False)
            break
    if "sessions" in meta and manual is None:
        inherited = {}
    for key in sorted(inherited):
        if len(sessions) >= MAX_SESSIONS:
            break
        if key not in sessions and key not in cut:
            sessions[key] = inherited[key]
    # Checked once merged, as Inngest does: an inherited session that is cut or left out does
    # not count.
    if len(sessions) > MAX_SESSIONS:
        raise MetaError("meta.sessions", f"may hold at most {MAX_SESSIONS} sessions, "
                        f"got {len(sessions)}")
    for key, session in sessions.items():
        if not key:
            raise MetaError("meta.sessions", "a session key cannot be empty")
        if len(key.encode()) > MAX_KEY_BYTES:
            raise MetaError("meta.sessions",
                            f"session key {key[:40]!r}… is over {MAX_KEY_BYTES} bytes")
        if not session:
            raise MetaError("meta.sessions", f"session {key!r} has an empty id")
        if len(session.encode()) > MAX_ID_BYTES:
            raise MetaError("meta.sessions",
                            f"the id of session {key!r} is over {MAX_ID_BYTES} bytes")
    return {"sessions": sessions} if sessions else None


def _layer(value: Any, field: str, *, cuts: bool) -> tuple[dict[str, str], set[str]]:
    """One layer's sessions, and the keys it cuts (null ids, where ``cuts`` allows them)."""
    if not isinstance(value, dict):
        raise MetaError(field, f"expected `object | null`, got `{_kind(value)}`")
    sessions: dict[str, str] = {}
    cut: set[str] = set()
    for key, raw in value.items():
        if raw is None and cuts:
            cut.add(key)
            continue
        if isinstance(raw, str):
            session = raw
        elif isinstance(raw, int | float) and not isinstance(raw, bool):
            session = msgspec.json.encode(raw).decode()
        else:
            allowed = "a string, a number or null" if cuts else "a string or a number"
            raise MetaError(field, f"session {key!r} must be {allowed}, got `{_kind(raw)}`")
        sessions[key] = session
    return sessions, cut


_KINDS = {dict: "object", list: "array", str: "str", bool: "bool", int: "int", float: "float",
          type(None): "null"}


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), "value")
