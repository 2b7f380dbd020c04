"""The ids the gateway gives its calls (``request_id``), which any process of the deployment can
tell from ids it never issued.

A worker may reply for a call whose caller is gone: the process that made it was killed, or
stopped and gave the call up, and nothing is waiting for the reply any more. That is no fault
of the worker, which should get its acknowledgement and keep its socket. A reply naming an id
no Tidings process issued is a breach of the protocol, and closes the socket. Both find no
call, so the id itself tells them apart: a ULID whose last 40 bits are a MAC (keyed BLAKE2b)
of the rest, keyed from the master keyring every process of a deployment shares. It is still a
ULID to the SDKs (time first, 26 characters of Crockford's base32).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from tidings.crypto import Keyring
from tidings.ids import encode, now_ms, random_bits120

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two characters per 10 bits, as ``tidings.ids`` encodes: a tag is four lookups, a head nine.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_MAX_MS = (1 << 48) - 1
_LOW40 = (1 << 40) - 1
_PURPOSE = b"tidings connect request id v1"
_HEAD = 18  # characters kept from a fresh ULID: its time and 40 random bits
_TAG_BYTES = 5  # 40 bits: eight characters
_PROCESS_KEY = secrets.token_bytes(32)


def _tag(key: bytes, head: str) -> str:
    # Keyed BLAKE2b is a MAC in one call: a quarter of an HMAC's cost, on every call made.
    value = int.from_bytes(hashlib.blake2b(head.encode(), key=key,
                                           digest_size=_TAG_BYTES).digest())
    p = _PAIRS
    return p[value >> 30] + p[(value >> 20) & 1023] + p[(value >> 10) & 1023] + p[value & 1023]


def _head(ms: int, rand40: int) -> str:
    """The first 18 characters of a ULID of millisecond ``ms`` whose random part starts with
    ``rand40``: 90 bits, the top two zero, as ``encode`` would write them."""
    value = (min(max(ms, 0), _MAX_MS) << 40) | rand40
    p = _PAIRS
    return (p[value >> 80] + p[(value >> 70) & 1023] + p[(value >> 60) & 1023]
            + p[(value >> 50) & 1023] + p[(value >> 40) & 1023] + p[(value >> 30) & 1023]
            + p[(value >> 20) & 1023] + p[(value >> 10) & 1023] + p[value & 1023])


class RequestIds:
    """Mints request ids with the active key and recognises those of every key."""

    def __init__(self, masters: list[bytes]) -> None:
        self._keys = [hmac.new(m, _PURPOSE, hashlib.sha256).digest() for m in masters]

    @classmethod
    def of(cls, keyring: Keyring) -> RequestIds:
        """Ids any process sharing ``keyring`` recognises (the active key first)."""
        active = keyring.keys[keyring.active]
        return cls([active, *(k for k in keyring.keys.values() if k != active)])

    @classmethod
    def of_process(cls) -> RequestIds:
        """Ids only this process recognises (a hub without a keyring: tests, tools)."""
        return cls([_PROCESS_KEY])

    def new(self) -> str:
        return self.new_call(0)[0]

    def new_call(self, lease_ms: int) -> tuple[str, str]:
        """A request id, and a lease id expiring at ``lease_ms``, from one draw of 120 random
        bits: 40 fresh ones for the request id (``new_id``s of one millisecond would share
        their first 22 characters, and only 18 are kept) and 80 for the lease, a ULID of its
        expiry the request id says nothing about."""
        rand = random_bits120()
        head = _head(now_ms(), rand & _LOW40)
        lease = encode((min(max(lease_ms, 0), _MAX_MS) << 80) | (rand >> 40))
        return head + _tag(self._keys[0], head), lease

    def issued(self, request_id: str) -> bool:
        """Whether a process of this deployment made this id."""
        if len(request_id) != _HEAD + 8:
            return False
        head, tag = request_id[:_HEAD], request_id[_HEAD:]
        return any(hmac.compare_digest(_tag(key, head), tag) for key in self._keys)
