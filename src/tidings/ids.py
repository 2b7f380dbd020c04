"""Event and run ids: ULIDs, and the deterministic ids of the ``x-inngest-event-id-seed`` header.

An SDK that retries a send repeats the seed header, so the server derives the same ids and the
retry cannot store a second copy under a new id.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
import time

from ulid import ULID

_MAX_MS = (1 << 48) - 1


def now_ms() -> int:
    return time.time_ns() // 1_000_000


_last = [0, 0]
_lock = threading.Lock()
_RANDOM_BITS = 80


def new_id(ms: int | None = None) -> str:
    """A fresh ULID for the given millisecond (default: now).

    Ids made in one process within one millisecond increase (the random part counts up), so
    events of one request keep their order.
    """
    stamp = now_ms() if ms is None else ms
    with _lock:
        if stamp == _last[0] and _last[1] + 1 < (1 << _RANDOM_BITS):
            rand = _last[1] + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big") >> 1
        _last[0], _last[1] = stamp, rand
    return str(ULID.from_int((stamp << _RANDOM_BITS) | rand))


def floor_id(ms: int) -> str:
    """The smallest ULID of a millisecond: ``id >= floor_id(t)`` means "created at or after t"."""
    ms = min(max(ms, 0), _MAX_MS)
    return str(ULID.from_bytes(ms.to_bytes(6, "big") + bytes(10)))


class IdSeed:
    """A parsed ``x-inngest-event-id-seed`` header: ``"<millis>,<base64 of 10 bytes>"``."""

    __slots__ = ("_head", "_ms", "_tail")

    def __init__(self, ms: int, entropy: bytes) -> None:
        self._ms = ms
        self._head = ms.to_bytes(6, "big") + entropy[:6]
        self._tail = int.from_bytes(entropy[6:10], "big")

    @classmethod
    def parse(cls, header: str | None) -> IdSeed | None:
        """The seed, or None when the header is absent or malformed (random ids are used then)."""
        if not header:
            return None
        millis, sep, encoded = header.partition(",")
        if not sep:
            return None
        try:
            ms = int(millis)
            entropy = base64.b64decode(encoded.strip(), validate=True)
        except (ValueError, binascii.Error):
            return None
        if not 0 < ms <= _MAX_MS or len(entropy) != 10:
            return None
        return cls(ms, entropy)

    def id_at(self, index: int) -> str:
        """The id of the event at 1-based ``index`` in the request."""
        tail = (self._tail + index) & 0xFFFFFFFF
        return str(ULID.from_bytes(self._head + tail.to_bytes(4, "big")))
