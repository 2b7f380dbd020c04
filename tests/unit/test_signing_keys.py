"""Signing keys at rest, on both backends: sealed by the master keyring, readable while a
rotated keyring still holds the key that sealed them, and sealed again under the new active
key by ``rewrap``; a branch environment signs with its parent's keys."""

from __future__ import annotations

import pytest

from tidings.crypto import Keyring, new_key_text
from tidings.errors import EncryptionError
from tidings.keys import EnvSigningKeys, SigningKeys, ensure_env
from tidings.storage import Storage


def only_active(keyring: Keyring) -> Keyring:
    return Keyring({keyring.active: keyring.keys[keyring.active]}, keyring.active)


async def test_rotation_reseals_signing_keys(storage: Storage) -> None:
    old = Keyring.parse(new_key_text())
    env = await storage.write(lambda tx: ensure_env(tx, "production"))
    first = await SigningKeys(storage, old).create(env)
    second = await SigningKeys(storage, old).create(env)
    assert second.fallback == first.current
    new = old.rotated()

    # Until they are re-wrapped, the rotated keyring reads them with the old key it keeps.
    assert await SigningKeys(storage, new).of_env(env.id) == second
    with pytest.raises(EncryptionError):
        await SigningKeys(storage, only_active(new)).of_env(env.id)

    assert await SigningKeys(storage, old).rewrap(new) == 1
    assert await SigningKeys(storage, only_active(new)).of_env(env.id) == second
    with pytest.raises(EncryptionError):
        await SigningKeys(storage, only_active(old)).of_env(env.id)
    assert await SigningKeys(storage, new).rewrap(new) == 1  # again: harmless


async def test_a_branch_signs_with_its_parents_keys(storage: Storage) -> None:
    keyring = Keyring.parse(new_key_text())
    keys = SigningKeys(storage, keyring)
    parent = await storage.write(lambda tx: ensure_env(tx, "production"))
    branch = await storage.write(lambda tx: ensure_env(tx, "production/feature-x", parent.id))
    other = await storage.write(lambda tx: ensure_env(tx, "staging"))
    created = await keys.create(parent)

    assert await keys.of_env(branch.id) == EnvSigningKeys(parent.id, created.current, None,
                                                          branch="feature-x")
    assert await keys.of_env(other.id) is None
