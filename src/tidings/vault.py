"""The user vault: seals ``event.user`` on the way in, opens it on the way out, erases it per user.

It owns the blind-index key and a memo of unwrapped data keys; the ciphers are in ``crypto``.

A data key is looked up in the database on every use (a check on use), sealing and opening
alike: the memo only saves unwrapping it again, and is believed only while the database still
holds the same wrapped key. So once an erasure has committed, no process, however many share the
database, opens or seals with the destroyed key, without any message having to reach them. The
lookups are shared within one request (``Lookups``), so a batch of events of one person costs
one.

The data keys may live in a database of their own, the keystore (``Settings.keystore_url``):
then no backup of the main database holds a data key, and erasing a person leaves backups
taken before the erasure unreadable for that person (the key is in none of them, and gone from
the keystore). Keys found in the main database when a keystore is first used are moved there.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from functools import partial
from typing import Any

from tidings.crypto import (
    INDEX_KEY_AAD,
    INDEX_KEY_NAME,
    KEY_BYTES,
    Keyring,
    UserSealer,
    data_key_aad,
)
from tidings.ids import now_ms
from tidings.keys import get_secret, put_secret
from tidings.storage.base import Storage, WrappedKey
from tidings.storage.tx import Tx

log = logging.getLogger("tidings.vault")
MEMO_SIZE = 10_000  # unwrapped data keys kept in memory, at most
Lookups = dict[tuple[str, bytes], "bytes | None"]
"""The wrapped data keys already looked up for one request, by ``(env_id, subject)``."""


class UserVault:
    def __init__(self, storage: Storage, keyring: Keyring, *, keys: Storage | None = None
                 ) -> None:
        self._storage = storage
        self.keys = keys or storage  # where the data keys are (the keystore, or ``storage``)
        self._keyring = keyring
        self._sealer: UserSealer | None = None
        # (env_id, subject) -> (wrapped, key): believed only while the database holds ``wrapped``
        self._memo: OrderedDict[tuple[str, bytes], tuple[bytes, bytes]] = OrderedDict()
        self._told_rotation = False

    async def open(self) -> None:
        """Load the blind-index key, creating it on first use."""
        import secrets

        wrapped = await self._storage.read(lambda tx: get_secret(tx, INDEX_KEY_NAME))
        if wrapped is None:
            candidate = self._keyring.seal(secrets.token_bytes(KEY_BYTES), INDEX_KEY_AAD)
            wrapped = await self._storage.write(
                lambda tx: put_secret(tx, INDEX_KEY_NAME, candidate))
        self._sealer = UserSealer(self._keyring, self._keyring.open(wrapped, INDEX_KEY_AAD))
        if self.keys is not self._storage:
            await self._move_keys()

    async def close(self) -> None:
        """Close the keystore, if it is a database of its own."""
        if self.keys is not self._storage:
            await self.keys.close()

    async def _move_keys(self) -> None:
        """Data keys left in the main database (written before the keystore was set up) go to
        the keystore, and are then scrubbed from the main database."""
        found = await self._storage.read(list_user_keys)
        if not found:
            return
        for entry in found:
            kept = await self.keys.write(partial(ensure_user_key, env_id=entry.env_id,
                                                 subject=entry.subject, wrapped=entry.wrapped))
            if kept != entry.wrapped:
                log.warning("environment %s: a data key in the main database was not moved to "
                            "the keystore, which had another for the same person: the events "
                            "sealed with it are unreadable", entry.env_id)
        await self._storage.write(partial(destroy_keys, keys=[(e.env_id, e.subject)
                                                              for e in found]))
        await self._storage.scrub()
        log.info("moved %d data keys from the main database to the keystore", len(found))

    @property
    def sealer(self) -> UserSealer:
        if self._sealer is None:
            raise RuntimeError("vault is not open")
        return self._sealer

    async def seal(
        self, env_id: str, event_id: str, user: dict[str, Any], lookups: Lookups | None = None
    ) -> tuple[bytes | None, bytes | None]:
        """``(ciphertext, subject)`` for a ``user`` object; ``(None, None)`` when it is empty."""
        if not user:
            return None, None
        sealer = self.sealer
        subject = sealer.subject(env_id, user)
        if subject is None:
            return sealer.seal_master(user, event_id), None
        wrapped = await self._wrapped(env_id, subject, lookups)
        if wrapped is None:
            _, candidate = sealer.new_wrapped_data_key(data_key_aad(env_id, subject))
            wrapped = await self.keys.write(
                lambda tx: ensure_user_key(tx, env_id, subject, candidate))
            if lookups is not None:
                lookups[(env_id, subject)] = wrapped
        return sealer.seal_user(user, event_id, self._unwrap(env_id, subject, wrapped)), subject

    async def open_user(
        self, env_id: str, event_id: str, blob: bytes | None, subject: bytes | None,
        lookups: Lookups | None = None,
    ) -> dict[str, Any]:
        """The decrypted ``user``; ``{}`` when there is none or it was erased."""
        user, _ = await self.open_marked(env_id, event_id, blob, subject, lookups)
        return user

    async def open_marked(
        self, env_id: str, event_id: str, blob: bytes | None, subject: bytes | None,
        lookups: Lookups | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """The decrypted ``user``, and whether it was erased (then it is ``{}``)."""
        if blob is None:
            return {}, False
        key = None
        if subject is not None:
            wrapped = await self._wrapped(env_id, subject, lookups)
            if wrapped is not None:
                key = self._unwrap(env_id, subject, wrapped)
            if not self.sealer.readable(blob, key):
                return {}, True
        return self.sealer.open(blob, event_id, key), False

    def subject(self, env_id: str, external_id: str) -> bytes:
        """The blind index of an ``external_id`` in an environment."""
        subject = self.sealer.subject(env_id, {"external_id": external_id})
        assert subject is not None
        return subject

    def forget(self, env_id: str, subject: bytes) -> None:
        """Drop a person's data key from memory (it was erased)."""
        self._memo.pop((env_id, subject), None)

    async def erase(self, env_id: str, external_id: str) -> bool:
        """Destroy a user's data key: every ``user`` sealed for them becomes unreadable."""
        subject = self.subject(env_id, external_id)
        self.forget(env_id, subject)
        return await self.keys.write(lambda tx: delete_user_key(tx, env_id, subject))

    async def _wrapped(self, env_id: str, subject: bytes, lookups: Lookups | None
                       ) -> bytes | None:
        if lookups is not None and (env_id, subject) in lookups:
            return lookups[(env_id, subject)]
        wrapped = await self.keys.read(lambda tx: get_user_key(tx, env_id, subject))
        if lookups is not None:
            lookups[(env_id, subject)] = wrapped
        if wrapped is None:
            self.forget(env_id, subject)
        return wrapped

    def _unwrap(self, env_id: str, subject: bytes, wrapped: bytes) -> bytes:
        memo = self._memo.get((env_id, subject))
        if memo is not None and memo[0] == wrapped:
            self._memo.move_to_end((env_id, subject))
            return memo[1]
        keyring = self.sealer.keyring
        if memo is not None and keyring.key_of(wrapped) not in keyring.keys:
            # Re-wrapped under a master key this process was not given (``tidings keys
            # rotate-encryption`` ran elsewhere): the data key itself is the same. Go on with
            # it until a restart brings the new master key.
            if not self._told_rotation:
                self._told_rotation = True
                log.warning("data keys are wrapped under master key %r, which this process "
                            "does not have: restart it with the new TIDINGS_ENCRYPTION_KEY",
                            keyring.key_of(wrapped))
            return memo[1]
        key = self.sealer.unwrap(wrapped, data_key_aad(env_id, subject))
        self._memo[(env_id, subject)] = (wrapped, key)
        if len(self._memo) > MEMO_SIZE:
            self._memo.popitem(last=False)
        return key

    async def rewrap(self, keyring: Keyring) -> int:
        """Re-wrap the index key and every data key under ``keyring``'s active key."""
        old = self.sealer
        index_key = old.keyring.open(await self._require_index(), INDEX_KEY_AAD)
        resealed = keyring.seal(index_key, INDEX_KEY_AAD)
        await self._storage.write(
            lambda tx: put_secret(tx, INDEX_KEY_NAME, resealed, replace=True))
        updated = []
        for entry in await self.keys.read(list_user_keys):
            aad = data_key_aad(entry.env_id, entry.subject)
            key = old.keyring.open(entry.wrapped, aad)
            updated.append(WrappedKey(env_id=entry.env_id, subject=entry.subject,
                                      wrapped=keyring.seal(key, aad)))
        await self.keys.write(lambda tx: replace_user_keys(tx, updated))
        self._keyring = keyring
        self._sealer = UserSealer(keyring, index_key)
        self._memo.clear()
        return len(updated)

    async def _require_index(self) -> bytes:
        wrapped = await self._storage.read(lambda tx: get_secret(tx, INDEX_KEY_NAME))
        assert wrapped is not None
        return wrapped


# -- users' data keys as stored (``storage/sql/shared/keys.sql``) -------------------------------


def ensure_user_key(tx: Tx, env_id: str, subject: bytes, wrapped: bytes) -> bytes:
    """The wrapped data key of a person, storing ``wrapped`` if there is none yet (one stored
    meanwhile by another process wins)."""
    tx.run("insert_user_key", (env_id, subject, wrapped, now_ms()))
    row = tx.one("get_user_key", (env_id, subject))
    assert row is not None
    return bytes(row[0])


def get_user_key(tx: Tx, env_id: str, subject: bytes) -> bytes | None:
    row = tx.one("get_user_key", (env_id, subject))
    return bytes(row[0]) if row else None


def delete_user_key(tx: Tx, env_id: str, subject: bytes) -> bool:
    return tx.run("delete_user_key", (env_id, subject)) > 0


def list_user_keys(tx: Tx) -> list[WrappedKey]:
    return [WrappedKey(env_id=r[0], subject=bytes(r[1]), wrapped=bytes(r[2]))
            for r in tx.all("list_user_keys")]


def replace_user_keys(tx: Tx, keys: Sequence[WrappedKey]) -> None:
    """Store each key's new ``wrapped`` (after a rotation of the master key)."""
    tx.many("update_user_key", [(k.wrapped, k.env_id, k.subject) for k in keys])


def secure_delete(tx: Tx, on: bool) -> None:
    """SQLite: from here on in this transaction, deleted rows and freed pages are overwritten
    with zeros (``PRAGMA secure_delete``), not left in the file. PostgreSQL: nothing."""
    if tx.dialect == "sqlite":
        tx.run("privacy_secure_delete_on" if on else "privacy_secure_delete_off")


def destroy_keys(tx: Tx, keys: Sequence[tuple[str, bytes]]) -> int:
    """Overwrite, then delete, these data keys (``(env_id, subject)``), so that no older
    version of their rows holds them; how many there were."""
    destroyed = 0
    secure_delete(tx, True)
    try:
        for env_id, subject in keys:
            found = tx.one("privacy_user_key", (env_id, subject))
            if found is not None:
                tx.run("privacy_blank_user_key", (bytes(len(found[0])), env_id, subject))
                destroyed += tx.run("privacy_delete_user_key", (env_id, subject))
    finally:
        secure_delete(tx, False)
    return destroyed
