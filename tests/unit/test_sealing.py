"""``sealing.DataSeals``: a request's event data sealed in one loop, in either form, opens back
to what was sealed, only for its own event, with a nonce no other value got; values name their
key by a reference once it is in the database, which other processes find there, and values
naming their key in full still open."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tidings.crypto import NONCE_BYTES, Keyring
from tidings.errors import EncryptionError
from tidings.sealing import (
    BINARY_MARK,
    JSON_MARK,
    REF_BYTES,
    DataSeals,
    event_aad,
    is_sealed,
    key_ref,
    opened,
)

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


class _Tx:
    """``sealing_keys`` as a transaction sees it, in a dict (reference -> name)."""

    def __init__(self, rows: dict[int, tuple[str, str, int]]) -> None:
        self.rows = rows
        self.later: list[Callable[[], None]] = []

    def run(self, name: str, params: Sequence[Any]) -> int:
        assert name == "sealing_key_save"
        ref, kid, env_id, generation = params
        self.rows.setdefault(ref, (kid, env_id, generation))
        return 1

    def one(self, name: str, params: Sequence[Any]) -> tuple[str, str, int] | None:
        assert name == "sealing_key_of"
        return self.rows.get(params[0])

    def all(self, name: str) -> list[tuple[Any, ...]]:
        assert name == "sealing_keys_all"
        return [(ref, *key) for ref, key in self.rows.items()]

    def after_commit(self, fn: Callable[[], None]) -> None:
        self.later.append(fn)

    def commit(self) -> None:
        for fn in self.later:
            fn()


class _Storage:
    def __init__(self, rows: dict[int, tuple[str, str, int]]) -> None:
        self.rows = rows
        self.asked = 0

    def read_now(self, fn: Callable[[Any], Any]) -> Any:
        self.asked += 1
        return fn(_Tx(self.rows))


def _both(seals: DataSeals, generation: int = 1) -> list[bytes]:
    """A value sealed in binary and one as text."""
    return [seals.events_data(ENV, generation, IDS[:1], DATAS[:1], binary=binary)[0]
            for binary in (True, False)]


def _named_in_full(sealed: bytes) -> bool:
    if sealed.startswith(BINARY_MARK):
        return int.from_bytes(sealed[1:3], "big") > 0
    return not sealed.startswith(JSON_MARK + b"#")


def test_a_key_is_named_in_full_until_its_reference_is_committed_then_by_it() -> None:
    seals, rows = _seals(), {}
    before = _both(seals)
    assert all(_named_in_full(s) for s in before) and not seals.registered(ENV, 1)
    tx = _Tx(rows)
    assert seals.register(tx, ENV, 1)
    assert all(_named_in_full(s) for s in _both(seals))  # not committed yet
    tx.commit()
    assert seals.registered(ENV, 1)
    binary, text = after = _both(seals)
    ref = key_ref("k1", ENV, 1)
    assert rows == {ref: ("k1", ENV, 1)}
    assert binary[:3 + REF_BYTES] == BINARY_MARK + b"\0\0" + ref.to_bytes(REF_BYTES, "big")
    assert len(binary) == 3 + REF_BYTES + NONCE_BYTES + len(DATAS[0]) + 16
    assert text.startswith(JSON_MARK + f"#{ref:012x} ".encode())
    # Both forms open, named in full (as every value sealed before references did) or not.
    assert [seals.open_json(s, event_aad(IDS[0])) for s in before + after] == [DATAS[0]] * 4


def test_a_transaction_that_seals_registers_the_key_and_names_it_by_reference() -> None:
    seals, rows = _seals(), {}
    tx = _Tx(rows)
    sealed = seals.seal_json(ENV, 2, b'{"n":1}', event_aad(IDS[0]), tx)
    assert sealed.startswith(JSON_MARK + b"#") and key_ref("k1", ENV, 2) in rows
    assert seals.open_json(sealed, event_aad(IDS[0])) == b'{"n":1}'
    # Other writes name it in full until that transaction commits.
    assert _named_in_full(seals.seal_json(ENV, 2, b"{}", event_aad(IDS[0])))
    tx.commit()
    assert not _named_in_full(seals.seal_json(ENV, 2, b"{}", event_aad(IDS[0])))


def test_another_process_finds_a_reference_in_the_database_at_start_or_when_met() -> None:
    writer, rows = _seals(), {}
    tx = _Tx(rows)
    writer.register(tx, ENV, 1)
    tx.commit()
    sealed = _both(writer)
    keyring = Keyring(dict(writer._masters), "k1")

    met = DataSeals()
    met.use(keyring)
    with pytest.raises(EncryptionError, match="no database of this process knows"):
        met.open_json(sealed[0], event_aad(IDS[0]))
    storage = _Storage(rows)
    met.read_with(storage.read_now)
    assert [met.open_json(s, event_aad(IDS[0])) for s in sealed] == [DATAS[0]] * 2
    assert storage.asked == 1  # believed from then on
    assert met.registered(ENV, 1)  # ... and named by reference when it seals, too

    started = DataSeals()
    started.use(keyring)
    started.load(_Tx(rows))
    assert [started.open_json(s, event_aad(IDS[0])) for s in sealed] == [DATAS[0]] * 2
    assert started.registered(ENV, 1)


def test_a_name_that_does_not_hash_to_its_reference_is_not_believed() -> None:
    writer, rows = _seals(), {}
    tx = _Tx(rows)
    writer.register(tx, ENV, 1)
    tx.commit()
    sealed = _both(writer)[0]
    reader = DataSeals()
    reader.use(Keyring(dict(writer._masters), "k1"))
    ref = key_ref("k1", ENV, 1)
    lying = _Storage({ref: ("k1", ENV, 2)})
    reader.read_with(lying.read_now)
    with pytest.raises(EncryptionError, match="no database of this process knows"):
        reader.open_json(sealed, event_aad(IDS[0]))
    assert lying.asked == 1
    reader.load(_Tx({ref: ("k1", ENV, 2)}))
    assert not reader.registered(ENV, 2)


def test_a_reference_the_database_has_for_another_key_leaves_the_key_named_in_full() -> None:
    seals = _seals()
    ref = key_ref("k1", ENV, 1)
    rows = {ref: ("k0", "01JANOTHERENVIRONMENT00000", 9)}  # as if the two hashed alike
    tx = _Tx(rows)
    assert not seals.register(tx, ENV, 1)
    tx.commit()
    assert rows == {ref: ("k0", "01JANOTHERENVIRONMENT00000", 9)}
    assert seals.registered(ENV, 1)  # nothing more to register: it never will be
    sealed = [*_both(seals), seals.seal_json(ENV, 1, b"{}", event_aad(IDS[0]), _Tx(rows))]
    assert all(_named_in_full(s) for s in sealed)
    assert [seals.open_json(s, event_aad(IDS[0])) for s in sealed] == [DATAS[0]] * 2 + [b"{}"]
