"""Dashboard passwords (``tidings keys create-dashboard``): a way into one environment's
dashboard under ``tidings serve`` for people who should not hold an API key.

A password is made, not chosen: ``tdp_<lookup>_<secret>``, shown once. The lookup part finds
its row; only a scrypt hash of the secret part is kept (``cryptography``'s ``Scrypt``, n=2^15,
r=8, p=1, a salt of its own: about 32 MB and tens of milliseconds per try, so a stolen table
is slow to attack, and a sign-in costs one derivation, never one per stored password).

``reads_user`` is the permission to see events' ``user`` decrypted on the dashboard; without
it the dashboard shows ``user`` masked. An API key carries the same permission
(``tidings keys create --kind api --reads-user``, ``keys.Access``) for the JSON API and the
dashboard sessions it signs in.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from tidings.errors import ConfigError
from tidings.ids import new_id, now_ms
from tidings.keys import ensure_env
from tidings.storage.tx import Tx

PREFIX = "tdp_"
N, R, P, LENGTH = 2**15, 8, 1, 32


@dataclass(frozen=True, slots=True, kw_only=True)
class DashboardPassword:
    id: str
    env_id: str
    env_name: str
    lookup: str
    reads_user: bool
    created_at: int
    revoked_at: int | None

    @classmethod
    def from_row(cls, row: Any) -> DashboardPassword:
        return cls(id=row[0], env_id=row[1], env_name=row[2], lookup=row[3],
                   reads_user=bool(row[5]), created_at=int(row[6]),
                   revoked_at=None if row[7] is None else int(row[7]))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _kdf(salt: bytes, n: int = N, r: int = R, p: int = P) -> Scrypt:
    return Scrypt(salt=salt, length=LENGTH, n=n, r=r, p=p)


def hashed(secret: str) -> str:
    """``scrypt$n$r$p$salt$hash``: what is kept of a password's secret part."""
    salt = secrets.token_bytes(16)
    return f"scrypt${N}${R}${P}${_b64(salt)}${_b64(_kdf(salt).derive(secret.encode()))}"


def matches(secret: str, kept: str) -> bool:
    """Whether ``secret`` is the one ``kept`` was made from (in constant time)."""
    name, n, r, p, salt, digest = kept.split("$")
    if name != "scrypt":
        return False
    try:
        _kdf(_unb64(salt), int(n), int(r), int(p)).verify(secret.encode(), _unb64(digest))
    except InvalidKey:
        return False
    return True


def create(tx: Tx, env_name: str, *, reads_user: bool) -> tuple[str, DashboardPassword]:
    """A new password for the environment ``env_name``: ``(password, record)``. The password
    is not kept."""
    if not env_name or "/" in env_name:
        raise ConfigError("an environment name is non-empty and has no '/'")
    env = ensure_env(tx, env_name)
    lookup, secret = secrets.token_hex(6), secrets.token_urlsafe(24)
    password_id = new_id()
    tx.run("insert_dashboard_password", (password_id, env.id, lookup, hashed(secret),
                                         1 if reads_user else 0, now_ms()))
    found = by_id(tx, password_id)
    assert found is not None
    return f"{PREFIX}{lookup}_{secret}", found


def parts(password: str) -> tuple[str, str] | None:
    """``(lookup, secret)`` of something shaped like a dashboard password, else None."""
    if not password.startswith(PREFIX):
        return None
    lookup, sep, secret = password[len(PREFIX):].partition("_")
    return (lookup, secret) if sep and lookup and secret else None


def check(tx: Tx, lookup: str) -> tuple[DashboardPassword, str] | None:
    """The live password with that lookup id and its kept hash (for ``matches``), if any."""
    row = tx.one("dashboard_password_by_lookup", (lookup,))
    if row is None or row[7] is not None:
        return None
    return DashboardPassword.from_row(row), str(row[4])


def by_id(tx: Tx, password_id: str) -> DashboardPassword | None:
    row = tx.one("dashboard_password_by_id", (password_id,))
    return DashboardPassword.from_row(row) if row else None


def listed(tx: Tx) -> list[DashboardPassword]:
    return [DashboardPassword.from_row(row) for row in tx.all("list_dashboard_passwords")]


def revoke(tx: Tx, password_id: str) -> bool:
    """Revoke a password (its sessions end at their next request); False when there is no such
    live password."""
    return tx.run("revoke_dashboard_password", (now_ms(), password_id)) > 0
