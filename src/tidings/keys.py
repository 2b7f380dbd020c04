"""Keys: environments; event and API keys (the secret is shown once, only its hash is kept) and
the gate that turns a presented key into an environment; the environments' signing keys for SDK
apps; and named secrets. Each kept row is read and written by a function of a ``Tx`` here
(``storage.read(fn)``/``storage.write(fn)``), its SQL in ``storage/sql/shared/keys.sql``."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, replace

from tidings.crypto import Keyring
from tidings.errors import ConfigError, RequestRejected, Unauthorized
from tidings.ids import new_id, now_ms
from tidings.signing import bearer_matches, new_signing_key
from tidings.storage.base import ApiKey, Environment, KeyKind, Storage, env_from_row, key_from_row
from tidings.storage.tx import Tx

DEV_ENV = "dev"
PREFIXES: dict[str, str] = {"event": "tdk_", "api": "tda_"}
MAX_BRANCH_CHARS = 128
# How long a checked key is believed without looking again. On PostgreSQL a revocation
# reaches every process at once (``NOTIFY tidings_keys``: ``Gate.forget``), so this only bounds
# what a process that was not listening (its connection was down) may miss; SQLite has no
# notifications, and a key revoked by another process (``tidings keys revoke``) stops working
# there within this time.
CACHE_SECONDS = 1.0


# -- environments, keys and secrets as stored --------------------------------------------------


def ensure_env(tx: Tx, name: str, parent_id: str | None = None) -> Environment:
    """The environment of that name (under that parent), created if missing. Two processes
    creating it at once both get the same one (``ON CONFLICT DO NOTHING``, then read)."""
    tx.run("insert_env", (new_id(), name, parent_id, now_ms()))
    row = tx.one("env_by_name", (name,))
    assert row is not None
    return env_from_row(row)


def get_env(tx: Tx, env_id: str) -> Environment | None:
    row = tx.one("env_by_id", (env_id,))
    return env_from_row(row) if row else None


def add_key(tx: Tx, env_id: str, kind: KeyKind, key_hash: str, prefix: str, *,
            reads_user: bool = False) -> ApiKey:
    """Store a key of an environment by its hash (``create_key`` makes the secret)."""
    tx.run("insert_key", (new_id(), env_id, kind, key_hash, prefix, now_ms(),
                          1 if reads_user else 0))
    row = tx.one("key_by_hash", (key_hash,))
    assert row is not None
    return key_from_row(row)


def key_by_hash(tx: Tx, key_hash: str) -> ApiKey | None:
    """The key with that hash, revoked or not."""
    row = tx.one("key_by_hash", (key_hash,))
    return key_from_row(row) if row else None


def list_keys(tx: Tx) -> list[ApiKey]:
    return [key_from_row(row) for row in tx.all("list_keys")]


def revoke_key(tx: Tx, key_id: str) -> bool:
    """Revoke a key; False when there is no such live key. On PostgreSQL every process hears
    of it at commit (``NOTIFY tidings_keys``): their gates forget the keys they had checked."""
    if tx.run("revoke_key", (now_ms(), key_id)) == 0:
        return False
    tx.one("notify_keys")
    return True


def get_secret(tx: Tx, name: str) -> bytes | None:
    row = tx.one("get_secret", (name,))
    return bytes(row[0]) if row else None


def put_secret(tx: Tx, name: str, value: bytes, *, replace: bool = False) -> bytes:
    """Store a named secret; without ``replace`` one already stored (by another process, say)
    wins and is returned."""
    tx.run("replace_secret" if replace else "insert_secret", (name, value))
    row = tx.one("get_secret", (name,))
    assert row is not None
    return bytes(row[0])


# -- event and API keys ------------------------------------------------------------------------


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(kind: KeyKind) -> str:
    return PREFIXES[kind] + secrets.token_urlsafe(32)


async def create_key(storage: Storage, env_name: str, kind: KeyKind, *,
                     reads_user: bool = False) -> tuple[str, ApiKey]:
    """A new key for an environment: ``(secret, record)``. The secret is not stored. An API key
    made ``reads_user`` reads events' ``user`` decrypted under serve (``Access``)."""
    if not env_name or "/" in env_name:
        raise ConfigError("an environment name is non-empty and has no '/'")
    if reads_user and kind != "api":
        raise ConfigError("only an API key reads events' user (--reads-user needs --kind api)")
    secret = new_key(kind)

    def store(tx: Tx) -> ApiKey:
        return add_key(tx, ensure_env(tx, env_name).id, kind, hash_key(secret), secret[:10],
                       reads_user=reads_user)

    return secret, await storage.write(store)


@dataclass(frozen=True, slots=True)
class Access:
    """What a presented key opens: its environment, and whether what it reads carries events'
    ``user`` decrypted. Under serve only API keys made ``--reads-user`` do (elsewhere ``user``
    is masked, as on the dashboard); in dev every key does."""

    env: Environment
    reads_user: bool


@dataclass(slots=True)
class _Cached:
    access: Access
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

    def forget(self) -> None:
        """A key was revoked somewhere: check every key again on its next use."""
        self._keys.clear()

    async def env_for(self, key: str, kind: KeyKind, branch: str | None = None) -> Environment:
        """The environment a key opens, or ``Unauthorized``."""
        return (await self.access_for(key, kind, branch)).env

    async def access_for(self, key: str, kind: KeyKind, branch: str | None = None) -> Access:
        """What a key opens (its environment, or its branch, and whether it reads ``user``),
        or ``Unauthorized``."""
        if not key:
            raise Unauthorized("Event key is required" if kind == "event" else
                               "an API key is required (Authorization: Bearer <key>)")
        if self._dev:
            env = self._dev_env
            if env is None:
                env = self._dev_env = await self._storage.write(
                    lambda tx: ensure_env(tx, DEV_ENV))
            access = Access(env, reads_user=True)
        else:
            access = await self._lookup(key, kind)
        if branch:
            access = replace(access, env=await self.branch(access.env, branch))
        return access

    async def _lookup(self, key: str, kind: KeyKind) -> Access:
        now = time.monotonic()
        cached = self._keys.get((kind, key))
        if cached is not None and cached.until > now:
            return cached.access
        def find(tx: Tx) -> tuple[ApiKey | None, Environment | None]:
            record = key_by_hash(tx, hash_key(key))
            return record, get_env(tx, record.env_id) if record is not None else None

        record, env = await self._storage.read(find)
        if record is None or record.revoked_at is not None or record.kind != kind:
            self._keys.pop((kind, key), None)
            raise Unauthorized("Event key not found" if kind == "event" else "API key not found")
        assert env is not None
        if len(self._keys) > 10_000:
            self._keys.clear()
        access = Access(env, reads_user=record.reads_user)
        self._keys[(kind, key)] = _Cached(access, now + CACHE_SECONDS)
        return access

    async def branch(self, parent: Environment, branch: str) -> Environment:
        """The branch environment ``branch`` of ``parent`` (``parent`` itself when the branch
        is named after it), created on first use."""
        if len(branch) > MAX_BRANCH_CHARS or "\x00" in branch or "/" in branch:
            raise RequestRejected(
                f"x-inngest-env: a branch name has at most {MAX_BRANCH_CHARS} characters "
                "and no '/'"
            )
        if branch == parent.name:
            return parent
        env = self._branches.get((parent.id, branch))
        if env is None:
            env = await self._storage.write(
                lambda tx: ensure_env(tx, f"{parent.name}/{branch}", parent.id))
            self._branches[(parent.id, branch)] = env
        return env


# -- signing keys ----------------------------------------------------------------------------

SIGNING_AAD = b"signing-key\x00"


def branch_name(env: Environment) -> str | None:
    """The branch a branch environment is (``feature-x`` of ``production/feature-x``)."""
    return env.name.rpartition("/")[2] if env.parent_id is not None else None


@dataclass(frozen=True, slots=True)
class EnvSigningKeys:
    """An environment's signing key, and the one it replaced while apps move over to it. A
    branch environment has its parent's keys, and ``branch`` names it to the SDK."""

    env_id: str
    current: str
    fallback: str | None
    branch: str | None = None

    @property
    def all(self) -> tuple[str, ...]:
        return (self.current,) if self.fallback is None else (self.current, self.fallback)


class SigningKeys:
    """The signing keys of every environment: the server signs its requests to SDK apps with
    them and SDKs authenticate with them, so they are stored sealed by the master keyring
    (never only hashed) and kept here for ``CACHE_SECONDS``."""

    def __init__(self, storage: Storage, keyring: Keyring) -> None:
        self._storage = storage
        self._keyring = keyring
        self._keys: dict[str, EnvSigningKeys] = {}
        self._until = 0.0
        self._envs: dict[str, Environment | None] = {}  # environments do not change

    async def of_env(self, env_id: str) -> EnvSigningKeys | None:
        """The keys calls to the environment's apps are signed with: its own, or for a branch
        environment its parent's."""
        await self._load()
        keys = self._keys.get(env_id)
        if keys is not None:
            return keys
        env = await self._env(env_id)
        if env is None or env.parent_id is None:
            return None
        parent = self._keys.get(env.parent_id)
        return replace(parent, branch=branch_name(env)) if parent is not None else None

    async def _env(self, env_id: str) -> Environment | None:
        if env_id not in self._envs:
            self._envs[env_id] = await self._storage.read(lambda tx: get_env(tx, env_id))
        return self._envs[env_id]

    async def env_for_bearer(self, token: str) -> str | None:
        """The environment whose signing key (or fallback) ``token`` presents, in any form."""
        await self._load()
        for keys in self._keys.values():
            if bearer_matches(token, keys.all):
                return keys.env_id
        return None

    async def create(self, env: Environment) -> EnvSigningKeys:
        """A new signing key; the current one (if any) becomes the fallback."""
        now = int(time.time() * 1000)
        await self._load()
        old = self._keys.get(env.id)
        key = new_signing_key(env.name)
        fallback = old.current if old is not None else None
        await self._put(env.id, key, fallback, now)
        return EnvSigningKeys(env.id, key, fallback)

    async def drop_fallback(self, env_id: str) -> bool:
        """End a rotation: the fallback key stops working. False when there was none."""
        await self._load()
        old = self._keys.get(env_id)
        if old is None or old.fallback is None:
            return False
        await self._put(env_id, old.current, None, int(time.time() * 1000))
        return True

    async def rewrap(self, keyring: Keyring) -> int:
        """Seal every environment's keys again under ``keyring``'s active master key (after
        ``tidings keys rotate-encryption``); how many environments' keys were re-sealed."""
        rows = await self._storage.read(lambda tx: tx.all("all_signing_keys"))
        updated = []
        for env_id, sealed, fallback in rows:
            aad = SIGNING_AAD + str(env_id).encode()
            fresh = keyring.seal(self._keyring.open(bytes(sealed), aad), aad)
            fresh_fallback = (keyring.seal(self._keyring.open(bytes(fallback), aad), aad)
                              if fallback else None)
            updated.append((fresh, fresh_fallback, env_id, bytes(sealed)))

        def write(tx: Tx) -> int:
            return sum(tx.run("rewrap_signing_keys", params) for params in updated)

        count = await self._storage.write(write)
        self._keyring = keyring
        self._until = 0.0
        return count

    async def _put(self, env_id: str, key: str, fallback: str | None, now: int) -> None:
        aad = SIGNING_AAD + env_id.encode()
        sealed = self._keyring.seal(key.encode(), aad)
        sealed_fallback = self._keyring.seal(fallback.encode(), aad) if fallback else None
        await self._storage.write(lambda tx: tx.run(
            "put_signing_keys", (env_id, sealed, sealed_fallback, now)))
        self._until = 0.0

    async def _load(self) -> None:
        if time.monotonic() < self._until:
            return
        rows = await self._storage.read(lambda tx: tx.all("all_signing_keys"))
        keys = {}
        for env_id, sealed, fallback in rows:
            aad = SIGNING_AAD + str(env_id).encode()
            current = self._keyring.open(bytes(sealed), aad).decode()
            previous = self._keyring.open(bytes(fallback), aad).decode() if fallback else None
            keys[env_id] = EnvSigningKeys(env_id, current, previous)
        self._keys = keys
        self._until = time.monotonic() + CACHE_SECONDS
