"""The user vault: seals ``event.user`` on the way in, opens it on the way out, erases it per user.

It owns the data-key cache and the blind-index key; the ciphers themselves are in ``crypto``.
"""

from __future__ import annotations

from typing import Any

from tidings.crypto import (
    INDEX_KEY_AAD,
    INDEX_KEY_NAME,
    KEY_BYTES,
    Keyring,
    UserSealer,
    data_key_aad,
)
from tidings.storage.base import Storage, WrappedKey


class UserVault:
    def __init__(self, storage: Storage, keyring: Keyring) -> None:
        self._storage = storage
        self._keyring = keyring
        self._sealer: UserSealer | None = None
        self._data_keys: dict[tuple[str, bytes], bytes] = {}

    async def open(self) -> None:
        """Load the blind-index key, creating it on first use."""
        import secrets

        wrapped = await self._storage.get_secret(INDEX_KEY_NAME)
        if wrapped is None:
            candidate = self._keyring.seal(secrets.token_bytes(KEY_BYTES), INDEX_KEY_AAD)
            wrapped = await self._storage.put_secret(INDEX_KEY_NAME, candidate)
        self._sealer = UserSealer(self._keyring, self._keyring.open(wrapped, INDEX_KEY_AAD))

    @property
    def sealer(self) -> UserSealer:
        if self._sealer is None:
            raise RuntimeError("vault is not open")
        return self._sealer

    async def seal(
        self, env_id: str, event_id: str, user: dict[str, Any]
    ) -> tuple[bytes | None, bytes | None]:
        """``(ciphertext, subject)`` for a ``user`` object; ``(None, None)`` when it is empty."""
        if not user:
            return None, None
        sealer = self.sealer
        subject = sealer.subject(env_id, user)
        if subject is None:
            return sealer.seal_master(user, event_id), None
        key = self._data_keys.get((env_id, subject))
        if key is None:
            aad = data_key_aad(env_id, subject)
            _, candidate = sealer.new_wrapped_data_key(aad)
            wrapped = await self._storage.ensure_user_key(env_id, subject, candidate)
            key = sealer.unwrap(wrapped, aad)
            self._data_keys[(env_id, subject)] = key
        return sealer.seal_user(user, event_id, key), subject

    async def open_user(
        self, env_id: str, event_id: str, blob: bytes | None, subject: bytes | None
    ) -> dict[str, Any]:
        """The decrypted ``user``; ``{}`` when there is none or it was erased."""
        if blob is None:
            return {}
        key = None
        if subject is not None:
            key = self._data_keys.get((env_id, subject))
            if key is None:
                wrapped = await self._storage.get_user_key(env_id, subject)
                if wrapped is None:
                    return {}
                key = self.sealer.unwrap(wrapped, data_key_aad(env_id, subject))
        return self.sealer.open(blob, event_id, key)

    async def erase(self, env_id: str, external_id: str) -> bool:
        """Destroy a user's data key: every ``user`` sealed for them becomes unreadable."""
        subject = self.sealer.subject(env_id, {"external_id": external_id})
        assert subject is not None
        self._data_keys.pop((env_id, subject), None)
        return await self._storage.delete_user_key(env_id, subject)

    async def rewrap(self, keyring: Keyring) -> int:
        """Re-wrap the index key and every data key under ``keyring``'s active key."""
        old = self.sealer
        index_key = old.keyring.open(await self._require_index(), INDEX_KEY_AAD)
        await self._storage.put_secret(
            INDEX_KEY_NAME, keyring.seal(index_key, INDEX_KEY_AAD), replace=True
        )
        updated = []
        for entry in await self._storage.list_user_keys():
            aad = data_key_aad(entry.env_id, entry.subject)
            key = old.keyring.open(entry.wrapped, aad)
            updated.append(WrappedKey(env_id=entry.env_id, subject=entry.subject,
                                      wrapped=keyring.seal(key, aad)))
        await self._storage.replace_user_keys(updated)
        self._keyring = keyring
        self._sealer = UserSealer(keyring, index_key)
        return len(updated)

    async def _require_index(self) -> bytes:
        wrapped = await self._storage.get_secret(INDEX_KEY_NAME)
        assert wrapped is not None
        return wrapped
