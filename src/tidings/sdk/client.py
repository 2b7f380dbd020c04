"""The client applications use to send events to Tidings.

``send`` speaks the Inngest Event API (``POST /e/{key}``) and returns ids; ``send_event`` and
``send_events`` speak Trigger.dev's model and return the stored records. Network errors and 5xx
answers are retried with backoff under the same ``x-inngest-event-id-seed``, so the server derives
the same ids for every attempt and a retried send never stores twice.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from tidings.errors import ConfigError, SendError
from tidings.ids import now_ms
from tidings.sdk.flow import (
    Batch,
    Cancel,
    Concurrency,
    Debounce,
    Priority,
    RateLimit,
    Singleton,
    Throttle,
    Timeouts,
    flow_config,
)
from tidings.sdk.function import (
    DEFAULT_RETRIES,
    Function,
    Handler,
    Trigger,
    TriggerEvent,
    make_function,
)

T = TypeVar("T")
DEFAULT_BASE_URL = "http://127.0.0.1:8288"
DEV_EVENT_KEY = "dev"


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """An event to send (Inngest's fields). ``meta={"sessions": {"user": "u-1"}}`` groups the
    runs it starts, as Inngest's sessions do."""

    name: str
    data: Mapping[str, Any] = field(default_factory=dict)
    user: Mapping[str, Any] | None = None
    id: str | None = None
    ts: int | None = None
    v: str | None = None
    meta: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, Mapping) else v)
                for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRecord:
    """An event as Tidings stored it (Trigger.dev's record)."""

    id: str
    name: str
    payload: dict[str, Any]
    context: dict[str, Any] | None
    timestamp: datetime
    deliver_at: datetime | None
    delivered_at: datetime | None
    cancelled_at: datetime | None
    source: str
    event_id: str

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> EventRecord:
        return cls(
            id=raw["id"],
            name=raw["name"],
            payload=raw["data"],
            context=raw.get("context"),
            timestamp=datetime.fromtimestamp(raw["ts"] / 1000, tz=UTC),
            deliver_at=_when(raw.get("deliver_at")),
            delivered_at=_when(raw.get("delivered_at")),
            cancelled_at=_when(raw.get("cancelled_at")),
            source=raw["source"],
            event_id=raw.get("event_id") or raw["id"],
        )


def _when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


def _millis(value: datetime | int) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("use a timezone-aware datetime")
        return int(value.timestamp() * 1000)
    return value


def _seed() -> str:
    return f"{now_ms()},{base64.b64encode(os.urandom(10)).decode()}"


class Tidings:
    """A Tidings client.

    ``base_url``, ``event_key`` and ``env`` default to ``TIDINGS_BASE_URL``,
    ``TIDINGS_EVENT_KEY`` and ``TIDINGS_ENV``. ``transport`` replaces the network, for example
    with ``httpx.ASGITransport(app)`` in tests.
    """

    def __init__(
        self,
        app_id: str,
        *,
        base_url: str | None = None,
        event_key: str | None = None,
        env: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_attempts: int = 5,
        timeout: float = 30.0,
    ) -> None:
        self.app_id = app_id
        self.base_url = (base_url or os.environ.get("TIDINGS_BASE_URL")
                         or DEFAULT_BASE_URL).rstrip("/")
        self.event_key = event_key or os.environ.get("TIDINGS_EVENT_KEY") or DEV_EVENT_KEY
        self.env = env or os.environ.get("TIDINGS_ENV") or None
        self._transport = transport
        self._max_attempts = max(1, max_attempts)
        self._timeout = timeout
        self._functions: dict[str, Function] = {}

    # -- functions -----------------------------------------------------------------------------

    @property
    def functions(self) -> list[Function]:
        """The functions registered on this client (``on_failure`` handlers included)."""
        return list(self._functions.values())

    def function(
        self,
        *,
        id: str,
        trigger: Trigger | None = None,
        triggers: Sequence[Trigger] | None = None,
        name: str | None = None,
        retries: int = DEFAULT_RETRIES,
        on_failure: Handler | None = None,
        concurrency: int | Concurrency | list[Concurrency] | None = None,
        throttle: Throttle | None = None,
        rate_limit: RateLimit | None = None,
        idempotency: str | None = None,
        debounce: Debounce | None = None,
        batch_events: Batch | None = None,
        priority: Priority | None = None,
        singleton: Singleton | None = None,
        cancel: list[Cancel] | None = None,
        timeouts: Timeouts | None = None,
    ) -> Callable[[Handler], Function]:
        """Register the decorated ``async def`` or ``def`` handler (taking one ``ctx``).

        ``on_failure`` runs once the function has failed for good (retries exhausted or a
        ``NonRetriableError``), with the ``tidings/function.failed`` event as its ``ctx.event``.
        The other settings are flow control (``tidings.Concurrency`` and the rest); combinations
        Inngest does not support are refused here with a ``ConfigError``.
        """
        chosen = [*([trigger] if trigger is not None else []), *(triggers or [])]
        flow = flow_config(concurrency=concurrency, throttle=throttle, rate_limit=rate_limit,
                           idempotency=idempotency, debounce=debounce,
                           batch_events=batch_events, priority=priority, singleton=singleton,
                           cancel=cancel, timeouts=timeouts)

        def decorate(handler: Handler) -> Function:
            fn = make_function(self.app_id, handler, id=id, triggers=chosen, name=name,
                               retries=retries, config=flow)
            if fn.slug in self._functions:
                raise ConfigError(f"function {fn.slug!r} is registered twice")
            self._functions[fn.slug] = fn
            if on_failure is not None:
                failure = make_function(
                    self.app_id, on_failure, id=f"{id}-failure", name=f"{fn.name} (failure)",
                    retries=0, failure_of=fn.slug,
                    triggers=[TriggerEvent(event="tidings/function.failed",
                                           if_=f"event.data.function_id == '{fn.slug}'")])
                self._functions[failure.slug] = failure
            return fn

        return decorate

    # -- Inngest style -------------------------------------------------------------------------

    async def send(
        self, events: Event | Mapping[str, Any] | Sequence[Event | Mapping[str, Any]]
    ) -> list[str]:
        """Send one event or several; return their ids once Tidings has stored them."""
        batch = [events] if isinstance(events, Event | Mapping) else list(events)
        body = [e.to_json() if isinstance(e, Event) else dict(e) for e in batch]
        reply = await self._post(f"/e/{quote(self.event_key, safe='')}", body, auth=False)
        return [str(i) for i in reply["ids"]]

    def send_sync(
        self, events: Event | Mapping[str, Any] | Sequence[Event | Mapping[str, Any]]
    ) -> list[str]:
        """``send`` for synchronous code (not from inside a running event loop)."""
        return _run(self.send(events))

    # -- Trigger.dev style ---------------------------------------------------------------------

    async def send_event(
        self,
        *,
        name: str,
        payload: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        id: str | None = None,
        timestamp: datetime | int | None = None,
        source: str | None = None,
        user: Mapping[str, Any] | None = None,
        deliver_at: datetime | int | None = None,
        deliver_after: timedelta | int | None = None,
    ) -> EventRecord:
        """Send one event; return the stored record (with ``deliver_at``/``delivered_at``)."""
        event: dict[str, Any] = {"name": name, "payload": dict(payload or {})}
        if id is not None:
            event["id"] = id
        if timestamp is not None:
            event["ts"] = _millis(timestamp)
        if context is not None:
            event["context"] = dict(context)
        if source is not None:
            event["source"] = source
        if user is not None:
            event["user"] = dict(user)
        (record,) = await self.send_events(
            [event], deliver_at=deliver_at, deliver_after=deliver_after
        )
        return record

    async def send_events(
        self,
        events: Sequence[Mapping[str, Any] | Event],
        *,
        deliver_at: datetime | int | None = None,
        deliver_after: timedelta | int | None = None,
    ) -> list[EventRecord]:
        """Send several events with one set of delivery options; return the stored records."""
        body = []
        for raw in events:
            event = raw.to_json() if isinstance(raw, Event) else dict(raw)
            if deliver_at is not None:
                event["deliver_at"] = _millis(deliver_at)
            elif deliver_after is not None:
                seconds = (deliver_after.total_seconds()
                           if isinstance(deliver_after, timedelta) else deliver_after)
                event["deliver_after"] = int(seconds)
            body.append(event)
        reply = await self._post("/v1/events", body, auth=True)
        return [EventRecord.from_json(r) for r in reply["data"]]

    # -- transport -----------------------------------------------------------------------------

    async def _post(self, path: str, body: Any, *, auth: bool) -> dict[str, Any]:
        headers = {"x-inngest-event-id-seed": _seed(), "user-agent": "tidings-py"}
        if auth:
            headers["authorization"] = f"Bearer {self.event_key}"
        if self.env:
            headers["x-inngest-env"] = self.env
        last: str = ""
        async with httpx.AsyncClient(
            base_url=self.base_url, transport=self._transport, timeout=self._timeout
        ) as http:
            for attempt in range(self._max_attempts):
                if attempt:
                    await asyncio.sleep(0.1 * 2 ** (attempt - 1) + random.random() * 0.1)
                try:
                    response = await http.post(path, json=body, headers=headers)
                except httpx.TransportError as exc:
                    last = f"cannot reach Tidings at {self.base_url}: {exc!r}"
                    continue
                reply = _json(response)
                if response.status_code >= 500:
                    last = f"Tidings answered {response.status_code}: {reply.get('error', '')}"
                    continue
                if response.status_code >= 400:
                    raise SendError(
                        str(reply.get("error") or f"HTTP {response.status_code}"),
                        status=response.status_code,
                    )
                return reply
        raise SendError(f"events not sent after {self._max_attempts} attempts: {last}")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {"error": response.text[:200]}
    return value if isinstance(value, dict) else {"error": str(value)[:200]}


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise RuntimeError("send_sync cannot run inside an event loop: use `await client.send(...)`")
