"""Trigger.dev v2 keys: ``tr_<env>_<secret>``, the only shape the v2 client accepts
(``^tr_[a-z]+_[a-zA-Z0-9]+$``).

A v2 app checks that the platform's calls carry its own key (``x-trigger-api-key``), so the
server must be able to present it again: keys are stored sealed by the master keyring (like
signing keys), with a hash beside them to look a presented key up. Under ``tidings dev`` any
well-formed ``tr_dev_...`` key (or none) opens the dev environment, as any event key does
there.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import time
from dataclasses import dataclass

from tidings.crypto import Keyring
from tidings.errors import ConfigError, Unauthorized
from tidings.ids import new_id, now_ms
from tidings.keys import CACHE_SECONDS, DEV_ENV, ensure_env, get_env
from tidings.storage.base import Environment, Storage
from tidings.storage.tx import Tx

KEY_RE = re.compile(r"tr_[a-z]+_[a-zA-Z0-9]+")
DEV_KEY_RE = re.compile(r"tr_dev_[a-zA-Z0-9]+")
SEALED_AAD = b"trigger-key\x00"
SECRET_CHARS = string.ascii_letters + string.digits
SECRET_LENGTH = 40
# What v2 named its environments in keys; another environment is named by its letters.
ENV_WORDS = {"production": "prod", "prod": "prod", "staging": "stg", "development": "dev",
             "dev": "dev", "preview": "prev"}
MISSING = "Missing API key: send Authorization: Bearer tr_..."
NOT_FOUND = "Invalid API Key"


def key_word(env_name: str) -> str:
    """The ``<env>`` of ``tr_<env>_...`` for an environment."""
    word = ENV_WORDS.get(env_name.lower())
    if word is None:
        word = "".join(c for c in env_name.lower() if "a" <= c <= "z") or "env"
    return word


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerKey:
    id: str
    env_id: str
    env_name: str
    prefix: str
    created_at: int
    revoked_at: int | None
    kind: str = "trigger"


@dataclass(slots=True)
class _Cached:
    env: Environment
    until: float


class TriggerKeys:
    """Mints, looks up, opens and re-seals the environments' v2 keys."""

    def __init__(self, storage: Storage, keyring: Keyring, *, dev: bool) -> None:
        self._storage = storage
        self._keyring = keyring
        self._dev = dev
        self._seen: dict[str, _Cached] = {}
        # What the driver presents to an environment's apps, opened (not read and unsealed
        # for every run): for CACHE_SECONDS, or until a key is revoked or re-sealed here.
        self._presented: dict[tuple[str, str | None], tuple[str | None, float]] = {}
        self._dev_env_found: Environment | None = None

    async def create(self, env_name: str) -> tuple[str, TriggerKey]:
        """A new key for an environment: ``(secret, record)``."""
        if not env_name or "/" in env_name:
            raise ConfigError("an environment name is non-empty and has no '/'")
        env = await self._storage.write(lambda tx: ensure_env(tx, env_name))
        secret = (f"tr_{key_word(env_name)}_"
                  + "".join(secrets.choice(SECRET_CHARS) for _ in range(SECRET_LENGTH)))
        key_id, now = new_id(), now_ms()
        sealed = self._keyring.seal(secret.encode(), SEALED_AAD + key_id.encode())
        prefix = secret[:secret.index("_", 3) + 5]
        await self._storage.write(lambda tx: tx.run(
            "trigger_key_insert", (key_id, env.id, hash_key(secret), sealed, prefix, now)))
        return secret, TriggerKey(id=key_id, env_id=env.id, env_name=env.name, prefix=prefix,
                                  created_at=now, revoked_at=None)

    async def all(self) -> list[TriggerKey]:
        rows = await self._storage.read(lambda tx: tx.all("trigger_keys_all"))
        return [TriggerKey(id=r[0], env_id=r[1], env_name=r[2], prefix=r[3], created_at=r[5],
                           revoked_at=r[6]) for r in rows]

    async def revoke(self, key_id: str) -> bool:
        now = now_ms()
        changed = await self._storage.write(
            lambda tx: tx.run("trigger_key_revoke", (now, key_id)))
        self._seen.clear()
        self._presented.clear()
        return changed > 0

    async def secrets_of(self, env_id: str) -> list[str]:
        """The environment's live keys, newest first, opened: what the server presents to the
        environment's v2 apps."""
        return [secret for _, secret in await self.live_of(env_id)]

    async def live_of(self, env_id: str) -> list[tuple[str, str]]:
        """``(id, secret)`` of the environment's live keys, newest first."""
        rows = await self._storage.read(lambda tx: tx.all("trigger_keys_all"))
        live = [r for r in rows if r[1] == env_id and r[6] is None]
        return [(str(r[0]), self._open(r[0], bytes(r[4]))) for r in reversed(live)]

    async def secret_for(self, env_id: str, key_id: str | None = None) -> str | None:
        """The key to present to an app of the environment: the one it was indexed with
        (``key_id``) while it is live, else the environment's newest."""
        now = time.monotonic()
        cached = self._presented.get((env_id, key_id))
        if cached is not None and cached[1] > now:
            return cached[0]
        rows = await self._storage.read(lambda tx: tx.all("trigger_keys_all"))
        live = [r for r in rows if r[1] == env_id and r[6] is None]
        chosen = [r for r in live if r[0] == key_id] or live[-1:]
        secret = self._open(chosen[0][0], bytes(chosen[0][4])) if chosen else None
        if len(self._presented) > 10_000:
            self._presented.clear()
        self._presented[(env_id, key_id)] = (secret, now + CACHE_SECONDS)
        return secret

    async def remember(self, env_id: str, secret: str) -> str:
        """Keep a key an app presented (``POST /api/v1/endpoints`` in dev, where any
        ``tr_dev_`` key is taken), sealed like a minted one; its id."""
        digest = hash_key(secret)
        found = await self._storage.read(lambda tx: tx.one("trigger_key_by_hash", (digest,)))
        if found is not None:
            return str(found[0])
        key_id, now = new_id(), now_ms()
        sealed = self._keyring.seal(secret.encode(), SEALED_AAD + key_id.encode())
        prefix = secret[:secret.index("_", 3) + 5]
        await self._storage.write(lambda tx: tx.run(
            "trigger_key_insert", (key_id, env_id, digest, sealed, prefix, now)))
        return key_id

    async def rewrap(self, keyring: Keyring) -> int:
        """Seal every key again under ``keyring``'s active master key; how many were."""
        rows = await self._storage.read(lambda tx: tx.all("trigger_keys_all"))
        updated = []
        for row in rows:
            aad = SEALED_AAD + str(row[0]).encode()
            fresh = keyring.seal(self._keyring.open(bytes(row[4]), aad), aad)
            updated.append((fresh, row[0], bytes(row[4])))

        def write(tx: Tx) -> int:
            return sum(tx.run("trigger_key_rewrap", params) for params in updated)

        count = await self._storage.write(write)
        self._keyring = keyring
        self._presented.clear()
        return count

    async def _dev_env(self) -> Environment:
        # Made once and never removed: written (if need be) at the first call only.
        if self._dev_env_found is None:
            self._dev_env_found = await self._storage.write(lambda tx: ensure_env(tx, DEV_ENV))
        return self._dev_env_found

    async def env_for(self, authorization: str) -> Environment:
        """The environment the ``Authorization: Bearer tr_...`` header opens, or
        ``Unauthorized`` (with v2's message)."""
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if self._dev and not authorization:
            return await self._dev_env()  # dev needs no key, as for events
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(MISSING)
        if not KEY_RE.fullmatch(token):
            raise Unauthorized(f"{NOT_FOUND}: a key is tr_<environment>_<letters and digits>")
        if self._dev:
            if not DEV_KEY_RE.fullmatch(token):
                raise Unauthorized(f"{NOT_FOUND}: tidings dev takes any tr_dev_... key")
            return await self._dev_env()
        now = time.monotonic()
        cached = self._seen.get(token)
        if cached is not None and cached.until > now:
            return cached.env
        found = await self._storage.read(
            lambda tx: tx.one("trigger_key_by_hash", (hash_key(token),)))
        env = None
        if found is not None and found[2] is None:
            env = await self._storage.read(lambda tx: get_env(tx, str(found[1])))
        if env is None:
            self._seen.pop(token, None)
            raise Unauthorized(NOT_FOUND)
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[token] = _Cached(env, now + CACHE_SECONDS)
        return env

    def _open(self, key_id: str, sealed: bytes) -> str:
        return self._keyring.open(sealed, SEALED_AAD + key_id.encode()).decode()
