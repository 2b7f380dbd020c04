"""Canonical JSON (RFC 8785, "JCS"): the bytes that get signed, and hashed.

The ``jcs`` package is exact but pure Python, and the HTTP driver canonicalises the body of
every call. Most bodies hold only strings, small integers, booleans, nulls and ASCII keys; for
those, msgspec's compact encoding with sorted keys is already canonical, byte for byte (strings
are escaped the same way, and keys in ASCII sort alike by code point and by UTF-16 unit). The
rest — floats (ES6 number formatting), integers past 2**53, non-ASCII keys — go through ``jcs``.
"""

from __future__ import annotations

from typing import Any

import jcs
import msgspec

_SAFE_INTEGER = 2**53
_encode = msgspec.json.Encoder(order="sorted").encode


def _plain(value: Any) -> bool:
    """Whether msgspec's sorted encoding of ``value`` is its canonical form."""
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is dict:
            for key in item:
                if type(key) is not str or not key.isascii():
                    return False
            pending.extend(item.values())
        elif kind is list:
            pending.extend(item)
        elif kind is int:
            if not -_SAFE_INTEGER <= item <= _SAFE_INTEGER:
                return False
        else:
            return False
    return True


def canonical(value: Any) -> bytes:
    """``value`` (JSON data: dicts, lists, strings, numbers, booleans, None) as JCS bytes."""
    if _plain(value):
        return _encode(value)
    encoded: bytes = jcs.canonicalize(value)
    return encoded
