"""The session token ``POST /v0/connect/start`` hands a worker, and the gateway checks when the
worker connects: an HS256 JWT naming the environment, valid for five minutes.

Its key is derived from the master keyring, which every process of a deployment shares, so a
worker may start on one process and open its socket on another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from tidings.crypto import Keyring

ISSUER = "connect.inngest.com"
AUDIENCE = "gateway.connect.inngest.com"
LIFETIME_SECONDS = 5 * 60
_HEADER = {"alg": "HS256", "typ": "JWT"}
_PURPOSE = b"tidings connect session v1"


class BadToken(Exception):
    """The session token is not one this deployment issued, or it has expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(master: bytes) -> bytes:
    return hmac.new(master, _PURPOSE, hashlib.sha256).digest()


def issue(keyring: Keyring, env_id: str, *, now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "account", "env": env_id,
              "entitlements": {}, "iat": issued, "exp": issued + LIFETIME_SECONDS}
    signed = (_b64(json.dumps(_HEADER, separators=(",", ":")).encode()) + "."
              + _b64(json.dumps(claims, separators=(",", ":")).encode()))
    mac = hmac.new(_key(keyring.keys[keyring.active]), signed.encode(), hashlib.sha256)
    return f"{signed}.{_b64(mac.digest())}"


def env_of(keyring: Keyring, token: str, *, now: float | None = None) -> str:
    """The environment a valid token names; ``BadToken`` otherwise."""
    parts = token.split(".")
    if len(parts) != 3:
        raise BadToken("the session token is not a JWT")
    signed = f"{parts[0]}.{parts[1]}".encode()
    try:
        presented = _unb64(parts[2])
        claims: Any = json.loads(_unb64(parts[1]))
    except ValueError:
        raise BadToken("the session token is not a JWT") from None
    if not any(hmac.compare_digest(hmac.new(_key(k), signed, hashlib.sha256).digest(), presented)
               for k in keyring.keys.values()):
        raise BadToken("the session token was not issued here")
    if not isinstance(claims, dict) or claims.get("aud") != AUDIENCE:
        raise BadToken("the session token is for another audience")
    expiry = claims.get("exp")
    if not isinstance(expiry, int) or expiry < (time.time() if now is None else now):
        raise BadToken("the session token has expired: call /v0/connect/start again")
    env = claims.get("env")
    if not isinstance(env, str) or not env:
        raise BadToken("the session token names no environment")
    return env
