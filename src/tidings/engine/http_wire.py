"""The Inngest call protocol as data: the body of a call to an SDK app, and reading the ops it
answers with, as inngest-py 0.5 and inngest-js 4 really speak them.

The body is JCS-canonical JSON (RFC 8785): the SDKs re-canonicalise it before checking its
signature. Memoized steps keep the shapes the SDKs expect: ``{"data": x}`` or ``{"error": e}``
for runs and invokes, the whole event for a wait, ``null`` for a sleep.

A streamed answer (``201``) is signed differently by each SDK: inngest-js signs the answer inside
the envelope and puts the signature in the envelope's headers; inngest-py 0.5 signs the body its
``201`` had when the stream began — nothing, ``null`` — so only the transport keeps what it
streams intact (``streamed_distrust``).
"""

from __future__ import annotations

import email.utils
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec

from tidings.calls.outcomes import Invoke, WaitForEvent
from tidings.canonical import canonical
from tidings.durations import to_ms
from tidings.errors import ConfigError
from tidings.events.meta import MetaError, resolve_meta
from tidings.runs.model import StepRow
from tidings.signing import verify

MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_PAUSE_MS = 366 * 24 * 3600 * 1000
EXECUTION_VERSION = 2
SIGNATURE = "x-inngest-signature"
# What inngest-py 0.5 signs when it streams: its 201's body before the stream is written.
PY_STREAM_SIGNED = b"null"


class ProtocolError(ValueError):
    """The app's answer is not the Inngest protocol."""


def sdk_name(name: str) -> str:
    """SDKs know the internal events by their Inngest names."""
    return "inngest/" + name.removeprefix("tidings/") if name.startswith("tidings/") else name


def sdk_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """An event as an SDK reads it (``ts`` an integer, ``data`` an object, ``meta`` only when
    there are sessions: inngest-js reads ``ctx.sessions`` from it, inngest-py 0.5 ignores it)."""
    out: dict[str, Any] = {"data": event.get("data") or {}, "id": str(event.get("id") or ""),
                           "name": sdk_name(str(event.get("name", ""))),
                           "ts": int(event.get("ts") or 0), "user": event.get("user") or {}}
    if event.get("v") is not None:
        out["v"] = event["v"]
    if event.get("meta") is not None:
        out["meta"] = event["meta"]
    return out


@dataclass(slots=True, kw_only=True)
class CallState:
    """What one call of a run knows, and what it learns while its steps finish."""

    run_id: str
    attempt: int
    max_attempts: int
    event: dict[str, Any]
    events: list[dict[str, Any]]
    steps: dict[str, Any] = field(default_factory=dict)
    stack: list[str] = field(default_factory=list)
    used_api: bool = False  # the last body made tells the SDK to read the run from the API

    @classmethod
    def of(cls, *, run_id: str, attempt: int, retries: int,
           event: Mapping[str, Any], events: Sequence[Mapping[str, Any]],
           recorded: Sequence[StepRow]) -> CallState:
        state = cls(run_id=run_id, attempt=attempt, max_attempts=retries + 1,
                    event=sdk_event(event),
                    events=[sdk_event(e) for e in events])
        for row in recorded:
            state.remember(row.step, row.output)
        return state

    def remember(self, step: str, memo: Any) -> None:
        if step not in self.steps:
            self.stack.append(step)
        self.steps[step] = memo

    def body(self, step_id: str, attempt: int | None = None, *, plan: bool = False) -> bytes:
        """The request body for a call aimed at ``step_id`` (``step``: from the top); ``plan``
        sets ``disable_immediate_execution``. Over 4 MiB, the SDK is told to fetch the events
        and steps itself (``use_api``)."""
        body = self._body(step_id, attempt, plan, use_api=False)
        self.used_api = len(body) > MAX_REQUEST_BYTES
        if self.used_api:
            body = self._body(step_id, attempt, plan, use_api=True)
        return body

    def _body(self, step_id: str, attempt: int | None, plan: bool, *, use_api: bool) -> bytes:
        # ``ctx.fn_id`` is left out on purpose: given it, inngest-js 4 switches to
        # "checkpointing" and reports steps through an API Tidings does not serve.
        ctx = {"attempt": self.attempt if attempt is None else attempt,
               "disable_immediate_execution": plan,
               "max_attempts": self.max_attempts, "run_id": self.run_id,
               "stack": {"current": len(self.stack), "stack": list(self.stack)},
               "step_id": step_id, "use_api": use_api}
        payload = {"ctx": ctx, "event": self.event,
                   "events": [] if use_api else self.events,
                   "steps": {} if use_api else self.steps,
                   "use_api": use_api, "version": EXECUTION_VERSION}
        return canonical(payload)


def memos(steps: Sequence[StepRow]) -> dict[str, Any]:
    """The ``steps`` object of a call (and of ``GET /v0/runs/{id}/actions``)."""
    return {row.step: row.output for row in steps if row.status in ("completed", "failed")}


# -- answers ---------------------------------------------------------------------------------

def decode(body: bytes, what: str) -> Any:
    """JSON from an app, or a ``ProtocolError`` naming ``what`` — nested too deep to read
    included (a decoder's ``RecursionError`` would otherwise escape as an engine failure and
    the run would be retried forever)."""
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"{what} is not JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError(f"{what} is nested too deep to read") from None


def parse_ops(body: bytes) -> list[dict[str, Any]]:
    """The ops of a 206: an array, or one object (older SDKs)."""
    value = decode(body, "the 206 body") if body.strip() else []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(op, dict) for op in value):
        raise ProtocolError("the 206 body is not a list of ops")
    for op in value:
        if not isinstance(op.get("id"), str) or not op["id"]:
            raise ProtocolError(f"an op has no id: {str(op)[:200]}")
    return value


def unwrap_stream(body: bytes) -> tuple[int, dict[str, str], bytes]:
    """A streamed answer (201: keep-alive spaces, then ``{"status", "headers", "body"}``)."""
    envelope = decode(body.strip(), "the streamed answer")
    try:
        status = int(envelope["status"])
        headers = {str(k).lower(): str(v) for k, v in (envelope.get("headers") or {}).items()}
        inner = envelope.get("body")
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ProtocolError("the streamed answer is not a status, headers and body") from None
    raw = inner.encode() if isinstance(inner, str) else msgspec.json.encode(inner)
    return status, headers, raw


def private_transport(url: str) -> bool:
    """True when nothing on the way to ``url`` can rewrite an answer: TLS, or loopback."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    host = (parts.hostname or "").rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def streamed_distrust(url: str, outer: Mapping[str, str], inner: Mapping[str, str], body: bytes,
                      keys: Sequence[str], *, answered: int) -> str | None:
    """Why a streamed answer cannot be believed, or None when it can.

    With a signature in the envelope (inngest-js) the answer itself must be signed. Without one
    (inngest-py 0.5) the ``201``'s own signature, over ``null`` and made when the stream began
    (``answered``, in seconds), proves only that the app holds the key: what it streamed is
    believed where the transport guarantees it arrived as sent, and nowhere else.
    """
    signature = inner.get(SIGNATURE)
    if signature is not None:
        if verify(body, signature, keys):
            return None
        return ("the answer streamed by the app is not signed with this environment's signing "
                "key; it was not believed")
    if not verify(PY_STREAM_SIGNED, outer.get(SIGNATURE), keys, now=answered):
        return ("the app's streamed answer is not signed with this environment's signing key; "
                "it was not believed")
    if not private_transport(url):
        return (f"the app streams its answers (INNGEST_STREAMING) and its SDK does not sign "
                f"what it streams, so over plain HTTP to {urlsplit(url).hostname} they cannot "
                "be believed: serve the app over HTTPS or turn streaming off")
    return None


def display_name(op: Mapping[str, Any]) -> str:
    userland = op.get("userland")
    for candidate in (op.get("displayName"),
                      userland.get("id") if isinstance(userland, dict) else None,
                      op.get("name"), op["id"]):
        if isinstance(candidate, str) and candidate:
            return candidate
    return str(op["id"])


# ``opts.type`` of the step tools inngest-js reports as plain steps (inngest-py sends none).
_TYPED_KINDS = {"step.sendEvent": "send", "step.ai.wrap": "ai", "step.ai.infer": "ai"}


def step_kind(op: Mapping[str, Any]) -> str:
    """What a step the SDK ran is, for the runs API: ``send``, ``ai`` or ``run``."""
    if op.get("op") == "AIGateway":
        return "ai"
    kind = _opts(op).get("type")
    return _TYPED_KINDS.get(kind, "run") if isinstance(kind, str) else "run"


def _opts(op: Mapping[str, Any]) -> dict[str, Any]:
    opts = op.get("opts")
    return opts if isinstance(opts, dict) else {}


def _duration(value: Any, what: str) -> int:
    try:
        return min(to_ms(value if isinstance(value, int) else str(value), what), MAX_PAUSE_MS)
    except ConfigError as exc:
        raise ProtocolError(exc.message) from None


def _moment(text: str) -> int | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def sleep_until(op: Mapping[str, Any], now: int) -> int:
    """When a ``Sleep`` ends: ``opts.duration`` or else ``name`` (inngest-py puts the wake-up
    time there, inngest-js a duration such as ``"30s"``)."""
    raw = _opts(op).get("duration") or op.get("name")
    text = str(raw or "")
    if len(text) >= 10:
        moment = _moment(text)
        if moment is not None:
            return min(moment, now + MAX_PAUSE_MS)
    return now + _duration(text, f"sleep {display_name(op)!r}")


def wait_of(op: Mapping[str, Any], now: int) -> WaitForEvent:
    """A ``WaitForEvent``: the event in ``opts.event`` or else ``name``; no timeout, no wait."""
    opts = _opts(op)
    event = opts.get("event") or op.get("name")
    if not isinstance(event, str) or not event:
        raise ProtocolError("a WaitForEvent op names no event")
    timeout = opts.get("timeout")
    until = now + _duration(timeout, "wait timeout") if timeout else now
    condition = opts.get("if")
    return WaitForEvent(op["id"], display_name(op), event,
                        condition if isinstance(condition, str) and condition else None, until)


def invoke_of(op: Mapping[str, Any], now: int) -> Invoke:
    opts = _opts(op)
    function = opts.get("function_id")
    if not isinstance(function, str) or not function:
        raise ProtocolError("an InvokeFunction op names no function_id")
    payload = opts.get("payload")
    payload = payload if isinstance(payload, dict) else {}
    data = payload.get("data")
    user = payload.get("user")
    timeout = opts.get("timeout")
    until = now + (_duration(timeout, "invoke timeout") if timeout else MAX_PAUSE_MS)
    # inngest-js stamps the run's sessions on the payload (``meta.propagated_sessions``): the
    # invoked run joins them, as an event sent from the run would.
    try:
        meta = resolve_meta(payload.get("meta"))
    except MetaError as exc:
        raise ProtocolError(f"the invocation's {exc}") from None
    return Invoke(op["id"], display_name(op), function, data if isinstance(data, dict) else {},
                  user if isinstance(user, dict) else None, until, meta)


def retry_after(value: str | None, now: int) -> int | None:
    """``Retry-After`` as a time: seconds (at most 7 digits), or a date (ISO-8601 or
    RFC 1123)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit() and len(text) <= 7:
        return now + int(text) * 1000
    moment = _moment(text)
    if moment is not None:
        return moment
    try:
        return int(email.utils.parsedate_to_datetime(text).timestamp() * 1000)
    except (TypeError, ValueError):
        return None
