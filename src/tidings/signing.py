"""Signing keys, request signatures and Bearer tokens, as the Inngest SDKs expect them.

A signing key looks like ``signkey-<env>-<hex>``. SDKs authenticate to the server with
``Authorization: Bearer <sha256 of the hex bytes>`` (with or without the prefix; some send the plain
key). Requests the server makes to an SDK are signed with ``X-Inngest-Signature:
t=<unix seconds>&s=<hex HMAC-SHA256>``, where the HMAC key is the key's text without its prefix and
the message is the body followed by the timestamp; the SDK signs its responses the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable

_PREFIX = re.compile(r"^signkey-\w+-")
MAX_SKEW_SECONDS = 5 * 60


def strip_prefix(key: str) -> str:
    return _PREFIX.sub("", key.strip())


def prefix_of(key: str) -> str:
    match = _PREFIX.match(key.strip())
    return match.group(0) if match else ""


def hash_key(key: str) -> str:
    """The Bearer form of a signing key: sha256 of its hex bytes (or of its text when it is not
    hex), keeping its prefix."""
    body = strip_prefix(key)
    try:
        raw = bytes.fromhex(body)
    except ValueError:
        raw = body.encode()
    return prefix_of(key) + hashlib.sha256(raw).hexdigest()


def new_signing_key(env: str) -> str:
    kind = "prod" if env in ("prod", "production") else "branch" if "/" in env else "test"
    return f"signkey-{kind}-{secrets.token_hex(32)}"


def bearer_matches(token: str, keys: Iterable[str]) -> bool:
    """True when ``token`` is one of ``keys``, plain or hashed, with or without prefix.

    Compared as bytes: ``hmac.compare_digest`` refuses ``str`` holding anything but ASCII with
    a ``TypeError``, and a header may hold anything (a malformed credential is a mismatch)."""
    presented = _utf8(strip_prefix(token))
    if not presented:
        return False
    for key in keys:
        plain = _utf8(strip_prefix(key))
        hashed = _utf8(strip_prefix(hash_key(key)))
        if hmac.compare_digest(presented, plain) or hmac.compare_digest(presented, hashed):
            return True
    return False


def _utf8(text: str) -> bytes:
    # Header values reach us decoded as latin-1, so they always encode; ``surrogateescape``
    # covers text that came some other way.
    return text.encode("utf-8", "surrogateescape")


def _mac(body: bytes, key: str, stamp: int) -> str:
    return hmac.new(strip_prefix(key).encode(), body + str(stamp).encode(),
                    hashlib.sha256).hexdigest()


def sign(body: bytes, key: str, stamp: int | None = None) -> str:
    """The ``X-Inngest-Signature`` value for ``body``."""
    at = int(time.time()) if stamp is None else stamp
    return f"t={at}&s={_mac(body, key, at)}"


def verify(body: bytes, header: str | None, keys: Iterable[str], *,
           now: int | None = None, max_skew: int = MAX_SKEW_SECONDS) -> bool:
    """True when ``header`` signs ``body`` with one of ``keys`` within ``max_skew`` seconds."""
    if not header or not isinstance(header, str):  # a streamed answer's is any JSON value
        return False
    parts = dict(p.split("=", 1) for p in header.split("&") if "=" in p)
    try:
        stamp = int(parts["t"])
        mac = parts["s"]
    except (KeyError, ValueError):
        return False
    current = int(time.time()) if now is None else now
    if abs(current - stamp) > max_skew:
        return False
    given = _utf8(mac)  # bytes: a non-ASCII signature is a mismatch, not a TypeError
    return any(hmac.compare_digest(given, _mac(body, key, stamp).encode()) for key in keys)
