"""Who looks at the dashboard, and proof that an action comes from its own pages.

``tidings dev`` is open (it listens on loopback): the viewer sees the ``dev`` environment.
Under ``tidings serve`` the dashboard is closed until the viewer signs in with an API key of an
environment (event keys are refused: they may send, not read) or a dashboard password
(``tidings keys create-dashboard``, ``tidings/passwords.py``). Signing in sets a session
cookie (HttpOnly, SameSite=Strict, Secure except over plain http on loopback) holding the
key's hash (or ``pw-`` and the password's id), an expiry and a MAC under a secret kept in the
database, so every process of a deployment accepts it; each request checks the key or password
again, so revoking it ends its sessions.

Who may see events' ``user`` decrypted (``Session.reads_user``): everyone in dev (loopback, the
developer's own data); under serve only sessions of a dashboard password or an API key made
with ``--reads-user``, the same rule as the JSON API's (``keys.Access``). Others see it masked:
the permission is given explicitly, never by holding any key of the environment.

Every action (a POST) carries a CSRF token, a MAC of the session under the same secret, and
must come from a page of the same host (``Origin``/``Referer``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from functools import partial

from starlette.requests import Request

from tidings import passwords
from tidings.core import Core
from tidings.errors import RequestRejected, Unauthorized
from tidings.ids import now_ms
from tidings.keys import DEV_ENV, get_env, hash_key, key_by_hash, put_secret
from tidings.storage.base import Environment
from tidings.storage.tx import Tx

COOKIE = "tidings_session"
BRANCH_COOKIE = "tidings_branch"
TTL_MS = 12 * 3_600_000
SECRET_NAME = "dashboard-session-key"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
DECOY = passwords.hashed(secrets.token_urlsafe(24))  # checked against when no password matches


class SignInRequired(Exception):
    """The viewer must sign in (under ``serve``) before seeing this page."""


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in viewer: the environment of their key and the cookie that says so."""

    env: Environment
    token: str  # the cookie's value ("dev" in dev, where there is no cookie)
    reads_user: bool = False  # may see events' user decrypted


class Sessions:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._secret: bytes | None = None

    async def secret(self) -> bytes:
        if self._secret is None:
            # put_secret keeps the first one written: every process ends up with the same.
            candidate = secrets.token_bytes(32)
            self._secret = await self.core.storage.write(
                lambda tx: put_secret(tx, SECRET_NAME, candidate))
        return self._secret

    async def current(self, request: Request) -> Session:
        if self.core.settings.dev:
            return Session(await self.core.gate.env_for(DEV_ENV, "api"), "dev", True)
        token = request.cookies.get(COOKIE, "")
        found = await self._verify(token)
        if found is None:
            raise SignInRequired()
        return Session(found[0], token, found[1])

    async def sign_in(self, key: str, now: int) -> tuple[str, Environment]:
        """The cookie's value for an API key or a dashboard password, with its environment;
        ``Unauthorized`` (the API's words) for a key that is unknown, revoked, or not an API
        key, or a password that is not a live one."""
        key = key.strip()
        shaped = passwords.parts(key)
        if shaped is not None:
            return await self._sign_in_password(*shaped, now)
        try:
            env = await self.core.gate.env_for(key, "api")
        except Unauthorized:
            record = (await self.core.storage.read(lambda tx: key_by_hash(tx, hash_key(key)))
                      if key else None)
            if record is not None and record.revoked_at is None and record.kind == "event":
                raise Unauthorized("this is an event key: it sends events but cannot read "
                                   "them; sign in with an API key of the environment "
                                   "(tidings keys create --kind api)") from None
            raise
        body = f"{hash_key(key)}.{now + TTL_MS}"
        return f"{body}.{await self._mac('session', body)}", env

    async def _sign_in_password(self, lookup: str, secret: str,
                                now: int) -> tuple[str, Environment]:
        found = await self.core.storage.read(partial(passwords.check, lookup=lookup))
        # The derivation is run even for an unknown lookup id, so the answer takes as long.
        kept = found[1] if found is not None else DECOY
        good = await asyncio.to_thread(passwords.matches, secret, kept)
        if found is None or not good:
            raise Unauthorized("dashboard password not found, revoked or wrong")
        record = found[0]
        env = await self.core.storage.read(partial(get_env, env_id=record.env_id))
        assert env is not None
        body = f"pw-{record.id}.{now + TTL_MS}"
        return f"{body}.{await self._mac('session', body)}", env

    async def csrf(self, session: Session) -> str:
        return await self._mac("csrf", session.token)

    async def check_csrf(self, session: Session, token: str) -> None:
        if not hmac.compare_digest(token.encode(), (await self.csrf(session)).encode()):
            raise RequestRejected("this action's form is stale or was not made by this "
                                  "dashboard (CSRF token missing or wrong): reload the page",
                                  status=403)

    async def _verify(self, token: str) -> tuple[Environment, bool] | None:
        """The environment a session cookie opens and whether it may read ``user``."""
        key_hash, _, rest = token.partition(".")
        expires, _, mac = rest.partition(".")
        if not key_hash or not expires.isdigit() or not mac:
            return None
        good = await self._mac("session", f"{key_hash}.{expires}")
        if not hmac.compare_digest(mac.encode(), good.encode()) or int(expires) < now_ms():
            return None

        def find(tx: Tx) -> tuple[Environment, bool] | None:
            if key_hash.startswith("pw-"):
                made = passwords.by_id(tx, key_hash[3:])
                if made is None or made.revoked_at is not None:
                    return None
                env_id, reads_user = made.env_id, made.reads_user
            else:
                record = key_by_hash(tx, key_hash)
                if record is None or record.revoked_at is not None or record.kind != "api":
                    return None
                env_id, reads_user = record.env_id, record.reads_user
            env = get_env(tx, env_id)
            return None if env is None else (env, reads_user)

        return await self.core.storage.read(find)

    async def _mac(self, purpose: str, text: str) -> str:
        digest = hmac.new(await self.secret(), f"{purpose}:{text}".encode(),
                          hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def secure_cookie(request: Request) -> bool:
    """Secure unless the dashboard is reached over plain http on loopback, where nothing
    travels off the machine (behind a proxy that ends TLS, the host is not loopback)."""
    host = (request.url.hostname or "").lower()
    return request.url.scheme == "https" or host not in LOOPBACK
