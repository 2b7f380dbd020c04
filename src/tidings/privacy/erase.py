"""Erasing a person: their data key destroyed, and with ``events="delete"`` their events gone.

One erasure is a few short transactions, so ingest never waits long behind it:

1. the person's data key is overwritten and deleted (in the keystore, when the keys have a
   database of their own: then backups of the main database never held it). From this commit
   on no process can open their ``user`` objects: every process looks the key up on use
   (``vault.py``). Then the audit record is written, naming the person only by the blind
   index of their ``external_id``.
2. with ``delete``, their events are deleted ``chunk`` at a time (a few statements per chunk,
   not per event; chunks spaced to take about 7 % of the process's CPU,
   ``storage/pacing.py``), each chunk with the runs those events started: a run still active
   is cancelled first, then every run of the chunk keeps its row (status, times, function)
   as a tombstone, its output, error and step outputs (and a Trigger.dev v2 run's tasks'
   params, outputs and errors, its statuses' data) replaced by ``ERASED``, and the lifecycle
   events it emitted when it ended (``tidings/function.finished`` …, which copy its event's
   data and its result) deleted. Only events received before the erasure began are deleted:
   a later event of the same person was sealed under a new key and is theirs to keep.
3. the storage is scrubbed (``Storage.scrub``): SQLite deletes with ``secure_delete`` during
   the erasure and then checkpoints and truncates its WAL, so neither the key nor the deleted
   rows stay in free pages or in the log.

Erasing twice, or a person never seen, is no error: the counts say what there was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import msgspec

from tidings.ids import floor_id, new_id, now_ms
from tidings.runs import store
from tidings.runs.model import TERMINAL
from tidings.sealing import TEXT_MARK, event_aad, is_sealed, open_key, opened
from tidings.storage.base import Storage
from tidings.storage.pacing import PACED, Pacer
from tidings.storage.tx import Tx
from tidings.vault import UserVault, destroy_keys, secure_delete

log = logging.getLogger("tidings.privacy")
EventsMode = Literal["keep", "delete"]
EVENTS_MODES: tuple[EventsMode, ...] = ("keep", "delete")
ERASED = '{"erased":true}'  # what a tombstone run and its steps hold in place of outputs
CANCEL_REASON = "cancelled: the person whose event started it was erased"
CHUNK = 200  # events per transaction


@dataclass(frozen=True, slots=True, kw_only=True)
class Erasure:
    """What an erasure did, as its audit record holds it."""

    id: str
    env_id: str
    actor: str
    events_mode: str
    key_destroyed: bool
    events: int  # the person's events when the erasure began
    events_deleted: int
    runs_cancelled: int
    runs_erased: int
    steps_erased: int
    created_at: int
    finished_at: int | None

    @classmethod
    def from_row(cls, r: tuple[Any, ...]) -> Erasure:
        return cls(id=r[0], env_id=r[1], actor=r[3], events_mode=r[4],
                   key_destroyed=bool(r[5]), events=r[6], events_deleted=r[7],
                   runs_cancelled=r[8], runs_erased=r[9], steps_erased=r[10], created_at=r[11],
                   finished_at=r[12])

    def to_json(self) -> dict[str, Any]:
        return {"erasure_id": self.id, "events_mode": self.events_mode,
                "key_destroyed": self.key_destroyed, "events": self.events,
                "events_deleted": self.events_deleted, "runs_cancelled": self.runs_cancelled,
                "runs_erased": self.runs_erased, "steps_erased": self.steps_erased}


def record(tx: Tx, *, erasure_id: str, env_id: str, subject: bytes, actor: str,
           mode: EventsMode, destroyed: bool, now: int) -> None:
    """The audit record, with the person's events counted."""
    counted = tx.one("privacy_count_events", (env_id, subject))
    events = int(counted[0]) if counted else 0
    tx.run("privacy_insert_erasure", (erasure_id, env_id, subject, actor, mode, int(destroyed),
                                      events, now))


def delete_chunk(tx: Tx, *, erasure_id: str, env_id: str, subject: bytes, before: int,
                 chunk: int, now: int, claim_key: Callable[[str], str] = str) -> int:
    """Step 2, once: up to ``chunk`` of the person's events received up to ``before``, with
    their runs' outputs; how many events went (0: none left). ``claim_key``: an event's
    ``id`` as ``event_idempotency`` holds it when it was sealed (its blind index)."""
    secure_delete(tx, True)
    try:
        events = tx.all("privacy_events_chunk", (env_id, subject, before, chunk))
        if not events:
            return 0
        upto = (env_id, subject, events[-1][0], before)  # the chunk, for one statement each
        cancelled = erased = steps = 0
        for run_id, status, ended_at in tx.all("privacy_runs_of_chunk", upto):
            if status not in TERMINAL and store.cancel_fenced(tx, run_id, CANCEL_REASON, now):
                cancelled += 1
            elif ended_at is not None:
                # What it emitted when it ended copies its event's data and its result.
                for emitted, data in tx.all("privacy_lifecycle_events", (
                        env_id, floor_id(ended_at), floor_id(ended_at + 1), run_id)):
                    if is_sealed(data) and _run_of(data, emitted) != run_id:
                        continue
                    tx.run("privacy_delete_event", (env_id, emitted))
            tx.run("privacy_blank_run_output", (ERASED, run_id))
            tx.run("privacy_blank_run_error", (ERASED, run_id))
            steps += tx.run("privacy_blank_steps", (ERASED, run_id))
            # A Trigger.dev v2 run's tasks are its steps.
            steps += tx.run("privacy_blank_trigger_tasks", (ERASED, ERASED, ERASED, run_id))
            tx.run("privacy_blank_trigger_statuses", (ERASED, run_id))
            tx.run("privacy_mark_run", (run_id, erasure_id))
            erased += 1
        for event_id, event_key in events:
            if event_key is not None:
                if event_key.startswith(TEXT_MARK):
                    event_key = claim_key(open_key(event_key, event_id) or "")
                tx.run("privacy_delete_claim", (env_id, event_key, event_id))
        tx.run("privacy_delete_chunk_skips", upto)
        tx.run("privacy_delete_chunk", upto)
        tx.run("privacy_erasure_progress", (len(events), cancelled, erased, steps, erasure_id))
        return len(events)
    finally:
        secure_delete(tx, False)


def _run_of(sealed: bytes | str, event_id: str) -> Any:
    """The run a sealed lifecycle event names."""
    data = msgspec.json.decode(opened(sealed, event_aad(event_id)))
    return data.get("run_id") if isinstance(data, dict) else None


def finish(tx: Tx, erasure_id: str, now: int) -> Erasure:
    tx.run("privacy_erasure_done", (now, erasure_id))
    row = tx.one("privacy_erasure", (erasure_id,))
    assert row is not None
    return Erasure.from_row(row)


def env_by_name(tx: Tx, name: str) -> str | None:
    row = tx.one("privacy_env_by_name", (name,))
    return None if row is None else str(row[0])


def run_erasure(tx: Tx, run_id: str) -> str | None:
    """The erasure that left this run a tombstone, if one did."""
    row = tx.one("privacy_run_erasure", (run_id,))
    return None if row is None else str(row[0])


async def erase(storage: Storage, vault: UserVault, env_id: str, external_id: str, *,
                events: EventsMode = "keep", actor: str, chunk: int = CHUNK,
                clock: Callable[[], int] = now_ms, pacer: Pacer = PACED) -> Erasure:
    """Erase a person of an environment (see the module's docstring); what was erased.
    ``pacer`` spaces the chunks of events (``storage/pacing.py``)."""
    subject = vault.subject(env_id, external_id)
    began = clock()
    erasure_id = new_id(began)
    vault.forget(env_id, subject)
    destroyed = await vault.keys.write(partial(destroy_keys, keys=[(env_id, subject)]))
    vault.forget(env_id, subject)
    await storage.write(partial(record, erasure_id=erasure_id, env_id=env_id, subject=subject,
                                actor=actor, mode=events, destroyed=destroyed > 0, now=began))
    if events == "delete":
        while await pacer.write(storage, partial(
                delete_chunk, erasure_id=erasure_id, env_id=env_id, subject=subject,
                before=began, chunk=chunk, now=clock(),
                claim_key=partial(vault.sealer.key_index, env_id))):
            pass
    done = await storage.write(partial(finish, erasure_id=erasure_id, now=clock()))
    await storage.scrub()
    if vault.keys is not storage:
        await vault.keys.scrub()
    log.info("erasure %s in environment %s by %s: key destroyed %s, %d events, %d deleted, "
             "%d runs cancelled, %d runs erased", done.id, env_id, actor, done.key_destroyed,
             done.events, done.events_deleted, done.runs_cancelled, done.runs_erased)
    return done
