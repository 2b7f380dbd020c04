"""Canonical JSON: the fast path gives the same bytes as the ``jcs`` package for any JSON value —
strings of any characters, integers large and small, floats, keys that sort differently by
UTF-16 unit than by code point."""

from __future__ import annotations

from typing import Any

import jcs
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.canonical import canonical

SCALARS = (st.none() | st.booleans() | st.text()
           | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=5), max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(JSON)
def test_any_json_value_encodes_as_jcs_does(value: Any) -> None:
    assert canonical(value) == jcs.canonicalize(value)


def test_the_cases_msgspec_alone_would_get_wrong() -> None:
    for value in [1.0, -0.0, 1e21, 1e16, 2**53 + 1, -(2**64),
                  {"\ue000": 1, "\U0001f600": 2},  # UTF-16 order differs from code point order
                  {"b": [{"z": 1, "a": 2.5}], "a": "\u2028\x00\x7f"}]:
        assert canonical(value) == jcs.canonicalize(value)


def test_a_plain_body_is_compact_with_sorted_keys() -> None:
    assert canonical({"b": [1, None, True], "a": {"y": "é", "x": -3}}) == \
        b'{"a":{"x":-3,"y":"\xc3\xa9"},"b":[1,null,true]}'
