"""Each environment's settings as this process believes them: its retention (``retention.py``)
and whether it seals its data at rest (``encrypt_data``, ``sealing.py``).

Both are read together (``EnvSettingsCache.read``, the one way an entry is made) and believed
for ``CACHE_SECONDS``: a change made by another process takes effect here within that time, one
made here at once (the writing transaction reads the entry again). Writes in a transaction (a
step's output, a run's end) ask with ``in_tx`` and read in that transaction when their entry is
stale. Ingest asks with ``of`` and never waits once ``load`` has read every environment's at
start: a stale entry is used while it is read again in the background, and an environment with
no settings row has the defaults as loaded.

Held process-wide (``ENV_SETTINGS``) for the reason ``SEALS`` is: outputs are sealed in
transactions far from the process's wiring. Environment ids are unique, so databases opened by
one process (tests) do not share entries; the default of environments without a setting of
their own (``DEFAULT``) is the last loaded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from tidings.events.retention import Stored
from tidings.sealing import SEALED_JSON, SEALS, TEXT_MARK
from tidings.storage.base import Storage

CACHE_SECONDS = 5.0  # how long a process believes the settings it read
MAX_ENTRIES = 10_000  # beyond, the cache starts again empty
DEFAULT = "*"  # the encrypt_data of environments without one of their own (``--encrypt-data``)
log = logging.getLogger("tidings.events")


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvSettings:
    """An environment's settings as read: its own retention settings (the mode's defaults
    fill in what it left unset: ``Stored.effective``), and the key generation its new writes
    seal under (None: it does not seal)."""

    retention: Stored
    generation: int | None


class EnvSettingsCache:
    """Each environment's ``EnvSettings`` as this process last read them."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[EnvSettings, float]] = {}  # env_id -> (settings, until)
        self._default: tuple[EnvSettings, float] | None = None  # as of the last ``load``
        self._refreshing: dict[str, asyncio.Task[EnvSettings]] = {}

    def read(self, tx: Any, env_id: str) -> EnvSettings:
        """Read ``env_id``'s settings in ``tx`` and believe them from now on."""
        row = tx.one("env_settings_of_env", (env_id, env_id))
        assert row is not None  # one row, whatever is stored
        found = EnvSettings(retention=Stored(events_ttl_ms=row[0], runs_ttl_ms=row[1],
                                             dedup_window_ms=row[2]),
                            generation=int(row[4]) if row[3] else None)
        if len(self._known) > MAX_ENTRIES:
            self._known.clear()
        self._known[env_id] = (found, time.monotonic() + CACHE_SECONDS)
        return found

    def in_tx(self, tx: Any, env_id: str) -> EnvSettings:
        """``env_id``'s settings, read in ``tx`` if not read in the last ``CACHE_SECONDS``."""
        known = self._known.get(env_id)
        if known is not None and known[1] > time.monotonic():
            return known[0]
        return self.read(tx, env_id)

    def generation(self, tx: Any, env_id: str) -> int | None:
        """The key generation new writes of ``env_id`` seal under; None when it does not seal."""
        return self.in_tx(tx, env_id).generation

    async def of(self, storage: Storage, env_id: str) -> EnvSettings:
        """``env_id``'s settings without waiting for a read once ``load`` has run: what was
        believed is used, read again in the background when it is stale."""
        known = self._known.get(env_id) or self._default
        if known is None:
            return await storage.read(partial(self.read, env_id=env_id))
        if known[1] <= time.monotonic() and env_id not in self._refreshing:
            task = asyncio.get_running_loop().create_task(
                storage.read(partial(self.read, env_id=env_id)))
            self._refreshing[env_id] = task
            task.add_done_callback(partial(self._refreshed, env_id))
        return known[0]

    def _refreshed(self, env_id: str, task: asyncio.Task[EnvSettings]) -> None:
        self._refreshing.pop(env_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("environment %s: reading its settings failed", env_id,
                      exc_info=task.exception())

    def load(self, tx: Any) -> None:
        """Read every environment's settings, and the default of the others (at start)."""
        until = time.monotonic() + CACHE_SECONDS
        own = {str(r[0]): Stored(events_ttl_ms=r[1], runs_ttl_ms=r[2], dedup_window_ms=r[3])
               for r in tx.all("retention_all")}
        sealing = {str(r[0]): int(r[2]) if r[1] else None for r in tx.all("sealing_all")}
        default = sealing.pop(DEFAULT, None)
        self._default = (EnvSettings(retention=Stored(), generation=default), until)
        for env_id in own.keys() | sealing.keys():
            generation = sealing.get(env_id, default)
            self._known[env_id] = (EnvSettings(retention=own.get(env_id, Stored()),
                                               generation=generation), until)

    def forget(self) -> None:
        """Read every environment's settings again (the default changed)."""
        self._known.clear()
        self._default = None


ENV_SETTINGS = EnvSettingsCache()


def sealed_json(tx: Any, env_id: str, value: str, aad: bytes) -> str:
    """``value`` (JSON text) as a write in ``tx`` stores it: sealed when ``env_id`` seals, and
    also when it does not but ``value`` starts as a sealed one does (a string beginning with
    U+001F "ts1 ", which every read would take for sealed), under generation 0."""
    generation = _sealing(tx, env_id, value, SEALED_JSON)
    if generation is None:
        return value
    return SEALS.seal_json(env_id, generation, value, aad, tx).decode()


def sealed_text(tx: Any, env_id: str, text: str, aad: bytes) -> str:
    """``text`` as a write in ``tx`` stores it: sealed (``seal_text``) when ``env_id`` seals, or
    when ``text`` starts as a sealed text does (``sealed_json``)."""
    generation = _sealing(tx, env_id, text, TEXT_MARK)
    if generation is None:
        return text
    return SEALS.seal_text(env_id, generation, text.encode(), aad, tx)


def _sealing(tx: Any, env_id: str, value: str, mark: str) -> int | None:
    """The generation ``value`` is sealed under when written in ``tx`` (None: stored as it
    is): ``env_id``'s when it seals, else 0 if ``value`` starts with ``mark``."""
    generation = ENV_SETTINGS.generation(tx, env_id)
    if generation is None and value.startswith(mark):
        return 0
    return generation


# -- encrypt_data as stored (``storage/sql/shared/sealing.sql``) --------------------------------


def sealing_setting(tx: Any, env_id: str) -> tuple[bool, int]:
    """Whether ``env_id`` seals, and its key generation (0: it never has); its own setting,
    else the default (``DEFAULT``)."""
    row = tx.one("sealing_of_env", (env_id,))
    return (False, 0) if row is None else (bool(row[0]), int(row[1]))


def switch_sealing(tx: Any, env_id: str, on: bool, now: int) -> int | None:
    """Turn sealing on or off for ``env_id``; the generation new writes now use (None: off)."""
    _, generation = sealing_setting(tx, env_id)
    generation = max(generation, 1)
    tx.run("sealing_save", (env_id, int(on), generation, now))
    _changed(tx, env_id)
    return generation if on else None


def rotate_sealing(tx: Any, env_id: str, now: int) -> int:
    """Give ``env_id`` a new key for new writes (the next generation); the old ones keep
    opening what they sealed. The new generation."""
    on, generation = sealing_setting(tx, env_id)
    generation += 1
    tx.run("sealing_save", (env_id, int(on), generation, now))
    _changed(tx, env_id)
    return generation


def _changed(tx: Any, env_id: str) -> None:
    # This process believes its own change at once.
    if env_id == DEFAULT:
        ENV_SETTINGS.forget()
    else:
        ENV_SETTINGS.read(tx, env_id)
