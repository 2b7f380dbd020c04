"""``sealing.DataSeals``: a request's event data sealed in one loop, in either form, opens back
to what was sealed, only for its own event, with a nonce no other value got."""

from __future__ import annotations

import base64
import os

import pytest

from tidings.crypto import NONCE_BYTES, Keyring
from tidings.errors import EncryptionError
from tidings.sealing import BINARY_MARK, JSON_MARK, DataSeals, event_aad, is_sealed, opened

ENV = "01JENVIRONMENT0000000000000"
IDS = ["01JEVENT000000000000000001", "01JEVENT000000000000000002", "01JEVENT000000000000000003"]
DATAS = [b'{"n":1}', b'{"n":"\\u001fts1 x"}', b"{}"]


def _seals() -> DataSeals:
    seals = DataSeals()
    seals.use(Keyring({"k1": os.urandom(32)}, "k1"))
    return seals


def _nonce(sealed: bytes) -> bytes:
    """The nonce a sealed value was made with (binary: after the key id; text: first in the
    base64 of nonce and ciphertext)."""
    if sealed.startswith(BINARY_MARK):
        return sealed[3 + int.from_bytes(sealed[1:3], "big"):][:NONCE_BYTES]
    return base64.b64decode(sealed[:-1].rsplit(b" ", 1)[1])[:NONCE_BYTES]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "text"])
def test_a_requests_data_opens_back_for_its_own_event_only(binary: bool) -> None:
    seals = _seals()
    sealed = seals.events_data(ENV, 3, IDS, DATAS, binary=binary)
    assert all(s.startswith(BINARY_MARK if binary else JSON_MARK) for s in sealed)
    assert all(is_sealed(s) for s in sealed) and not any(is_sealed(d) for d in DATAS)
    assert [seals.open_json(s, event_aad(i)) for s, i in zip(sealed, IDS, strict=True)] == DATAS
    with pytest.raises(EncryptionError):
        seals.open_json(sealed[0], event_aad(IDS[1]))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "text"])
def test_a_request_the_nonce_field_cannot_hold_takes_a_new_field(binary: bool) -> None:
    seals = _seals()
    fixed = os.urandom(8)
    seals._field, seals._used = int.from_bytes(fixed, "big") << 32, (1 << 32) - 2
    first = seals.events_data(ENV, 1, IDS[:2], DATAS[:2], binary=binary)  # the last two
    assert [_nonce(s) for s in first] == [fixed + b"\xff\xff\xff\xfe", fixed + b"\xff" * 4]
    sealed = seals.events_data(ENV, 1, IDS, DATAS, binary=binary)
    nonces = [_nonce(s) for s in sealed]
    assert len(set(nonces)) == 3 and not any(n.startswith(fixed) for n in nonces)
    assert [n[8:] for n in nonces] == [bytes(4), b"\0\0\0\1", b"\0\0\0\2"]
    assert [seals.open_json(s, event_aad(i)) for s, i in zip(sealed, IDS, strict=True)] == DATAS


def test_values_sealed_one_by_one_and_by_request_never_share_a_nonce() -> None:
    seals = _seals()
    nonces = [seals._nonce()]
    nonces += [_nonce(s) for s in seals.events_data(ENV, 1, IDS, DATAS, binary=True)]
    nonces.append(seals._nonce())
    assert len(set(nonces)) == 5 and len({n[:8] for n in nonces}) == 1


def test_opened_passes_clear_values_through() -> None:
    assert opened(b'{"n":1}', event_aad(IDS[0])) == b'{"n":1}'
    assert opened('{"n":1}', event_aad(IDS[0])) == '{"n":1}'
    assert opened(None, event_aad(IDS[0])) is None
