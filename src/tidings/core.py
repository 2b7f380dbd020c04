"""The running core of a Tidings process: storage, keys, vault, ingest and the event log, wired
together once and shared by the HTTP server and the CLI."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from tidings.crypto import Keyring, load_dev_keyring
from tidings.errors import ConfigError
from tidings.events.env_settings import DEFAULT, ENV_SETTINGS, switch_sealing
from tidings.functions.registry import Registry
from tidings.ids import now_ms
from tidings.ingest import EventLog, Ingest
from tidings.keys import Gate
from tidings.router.handoff import Handoff
from tidings.runs.local import Wakers
from tidings.sealing import SEALS
from tidings.settings import Settings
from tidings.storage import Storage, storage_for
from tidings.supervision import Supervisor
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
    # Runs the process's long-lived loops; what ``/health`` reports (``supervision.py``).
    supervisor: Supervisor = field(default_factory=Supervisor)
    # Where ingest hands stored events: the router of a runtime of this process, if any.
    handoff: Handoff = field(default_factory=Handoff)
    # The live functions, read from storage; one per process, shared by the runtime and the
    # APIs.
    registry: Registry = field(default_factory=Registry)
    # The executors running in this process, to wake when runs are queued here.
    wakers: Wakers = field(default_factory=Wakers)

    @classmethod
    async def start(cls, settings: Settings, storage: Storage | None = None, *,
                    on_dead: Callable[[str], None] | None = None) -> Core:
        """Open the storage and wire the rest; ``on_dead(why)`` is called if a loop of the
        process dies for good (the CLI then stops the process)."""
        keyring = keyring_for(settings)
        store = storage or storage_for(settings.database_url)
        await store.open()
        try:
            vault = await open_vault(settings, store, keyring)
            if settings.encrypt_data is not None:
                on = settings.encrypt_data
                await store.write(lambda tx: switch_sealing(tx, DEFAULT, on, now_ms()))
            await store.read(ENV_SETTINGS.load)
        except BaseException:
            await store.close()
            raise
        handoff = Handoff()
        return cls(
            settings=settings,
            storage=store,
            vault=vault,
            gate=Gate(store, dev=settings.dev),
            ingest=Ingest(store, vault, settings, handoff),
            handoff=handoff,
            events=EventLog(store, vault),
            supervisor=Supervisor(on_dead=on_dead),
        )

    async def close(self) -> None:
        await self.vault.close()
        await self.storage.close()


async def open_vault(settings: Settings, store: Storage, keyring: Keyring) -> UserVault:
    """The vault over ``store``, its data keys in the keystore the settings name (opened here,
    closed by ``UserVault.close``) or in ``store`` itself. The process opens sealed data
    (``sealing.py``) with ``keyring`` from now on, and the key references ``store`` knows."""
    SEALS.use(keyring)
    SEALS.read_with(store.read_now)
    await store.read(SEALS.load)
    keys = store
    if settings.keystore_url and settings.keystore_url != settings.database_url:
        keys = storage_for(settings.keystore_url)
        await keys.open()
    vault = UserVault(store, keyring, keys=keys)
    try:
        await vault.open()
    except BaseException:
        await vault.close()
        raise
    return vault
