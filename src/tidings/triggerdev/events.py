"""Sending, re-sending and cancelling events the v2 way.

An event's id is unique in its environment for good (v2's rule), not only within the dedup
window of ``POST /e/{key}``: the id a v2 client sends is kept as the event's idempotency key
with no expiry, which is also how ``getEvent(id)`` and ``cancelEvent(id)`` find it.

Sending an id again:
- delivered already: the stored record comes back, nothing starts;
- delayed and not delivered yet: its payload, context, account and delivery time are replaced
  (without a delay it is delivered now) — v2's way to reschedule;
- cancelled: it stays cancelled (v2 revived it; here ``cancelledAt`` says it is not coming).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import msgspec

from tidings.core import Core
from tidings.events.env_settings import ENV_SETTINGS
from tidings.events.model import NewEvent, StoredEvent
from tidings.router.handoff import Stored
from tidings.sealing import SEALS, context_aad, event_aad
from tidings.storage.tx import Tx

# The idempotency of a v2 id does not expire (the largest time both backends hold).
FOREVER = (1 << 62)
_encode = msgspec.json.encode


def lookup(tx: Tx, env_id: str, ident: str, index: str | None = None) -> str | None:
    """The Tidings id of the event ``ident`` names: the id its sender gave it, or ours.
    ``index``: the blind index of ``ident``, which ``event_idempotency`` holds in its place
    when the environment seals its data (``sealing.py``)."""
    row = _by_key(tx, env_id, ident, index)
    if row is not None:
        return str(row[0])
    row = tx.one("trigger_event_state", (env_id, ident))
    return ident if row is not None else None


def _by_key(tx: Tx, env_id: str, ident: str, index: str | None) -> Any:
    """The event an id names; by its blind index first while the environment seals (ids
    stored before it did are still found)."""
    row = None
    if index is not None and ENV_SETTINGS.generation(tx, env_id) is not None:
        row = tx.one("trigger_event_by_key", (env_id, index))
    return row if row is not None else tx.one("trigger_event_by_key", (env_id, ident))


def _revise(tx: Tx, env_id: str, events: Sequence[NewEvent], now: int,
            index: Callable[[str], str]) -> dict[str, str]:
    """Update the undelivered events these ids name; the ids found, each to its event."""
    found: dict[str, str] = {}
    for event in events:
        if event.key is None or event.key in found:
            continue
        row = _by_key(tx, env_id, event.key, index(event.key))
        if row is None:
            continue
        stored = str(row[0])
        found[event.key] = stored
        deliver_at = event.deliver_at if event.deliver_at is not None else now
        data = tx.json(event.data)
        context = None if event.context is None else _encode(event.context)
        generation = ENV_SETTINGS.generation(tx, env_id)
        if generation is not None:
            seal = partial(SEALS.seal_json, env_id, generation, tx=tx)
            data = tx.json(seal(event.data, event_aad(stored)))
            if context is not None:
                context = seal(context, context_aad(stored))
        tx.run("trigger_event_revise",
               (data, None if context is None else tx.json(context), deliver_at,
                event.account_id, env_id, stored))
    return found


async def send(core: Core, env_id: str, events: list[NewEvent], now: int) -> list[StoredEvent]:
    """Store (or revise) the events; their records, in order."""
    keyed = [event for event in events if event.key is not None]
    found: dict[str, str] = {}
    if keyed:
        index = partial(core.vault.sealer.key_index, env_id)
        found = await core.storage.write(lambda tx: _revise(tx, env_id, keyed, now, index))
    fresh = [event for event in events if event.key is None or event.key not in found]
    ids = iter(await core.ingest.append(env_id, fresh, received_at=now, dedup_until=FOREVER)
               if fresh else [])
    if found:
        # A revised event may be due now or sooner than before: the sweeper looks again.
        core.handoff.stored(Stored(due=[], delayed=True))
    records = []
    for event in events:
        event_id = found[event.key] if event.key is not None and event.key in found \
            else next(ids)
        stored = await core.events.get(env_id, event_id)
        if stored is None:
            raise LookupError(f"event {event_id} was stored but cannot be read back")
        records.append(stored)
    return records


async def find(core: Core, env_id: str, ident: str) -> StoredEvent | None:
    index = core.vault.sealer.key_index(env_id, ident)
    event_id = await core.storage.read(lambda tx: lookup(tx, env_id, ident, index))
    return None if event_id is None else await core.events.get(env_id, event_id)


def cancel(tx: Tx, env_id: str, ident: str, now: int, index: str | None = None
           ) -> str | None:
    """Cancel the delivery of the event ``ident`` (blind index ``index``) names (a delivered
    or cancelled one is left as it is); its Tidings id, None when there is no such event."""
    event_id = lookup(tx, env_id, ident, index)
    if event_id is not None:
        tx.run("cancel_event", (now, env_id, event_id))
    return event_id
