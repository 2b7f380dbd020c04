"""The running core of a Tidings process: storage, keys, vault, ingest and the event log, wired
together once and shared by the HTTP server and the CLI."""

from __future__ import annotations

import os
from dataclasses import dataclass

from tidings.crypto import Keyring, load_dev_keyring
from tidings.errors import ConfigError
from tidings.ingest import EventLog, Ingest
from tidings.keys import Gate
from tidings.settings import Settings
from tidings.storage import Storage, storage_for
from tidings.vault import UserVault


def keyring_for(settings: Settings) -> Keyring:
    text = settings.encryption_key or os.environ.get("TIDINGS_ENCRYPTION_KEY")
    if text:
        return Keyring.parse(text)
    if settings.dev:
        return load_dev_keyring(settings.data_dir)
    raise ConfigError(
        "TIDINGS_ENCRYPTION_KEY is required outside dev: create one with "
        "`tidings keys new-encryption-key`"
    )


@dataclass(slots=True)
class Core:
    settings: Settings
    storage: Storage
    vault: UserVault
    gate: Gate
    ingest: Ingest
    events: EventLog

    @classmethod
    async def start(cls, settings: Settings, storage: Storage | None = None) -> Core:
        keyring = keyring_for(settings)
        store = storage or storage_for(settings.database_url)
        await store.open()
        vault = UserVault(store, keyring)
        try:
            await vault.open()
        except BaseException:
            await store.close()
            raise
        return cls(
            settings=settings,
            storage=store,
            vault=vault,
            gate=Gate(store, dev=settings.dev),
            ingest=Ingest(store, vault, settings),
            events=EventLog(store, vault),
        )

    async def close(self) -> None:
        await self.storage.close()
