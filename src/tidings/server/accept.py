"""Accepting events, the one sequence behind ``POST /e/{key}`` (raw ASGI) and
``POST /v1/events`` (Starlette): the key and branch pick the environment, then the body is read,
parsed and stored, and the ids come back only once the events are committed. The dashboard's
send form, whose viewer has an environment already, goes through ``store_events``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from time import time_ns
from typing import Any

from tidings.core import Core
from tidings.errors import EventsInvalid, RequestRejected
from tidings.events.parse import parse_events
from tidings.ids import IdSeed, now_ms
from tidings.observe import tracing
from tidings.server.shedding import Ticket
from tidings.storage.base import Environment


async def accept_events(core: Core, *, key: str, branch: str | None,
                        read_body: Callable[[int], Awaitable[bytes]], seed: str | None,
                        ticket: Ticket | None, request: tracing.Request | None = None
                        ) -> tuple[Environment, list[str]]:
    """The environment and the ids of the stored events. ``key`` is the event key (any in
    dev), ``read_body(limit)`` reads the request's body, ``seed`` is the
    ``x-inngest-event-id-seed`` header and ``ticket`` the request's admission ticket, which
    counts the events once parsed; ``request`` its SERVER span when the caller holds it
    (``tracing.ingest_began``'s) rather than the context."""
    env = await core.gate.env_for(key, "event", branch)
    body = await read_body(core.settings.limits.max_body_bytes)
    return env, await store_events(core, env, body, seed=seed, ticket=ticket, request=request)


async def store_events(core: Core, env: Environment, body: bytes, *, seed: str | None = None,
                       ticket: Ticket | None = None,
                       request: tracing.Request | None = None) -> list[str]:
    """Parse and store the events of a body for ``env`` (picked already); their ids."""
    limits = core.settings.limits
    now = now_ms()
    events = parse_events(body, limits, now)
    if ticket is not None:
        ticket.parsed(len(events))  # admission control counts them from here on
    if request is not None and request.count is None:
        # The Event API's request (``tracing.ingest_began``), its PRODUCER span's id and
        # context drawn already: what ``tracing.producing`` and ``produced`` would note for
        # it, noted here, two calls less per request on the hot path.
        request.count = len(events)
        request.produced_at = time_ns()
        try:
            return await core.ingest.append(env.id, events, IdSeed.parse(seed),
                                            received_at=now, traceparent=request.traceparent)
        finally:
            request.produced_end = time_ns()
    span = tracing.producing(len(events), request=request)
    if span is None:
        return await core.ingest.append(env.id, events, IdSeed.parse(seed), received_at=now)
    try:
        return await core.ingest.append(env.id, events, IdSeed.parse(seed), received_at=now,
                                        traceparent=span.traceparent)
    finally:
        tracing.produced(span)


def rejection(exc: RequestRejected) -> dict[str, Any]:
    """The Event API's answer to a refused request (``errors`` lists each invalid field)."""
    body: dict[str, Any] = {"ids": [], "status": exc.status, "error": exc.message}
    if isinstance(exc, EventsInvalid):
        body["errors"] = [
            {"index": e.index, "field": e.field, "message": e.message} for e in exc.errors
        ]
    return body
