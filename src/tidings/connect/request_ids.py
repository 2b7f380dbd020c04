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
from tidings.ids import now_ms, stamped_id

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PURPOSE = b"tidings connect request id v1"
_HEAD = 18  # characters kept from a fresh ULID: its time and 40 random bits
_TAG_BYTES = 5  # 40 bits: eight characters
_PROCESS_KEY = secrets.token_bytes(32)


def _tag(key: bytes, head: str) -> str:
    # Keyed BLAKE2b is a MAC in one call: a quarter of an HMAC's cost, on every call made.
    value = int.from_bytes(hashlib.blake2b(head.encode(), key=key,
                                           digest_size=_TAG_BYTES).digest())
    return "".join(_ALPHABET[(value >> shift) & 31] for shift in range(35, -1, -5))


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
        # Fresh random bits for each id: ``new_id``s of one millisecond share their first 22
        # characters, and only the first 18 are kept.
        head = stamped_id(now_ms())[:_HEAD]
        return head + _tag(self._keys[0], head)

    def issued(self, request_id: str) -> bool:
        """Whether a process of this deployment made this id."""
        if len(request_id) != _HEAD + 8:
            return False
        head, tag = request_id[:_HEAD], request_id[_HEAD:]
        return any(hmac.compare_digest(_tag(key, head), tag) for key in self._keys)
