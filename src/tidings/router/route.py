"""Routing: a committed, due event starts the functions it triggers, resumes the runs waiting for
it, and is marked delivered, all in one transaction.

An event is routed once: ``deliver_batch`` only marks it for the first router to reach it, so
the in-process router and the sweeper (delayed events, crash leftovers, other processes) never
both route it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import msgspec

from tidings.flow import at_claim, at_route
from tidings.flow import cancel as flow_cancel
from tidings.functions.expressions import matches
from tidings.functions.filters import filter_spec, spec_accepts
from tidings.functions.registry import Registry, aliases
from tidings.observe import metrics
from tidings.runs import journal, store
from tidings.runs.model import QueuedRun, Run
from tidings.sealing import PAUSE_AAD, context_aad, event_aad, meta_aad, open_key, opened
from tidings.storage.base import EventRow
from tidings.storage.tx import Tx


class Routable(NamedTuple):
    """An event as routing reads it: ``event`` is what functions see (its ``data`` and
    ``context`` may still be JSON to decode, see ``_Deferred``)."""

    event_id: str
    env_id: str
    event: dict[str, Any]
    source: str
    context: Any


class Adopted(NamedTuple):
    """A run routing handed straight to a local executor (already leased to it), with the
    event that started it."""

    run: Run
    row: EventRow


@dataclass(slots=True)
class Routed:
    """What a routing transaction did: runs created (by queue), runs woken, and runs handed
    straight to a local executor."""

    runs: list[QueuedRun] = field(default_factory=list)
    woken: list[str] = field(default_factory=list)
    delivered: int = 0
    adopted: list[Adopted] = field(default_factory=list)


class Adopter(Protocol):
    """A local executor that takes new runs without claiming them (``route_new``)."""

    @property
    def owner(self) -> str: ...

    @property
    def lease_ms(self) -> int: ...

    def reserve(self) -> bool: ...

    def unreserve(self, count: int) -> None: ...


def routable(row: Sequence[Any]) -> Routable:
    """The event of an ``event_for_routing`` (or ``deliver_batch``) row."""
    event_id, env_id, name, data, key, ts, v, source, context, meta = row[:10]
    event: dict[str, Any] = {"id": open_key(key, event_id) or event_id, "name": name,
                             "data": msgspec.json.decode(opened(data, event_aad(event_id))),
                             "ts": ts}
    if v is not None:
        event["v"] = v
    if meta:
        event["meta"] = msgspec.json.decode(opened(meta, meta_aad(event_id)))
    return Routable(event_id, env_id, event, source,
                    msgspec.json.decode(opened(context, context_aad(event_id))) if context
                    else None)


def route(tx: Tx, registry: Registry, event_ids: Sequence[str], now: int) -> Routed:
    """Route stored events that are due and not delivered yet (the sweeper's path)."""
    registry.refresh(tx)
    rows = sorted(tx.all("deliver_batch", (now, tx.ids(event_ids), now)))
    routed = Routed(delivered=len(rows))
    _route(tx, registry, (routable(row) for row in rows), now, routed)
    return routed


def route_new(tx: Tx, registry: Registry, rows: Sequence[EventRow], now: int,
              adopters: Mapping[str, Adopter] | None = None) -> Routed:
    """Route events in the transaction that stores them (stored with ``delivered_at`` set).

    A new run whose queue has a local executor with room is inserted already leased to it and
    handed over after the commit, with its event: no claim, no re-reading.
    """
    # Appends merged into one group commit share these reads (``Tx.shared``).
    shared = {} if tx.shared is None else tx.shared
    if "waits" not in shared:
        registry.refresh(tx)
        shared["waits"] = {}
    waits: dict[tuple[str, str], list[tuple[Any, ...]]] = shared["waits"]
    routed = Routed(delivered=len(rows))
    wanted: dict[tuple[str, str], bool] = {}
    chosen = []
    for row in rows:
        key = (row.env_id, row.name)
        care = wanted.get(key)
        if care is None:
            care = wanted[key] = (registry.listens(*key) or registry.cancels(*key)
                                  or _waits_for(tx, waits, *key))
        if care:
            chosen.append(row)
    if chosen:
        by_id = {row.id: row for row in chosen} if adopters else None
        _route(tx, registry, _lazy(_decoded(chosen)), now, routed, adopters, by_id, waits)
    return routed


def _decoded(rows: Sequence[EventRow]) -> list[tuple[Any, ...]]:
    decoded = []
    for row in rows:
        event: dict[str, Any] = {"id": row.key or row.id, "name": row.name, "ts": row.ts}
        if row.v is not None:
            event["v"] = row.v
        if row.meta is not None:
            event["meta"] = msgspec.json.decode(row.meta)
        decoded.append((row.id, row.env_id, event, row.source, row.context, row.data))
    return decoded


def _lazy(rows: list[tuple[Any, ...]]) -> Iterator[Routable]:
    for event_id, env_id, event, source, context, data in rows:
        event["data"] = _Deferred(data)
        yield Routable(event_id, env_id, event, source, _Deferred(context) if context else None)


class _Deferred:
    """JSON decoded on first use: most events match no trigger and no wait."""

    __slots__ = ("raw", "value")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.value: Any = _UNSET

    def get(self) -> Any:
        if self.value is _UNSET:
            self.value = msgspec.json.decode(self.raw)
        return self.value


_UNSET = object()


def _resolved(value: Any) -> Any:
    return value.get() if isinstance(value, _Deferred) else value


def _route(tx: Tx, registry: Registry,
           rows: Iterable[Routable], now: int,
           routed: Routed, adopters: Mapping[str, Adopter] | None = None,
           stored: Mapping[str, EventRow] | None = None,
           waits: dict[tuple[str, str], list[tuple[Any, ...]]] | None = None) -> None:
    new_runs: list[tuple[Any, ...]] = []
    leased: list[tuple[Any, ...]] = []
    slots: list[tuple[str, str, int]] = []  # concurrency slots of runs handed over
    taken: dict[str, int] = {}
    waits = {} if waits is None else waits
    for event_id, env_id, event, source, context in rows:
        cancels = registry.cancels(env_id, event["name"])
        if not registry.listens(env_id, event["name"]) and not cancels and not _waits_for(
                tx, waits, env_id, event["name"]):
            continue
        event["data"] = _resolved(event["data"])
        context = _resolved(context)
        if cancels:
            flow_cancel.on_event(tx, registry, env_id, event_id, event, now)
        for fn in registry.match(env_id, event, source, context):
            if fn.flow is not None and fn.flow.at_route:
                at_route.start(tx, registry, fn, event_id, event, now, routed)
                continue
            ts = int(event["ts"])
            due = ts if ts > now else now
            params = store.run_params(fn=fn, event_id=event_id, due_at=due, now=now)
            metrics.scheduled(fn.app_id, fn.slug, event["name"])
            adopter = adopters.get(fn.queue) if adopters and due <= now else None
            if adopter is not None and stored is not None and adopter.reserve():
                if fn.flow is not None:
                    keys = at_claim.adopt(tx, fn, event, now, taken)
                    if keys is None:
                        adopter.unreserve(1)
                        new_runs.append(params)
                        routed.runs.append(QueuedRun(fn.queue, params[0]))
                        continue
                    slots.extend((key, params[0], 1) for key in keys)
                leased.append((*params, adopter.owner, now + adopter.lease_ms, now))
                routed.adopted.append(Adopted(store.adopted_run(params, adopter.owner,
                                                                now + adopter.lease_ms, now),
                                              stored[event_id]))
                continue
            new_runs.append(params)
            routed.runs.append(QueuedRun(fn.queue, params[0]))
        if _waits_for(tx, waits, env_id, event["name"]):
            for name in aliases(event["name"]):
                if waits[(env_id, name)]:
                    _resume_waiters(tx, env_id, waits[(env_id, name)], event_id, event, source,
                                    context, now, routed)
    if new_runs:
        tx.many("insert_run", new_runs)
    if leased:
        tx.many("insert_run_leased", leased)
    if slots:
        tx.many("flow_slot_take", slots)
    for queue in {queue for queue, _ in routed.runs}:
        store.notify(tx, queue)
    if routed.woken:
        store.notify(tx, store.ALL_QUEUES)


def _waits_for(tx: Tx, waits: dict[tuple[str, str], list[tuple[Any, ...]]], env_id: str,
               name: str) -> bool:
    """Whether runs wait for events of this name (read once per name and transaction)."""
    found = False
    for alias in aliases(name):
        key = (env_id, alias)
        if key not in waits:
            tx.lock_shared(f"{env_id}:{alias}")
            waits[key] = tx.all("waits_for_event", key)
        found = found or bool(waits[key])
    return found


def _resume_waiters(tx: Tx, env_id: str, waits: list[tuple[Any, ...]], event_id: str,
                    event: dict[str, Any],
                    source: str | None, context: Any, now: int, routed: Routed) -> None:
    for entry in list(waits):
        run_id, step, step_name, condition, trigger, since_id = entry
        if since_id and event_id < since_id:
            continue
        memo = _waited_for(tx, condition, trigger, event_id, event, source, context,
                           f"run {run_id} (wait {step_name})")
        if memo is not None:
            waits.remove(entry)
            if journal.resolve_pause(tx, run_id, step, step_name, memo, now, kind="wait",
                                     env_id=env_id):
                routed.woken.append(run_id)


def _waited_for(tx: Tx, condition: str | None, trigger: Any, event_id: str,
                event: dict[str, Any], source: str | None, context: Any,
                who: str) -> dict[str, Any] | None:
    """What a wait with ``condition`` is given when this event ends it (None: it does not): the
    event, or for an event-filter condition the event with its source, context and account."""
    spec = filter_spec(condition)
    if spec is None:
        if isinstance(trigger, (str, bytes)):
            trigger = msgspec.json.decode(opened(trigger, PAUSE_AAD))
        variables = {"event": trigger or {}, "async": event}
        return event if matches(condition, variables, who) else None
    if not spec_accepts(spec, event.get("data"), source, context):
        return None
    row = tx.one("trigger_event_account", (event_id,))
    account = row[0] if row else None
    if "account_id" in spec and spec["account_id"] != account:
        return None
    return {**event, "source": source, "context": context, "account_id": account}


def look_back(tx: Tx, env_id: str, run_id: str, step: str, step_name: str, event_name: str,
              condition: str | None, trigger: dict[str, Any], since_id: str, now: int) -> bool:
    """A wait just recorded: resolve it at once with a matching event that arrived while it was
    being set up (after ``since_id``). True when it was resolved."""
    for name in aliases(event_name):
        tx.lock(f"{env_id}:{name}")
    for name in aliases(event_name):
        for (candidate,) in tx.all("events_since", (env_id, name, since_id)):
            row = tx.one("event_for_routing", (candidate,))
            if row is None:
                continue
            found = routable(row)
            memo = _waited_for(tx, condition, trigger, candidate, found.event, found.source,
                               found.context, f"run {run_id} (wait {step_name})")
            if memo is not None:
                return journal.resolve_pause(tx, run_id, step, step_name, memo, now,
                                           kind="wait", env_id=env_id)
    return False
