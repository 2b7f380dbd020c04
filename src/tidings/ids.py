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

_MAX_MS = (1 << 48) - 1
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32, as ULIDs use it
# Two characters per 10 bits: a ULID (130 bits, the top two zero) is 13 lookups.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def encode(value: int) -> str:
    """The 26-character ULID text of a 128-bit integer."""
    p = _PAIRS
    return (p[value >> 120] + p[(value >> 110) & 1023] + p[(value >> 100) & 1023]
            + p[(value >> 90) & 1023] + p[(value >> 80) & 1023] + p[(value >> 70) & 1023]
            + p[(value >> 60) & 1023] + p[(value >> 50) & 1023] + p[(value >> 40) & 1023]
            + p[(value >> 30) & 1023] + p[(value >> 20) & 1023] + p[(value >> 10) & 1023]
            + p[value & 1023])


_RANDOM_BITS = 80
_LOW_BITS = 20  # ids of one millisecond share all but their last 4 characters, mostly
_lock = threading.Lock()
# (millisecond, last random part, high part it was encoded for, those first 22 characters)
_last: list[tuple[int, int, int, str]] = [(0, 0, -1, "")]


class _Entropy:
    """Random bytes drawn 4 KiB at a time: a system call per id would also hand the GIL to other
    threads (the SQLite writer) in the middle of a request. Used under ``_lock``."""

    __slots__ = ("at", "data")

    def __init__(self) -> None:
        self.data = b""
        self.at = 0

    def bits79(self) -> int:
        """79 random bits: an id's random part, with room to count up from it."""
        if self.at + 10 > len(self.data):
            self.data, self.at = os.urandom(4096), 0
        start = self.at
        self.at = start + 10
        return int.from_bytes(self.data[start:start + 10], "big") >> 1

    def bits120(self) -> int:
        """120 random bits (15 bytes), for two ids drawn at once."""
        if self.at + 15 > len(self.data):
            self.data, self.at = os.urandom(4096), 0
        start = self.at
        self.at = start + 15
        return int.from_bytes(self.data[start:start + 15], "big")


_entropy = _Entropy()


def _forget() -> None:
    """A forked child must not count on from its parent's ids, nor reuse its random bytes."""
    _last[0] = (0, 0, -1, "")
    _entropy.data, _entropy.at = b"", 0


os.register_at_fork(after_in_child=_forget)


def new_ids(count: int, ms: int | None = None) -> list[str]:
    """``count`` fresh ULIDs for the given millisecond (default: now), in increasing order.

    Ids made in one process within one millisecond increase (the random part counts up from a
    random start), so events of one request keep their order. The first 22 characters are
    cached, so an id costs two table lookups.
    """
    stamp = now_ms() if ms is None else ms
    p = _PAIRS
    with _lock:
        last_ms, rand, high, head = _last[0]
        if stamp != last_ms or rand + count >= (1 << _RANDOM_BITS):
            rand = _entropy.bits79()
            high = -1
        ids = []
        for _ in range(count):
            rand += 1
            if rand >> _LOW_BITS != high:
                high = rand >> _LOW_BITS
                head = encode((stamp << _RANDOM_BITS) | rand)[:22]
            ids.append(head + p[(rand >> 10) & 1023] + p[rand & 1023])
        _last[0] = (stamp, rand, high, head)
    return ids


def new_id(ms: int | None = None) -> str:
    """A fresh ULID for the given millisecond (default: now); see ``new_ids``."""
    return new_ids(1, ms)[0]


def stamped_id(ms: int) -> str:
    """A ULID of the millisecond ``ms`` with fresh random bits, outside ``new_ids``'s rising
    sequence: for a time that is not now (a lease's expiry), which would make the next id of
    ``new_ids`` encode all of its characters again."""
    with _lock:
        rand = _entropy.bits79()
    return encode((min(max(ms, 0), _MAX_MS) << _RANDOM_BITS) | rand)


def random_bits120() -> int:
    """120 fresh random bits from the same pool as the ids' (one draw for two ids' worth)."""
    with _lock:
        return _entropy.bits120()


def floor_id(ms: int) -> str:
    """The smallest ULID of a millisecond: ``id >= floor_id(t)`` means "created at or after t"."""
    ms = min(max(ms, 0), _MAX_MS)
    return encode(ms << _RANDOM_BITS)


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
        return encode(int.from_bytes(self._head + tail.to_bytes(4, "big"), "big"))
