"""Event and API keys: creation (the secret is shown once, only its hash is kept) and the gate
that turns a presented key into an environment."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from tidings.errors import ConfigError, RequestRejected, Unauthorized
from tidings.storage.base import ApiKey, Environment, KeyKind, Storage

DEV_ENV = "dev"
PREFIXES: dict[str, str] = {"event": "tdk_", "api": "tda_"}
MAX_BRANCH_CHARS = 128
CACHE_SECONDS = 5.0


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(kind: KeyKind) -> str:
    return PREFIXES[kind] + secrets.token_urlsafe(32)


async def create_key(storage: Storage, env_name: str, kind: KeyKind) -> tuple[str, ApiKey]:
    """A new key for an environment: ``(secret, record)``. The secret is not stored."""
    if not env_name or "/" in env_name:
        raise ConfigError("an environment name is non-empty and has no '/'")
    env = await storage.ensure_env(env_name)
    secret = new_key(kind)
    record = await storage.create_key(env.id, kind, hash_key(secret), secret[:10])
    return secret, record


@dataclass(slots=True)
class _Cached:
    env: Environment
    until: float


class Gate:
    """Resolves presented keys (and ``x-inngest-env`` branches) to environments, with a short
    cache so the hot path does not query the database on every request."""

    def __init__(self, storage: Storage, *, dev: bool) -> None:
        self._storage = storage
        self._dev = dev
        self._keys: dict[tuple[str, str], _Cached] = {}
        self._branches: dict[tuple[str, str], Environment] = {}
        self._dev_env: Environment | None = None

    async def env_for(self, key: str, kind: KeyKind, branch: str | None = None) -> Environment:
        """The environment a key opens, or ``Unauthorized``."""
        if not key:
            raise Unauthorized("Event key is required" if kind == "event" else
                               "an API key is required (Authorization: Bearer <key>)")
        if self._dev:
            env = self._dev_env
            if env is None:
                env = self._dev_env = await self._storage.ensure_env(DEV_ENV)
        else:
            env = await self._lookup(key, kind)
        if branch:
            env = await self._branch(env, branch)
        return env

    async def _lookup(self, key: str, kind: KeyKind) -> Environment:
        now = time.monotonic()
        cached = self._keys.get((kind, key))
        if cached is not None and cached.until > now:
            return cached.env
        record = await self._storage.key_by_hash(hash_key(key))
        if record is None or record.revoked_at is not None or record.kind != kind:
            self._keys.pop((kind, key), None)
            raise Unauthorized("Event key not found" if kind == "event" else "API key not found")
        env = await self._storage.get_env(record.env_id)
        assert env is not None
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[(kind, key)] = _Cached(env, now + CACHE_SECONDS)
        return env

    async def _branch(self, parent: Environment, branch: str) -> Environment:
        if len(branch) > MAX_BRANCH_CHARS or "\x00" in branch or "/" in branch:
            raise RequestRejected(
                f"x-inngest-env: a branch name has at most {MAX_BRANCH_CHARS} characters "
                "and no '/'"
            )
        if branch == parent.name:
            return parent
        env = self._branches.get((parent.id, branch))
        if env is None:
            env = await self._storage.ensure_env(f"{parent.name}/{branch}", parent.id)
            self._branches[(parent.id, branch)] = env
        return env
