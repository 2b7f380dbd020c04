"""Ingest: validated events become event-log rows (ids assigned, ``user`` sealed), committed
before their ids are returned."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from functools import partial

import msgspec

from tidings.events.env_settings import ENV_SETTINGS
from tidings.events.model import NewEvent, StoredEvent
from tidings.events.reads import get_event
from tidings.events.retention import Retention, defaults
from tidings.ids import IdSeed, new_ids, now_ms
from tidings.router.handoff import Handoff, Stored
from tidings.router.route import Routed
from tidings.sealing import SEALS, context_aad, key_aad, meta_aad
from tidings.settings import Settings
from tidings.storage.base import EventRow, Sealed, Storage
from tidings.storage.tx import Tx
from tidings.vault import Lookups, UserVault

_encode = msgspec.json.encode
_UNSEALED = itertools.repeat(None)  # the sealed data of events stored as they came


class Ingest:
    """Stores events and hands them to routing (``router/handoff.py``)."""

    def __init__(self, storage: Storage, vault: UserVault, settings: Settings,
                 handoff: Handoff) -> None:
        self._storage = storage
        self._vault = vault
        # The retention of environments that leave it to the mode (``events/retention.py``).
        self.retention_base = replace(defaults(settings.dev),
                                      dedup_window_ms=settings.dedup_window_ms)
        self._handoff = handoff

    async def append(
        self,
        env_id: str,
        events: Sequence[NewEvent],
        seed: IdSeed | None = None,
        *,
        received_at: int | None = None,
        dedup_until: int | None = None,
        traceparent: str | None = None,
    ) -> list[str]:
        """Store events; return their ids (a duplicate's id is the original's).

        With a ``seed`` the ids are the deterministic ones of the ``x-inngest-event-id-seed``
        header, so a retried request maps onto the rows its first attempt stored. With
        ``traceparent`` (tracing on) each event keeps the context it was sent in.
        ``dedup_until`` overrides how long the events' idempotency keys hold (Trigger.dev's
        ids hold for good: ``triggerdev/events.py``).
        """
        if not events:
            return []
        now = now_ms() if received_at is None else received_at
        inline = self._handoff.inline
        if seed is not None:
            ids = [seed.id_at(index) for index in range(1, len(events) + 1)]
        else:
            ids = new_ids(len(events), now)
        seal = self._vault.seal
        lookups: Lookups = {}
        rows = []
        env = await ENV_SETTINGS.of(self._storage, env_id)
        generation = env.generation
        if generation is not None and not SEALS.registered(env_id, generation):
            # Once per key and process: from then on values name it in 9 bytes, not ~40.
            await self._storage.write(
                partial(SEALS.register, env_id=env_id, generation=generation))
        datas = _UNSEALED if generation is None else SEALS.events_data(
            env_id, generation, ids, [event.data for event in events],
            binary=self._storage.binary_data)
        # One id per event; off, ``datas`` repeats None for ever.
        for event_id, event, data in zip(ids, events, datas, strict=False):
            user = subject = None
            if event.user:
                user, subject = await seal(env_id, event_id, event.user, lookups)
            context, meta = event.context, event.meta
            if data is None:
                stored = None
            elif event.key is None and context is None and meta is None:
                stored = Sealed(data=data)
            else:
                assert generation is not None  # sealed data means a generation
                stored = self._sealed(env_id, generation, event_id, event, data)
            rows.append(
                EventRow(
                    id=event_id,
                    env_id=env_id,
                    name=event.name,
                    data=event.data,
                    user=user,
                    user_subject=subject,
                    key=event.key,
                    ts=event.ts,
                    v=event.v,
                    source=event.source,
                    context=None if context is None else _encode(context),
                    account_id=event.account_id,
                    received_at=now,
                    deliver_at=event.deliver_at,
                    delivered_at=now if inline is not None and (
                        event.deliver_at is None or event.deliver_at <= now) else None,
                    meta=None if meta is None else _encode(meta),
                    traceparent=traceparent,
                    sealed=stored,
                )
            )
        until = now if dedup_until is None else dedup_until
        if dedup_until is None and any(row.key is not None for row in rows):
            until += env.retention.effective(self.retention_base).dedup_window_ms
        if inline is None:
            ids = await self._storage.append_events(rows, until)
            # Delayed events are the sweeper's, when they come due: the router only gets the
            # events due now.
            pending = [i for i, event in zip(ids, events, strict=True)
                       if event.deliver_at is None or event.deliver_at <= now]
        else:
            routed: list[Routed] = []

            def route(tx: Tx, fresh: list[EventRow]) -> None:
                # Called once per attempt: an attempt merged with other requests' may be
                # undone and this one run again alone, and what it routed is then void.
                for undone in routed:
                    inline.abandoned(undone)
                routed.clear()
                due = [row for row in fresh if row.delivered_at is not None]
                if due:
                    routed.append(inline.route(tx, due, now))

            try:
                ids = await self._storage.append_events(rows, until, route=route)
            except BaseException:
                for result in routed:
                    inline.abandoned(result)
                raise
            for result in routed:
                inline.routed(result)
            pending = [row.id for row in rows if row.delivered_at is None
                       and (row.deliver_at is None or row.deliver_at <= now)]
        delayed = any(e.deliver_at is not None and e.deliver_at > now for e in events)
        if pending or delayed:
            self._handoff.stored(Stored(due=pending, delayed=delayed))
        return ids

    async def retention(self, env_id: str) -> Retention:
        """The retention settings in effect in ``env_id``, as read at most a few seconds ago."""
        env = await ENV_SETTINGS.of(self._storage, env_id)
        return env.retention.effective(self.retention_base)

    def _sealed(self, env_id: str, generation: int, event_id: str, event: NewEvent,
                data: bytes) -> Sealed:
        """An event as stored sealed (``sealing.py``) when it has more than ``data`` to seal:
        its ``id`` (deduplicated by its blind index), ``context`` and ``meta``."""
        key, dedup, context, meta = event.key, None, None, None
        if key is not None:
            dedup = self._vault.sealer.key_index(env_id, key)
            key = SEALS.seal_text(env_id, generation, key.encode(), key_aad(event_id))
        if event.context is not None:  # Trigger.dev's context: the caller's, like data
            context = SEALS.seal_json(env_id, generation, _encode(event.context),
                                      context_aad(event_id))
        if event.meta is not None:  # session ids: often a person's
            meta = SEALS.seal_json(env_id, generation, _encode(event.meta), meta_aad(event_id))
        return Sealed(data=data, key=key, dedup=dedup, context=context, meta=meta)


class EventLog:
    """Reads of the event log, with ``user`` decrypted."""

    def __init__(self, storage: Storage, vault: UserVault) -> None:
        self._storage = storage
        self._vault = vault

    async def get(self, env_id: str, event_id: str) -> StoredEvent | None:
        row = await self._storage.read(lambda tx: get_event(tx, env_id, event_id))
        return None if row is None else await self.open(row)

    async def open(self, row: EventRow, lookups: Lookups | None = None) -> StoredEvent:
        """The stored event, ``user`` decrypted; ``lookups`` shares the data-key lookups of
        several events (one request's)."""
        user, erased = await self._vault.open_marked(row.env_id, row.id, row.user,
                                                     row.user_subject, lookups)
        return StoredEvent(
            id=row.id,
            env_id=row.env_id,
            name=row.name,
            data=msgspec.json.decode(row.data),
            user=user,
            key=row.key,
            ts=row.ts,
            v=row.v,
            meta=None if row.meta is None else msgspec.json.decode(row.meta),
            source=row.source,
            context=None if row.context is None else msgspec.json.decode(row.context),
            account_id=row.account_id,
            received_at=row.received_at,
            deliver_at=row.deliver_at,
            delivered_at=row.delivered_at,
            cancelled_at=row.cancelled_at,
            user_erased=erased,
        )
