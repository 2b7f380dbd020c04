"""Credentials are compared as bytes: a malformed one (non-ASCII, not a string at all) is a
mismatch, never a ``TypeError`` from ``hmac.compare_digest``."""

from __future__ import annotations

from typing import Any

import pytest

from tidings.signing import bearer_matches, hash_key, sign, verify

KEY = "signkey-prod-" + "ab" * 32
BODY = b'{"ok": true}'


def test_a_bearer_token_matches_plain_or_hashed_with_or_without_prefix() -> None:
    assert bearer_matches(KEY, [KEY])
    assert bearer_matches(hash_key(KEY), [KEY])
    assert bearer_matches(hash_key(KEY).removeprefix("signkey-prod-"), [KEY])
    assert not bearer_matches("signkey-prod-" + "cd" * 32, [KEY])


@pytest.mark.parametrize("token", ["clé-é", "signkey-prod-ünïcödé", "\u00ff" * 64, "😀",
                                   "\udcff"])
def test_a_non_ascii_bearer_token_is_a_mismatch(token: str) -> None:
    assert bearer_matches(token, [KEY]) is False


def test_a_signature_verifies_and_a_wrong_one_does_not() -> None:
    header = sign(BODY, KEY, stamp=1_700_000_000)

    assert verify(BODY, header, [KEY], now=1_700_000_000)
    assert not verify(BODY + b" ", header, [KEY], now=1_700_000_000)
    assert not verify(BODY, header, [KEY], now=1_700_000_000 + 3600)


@pytest.mark.parametrize("header", [
    "t=1700000000&s=ünïcödé",
    "t=1700000000&s=" + "\u00e9" * 64,
    "t=1700000000&s=😀",
    "t=" + "9" * 5000 + "&s=00",
    "s=00",
    "garbage",
    12345,
    ["t=1", "s=2"],
])
def test_a_malformed_signature_is_a_mismatch(header: Any) -> None:
    assert verify(BODY, header, [KEY], now=1_700_000_000) is False
