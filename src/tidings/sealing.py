"""Sealing of event data, event ids and outputs at rest: an environment's ``encrypt_data``.

With it on, an event's ``data`` and its ``id`` (the idempotency key), the outputs of steps and
the outputs of runs are stored as AES-256-GCM ciphertexts, so a stolen database file (or dump)
shows names and times, not payloads. The event id is also stored as a keyed hash (a blind
index, ``UserVault.key_index``) in ``event_idempotency``: duplicates are still found.

Each environment has its own key, derived from a master key of the keyring (HMAC-SHA256 of the
environment id and a generation) and named in every ciphertext (master key id, environment,
generation). ``tidings keys rotate-encryption`` moves the environment to a new generation: new
writes use the new key, old ciphertexts keep opening under the key they name. Rotating the
master key (``--master``) does the same for every environment at once. Old ciphertexts are not
sealed again: what is stored stays readable for as long as the master key it names is kept.

A sealed JSON value is itself JSON (a string marked by a control character no payload starts
with), so it fits every column that holds JSON on both databases and is told from plaintext by
its first bytes: rows stored before the setting was switched on, or after it was switched off,
read as they are. That check on read, and one look at a per-environment flag on write, is all
the setting costs when it is off.

Event data sent to ``POST /e/{key}`` on SQLite is sealed in binary instead (``events_data(...,
binary=True)``): its column is a BLOB, and base64, the JSON string's quotes and a third of the
row were what sealing cost ingest beyond the cipher itself. The binary form starts with a NUL
byte (``BINARY_MARK``), which JSON text never does, then the key id's length (two bytes) and
text, the nonce and the ciphertext; every reader of a JSON column takes both forms
(``is_sealed``, ``opened``, ``DataSeals.open_json``). PostgreSQL's ``data`` is ``json``: there
the text form stays.

Rows become values in many places far from the process's wiring (``event_from_row``,
``Run.from_row``, ``StepRow.from_row``), so the master keys are held process-wide here
(``SEALS``, given them by ``Core.start``): a process opens what any keyring it was started with
can open. Whether an environment seals, and under which generation, is one of its settings
(``data_sealing``), believed for a few seconds (``events/env_settings.py``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import threading
from collections.abc import Iterable, Sequence
from typing import overload

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tidings.crypto import NONCE_BYTES, Keyring
from tidings.errors import EncryptionError

_TAG = "\x1fts1 "
JSON_MARK = b'"\\u001fts1 '  # how a sealed JSON value starts (the tag, JSON-escaped)
BINARY_MARK = b"\x00"  # how a JSON value sealed in binary starts (no JSON text does)
SEALED_BYTES = (JSON_MARK, BINARY_MARK)  # how a sealed JSON value starts as bytes
TEXT_MARK = _TAG  # how a sealed text column (the event id) starts
SEALED_JSON = JSON_MARK.decode()  # how a sealed JSON column's text starts
_b64 = base64.b64encode
_unb64 = base64.b64decode
_b2a = binascii.b2a_base64


class DataSeals:
    """The master keys of this process, and the ciphers derived from them."""

    def __init__(self) -> None:
        self._masters: dict[str, bytes] = {}
        self._active: str | None = None
        self._ciphers: dict[tuple[str, str, int], AESGCM] = {}
        self._sealers: dict[tuple[str, int], tuple[AESGCM, bytes]] = {}
        self._lock = threading.Lock()
        self._field, self._used = _new_field(), 0

    def use(self, keyring: Keyring) -> None:
        """Open with every key of ``keyring`` from now on; seal with its active key."""
        self._masters.update(keyring.keys)
        if keyring.active != self._active:
            self._active = keyring.active
            self._sealers.clear()

    # -- ciphers -----------------------------------------------------------------------------

    def _cipher(self, kid: str, env_id: str, generation: int) -> AESGCM:
        cipher = self._ciphers.get((kid, env_id, generation))
        if cipher is None:
            master = self._masters.get(kid)
            if master is None:
                raise EncryptionError(f"ciphertext names encryption key {kid!r}, which is not "
                                      "configured")
            key = hmac.new(master, f"tidings-env-data\x00{env_id}\x00{generation}".encode(),
                           hashlib.sha256).digest()
            cipher = self._ciphers[(kid, env_id, generation)] = AESGCM(key)
        return cipher

    def _sealer(self, env_id: str, generation: int) -> tuple[AESGCM, bytes]:
        """The cipher new writes of ``env_id`` use, and the key id they are prefixed with
        (``env_id generation kid``, and a space)."""
        found = self._sealers.get((env_id, generation))
        if found is None:
            kid = self._active
            if kid is None:
                raise EncryptionError("no encryption key is configured in this process")
            found = (self._cipher(kid, env_id, generation),
                     f"{env_id} {generation} {kid} ".encode())
            self._sealers[(env_id, generation)] = found
        return found

    def _invocations(self, count: int) -> range:
        """``count`` nonces no other call gets, as numbers (``to_bytes(NONCE_BYTES)``): NIST SP
        800-38D's deterministic nonces, a random 64-bit field per process and a 32-bit counter.
        As cheap as a counter (a system call for each random nonce costs as much as the
        encryption), and no two processes sharing a key are likely to pick the same field
        (2**-64 a pair). A request takes its events' nonces at once; one that does not fit in
        what is left of the field takes them from a new one."""
        with self._lock:  # transactions seal from several threads
            used = self._used
            if used + count > 1 << 32:
                self._field, used = _new_field(), 0
            self._used = used + count
            first = self._field + used
        return range(first, first + count)

    def _nonce(self) -> bytes:
        return self._invocations(1)[0].to_bytes(NONCE_BYTES, "big")

    def _forked(self) -> None:
        # A child must never use the nonces its parent may still use (nor a lock it held).
        self._lock = threading.Lock()
        self._field, self._used = _new_field(), 0

    def events_data(self, env_id: str, generation: int, event_ids: Sequence[str],
                    datas: Iterable[bytes], *, binary: bool) -> list[bytes]:
        """The data of one request's events sealed, with what they share looked up once
        (ingest's hot path: per event, this is all that sealing costs): as ``seal_json`` does,
        or in binary (``BINARY_MARK``) for a binary column. Comprehensions, not a loop with
        ``append``: a tenth of a microsecond an event, of about 0.9."""
        cipher, head = self._sealer(env_id, generation)
        encrypt = cipher.encrypt
        nonces = [n.to_bytes(NONCE_BYTES, "big") for n in self._invocations(len(event_ids))]
        if binary:
            key_id = head[:-1]
            start = BINARY_MARK + len(key_id).to_bytes(2, "big") + key_id
            return [start + nonce + encrypt(nonce, data, b"event\x00" + event_id.encode())
                    for nonce, event_id, data in zip(nonces, event_ids, datas, strict=True)]
        start = JSON_MARK + head
        return [start + _b2a(nonce + encrypt(nonce, data, b"event\x00" + event_id.encode()),
                             newline=False) + b'"'
                for nonce, event_id, data in zip(nonces, event_ids, datas, strict=True)]

    def _seal(self, env_id: str, generation: int, plain: bytes, aad: bytes) -> bytes:
        cipher, head = self._sealer(env_id, generation)
        nonce = self._nonce()
        return head + _b64(nonce + cipher.encrypt(nonce, plain, aad))

    def seal_text(self, env_id: str, generation: int, plain: bytes, aad: bytes) -> str:
        """Bytes sealed, as text (``TEXT_MARK``, the key id, the ciphertext in base64)."""
        return _TAG + self._seal(env_id, generation, plain, aad).decode()

    def seal_json(self, env_id: str, generation: int, plain: bytes | str, aad: bytes) -> bytes:
        """A JSON value sealed: a JSON string holding the ciphertext (``JSON_MARK`` ...)."""
        raw = plain.encode() if isinstance(plain, str) else plain
        return JSON_MARK + self._seal(env_id, generation, raw, aad) + b'"'

    def _open(self, sealed: bytes, aad: bytes) -> bytes:
        head, _, body = sealed.rpartition(b" ")
        env_id, generation, kid = head.decode().split(" ", 2)
        blob = _unb64(body)
        try:
            return self._cipher(kid, env_id, int(generation)).decrypt(
                blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            raise EncryptionError() from None

    def open_text(self, text: str, aad: bytes) -> bytes:
        return self._open(text[len(_TAG):].encode(), aad)

    def open_json(self, value: bytes | str, aad: bytes) -> bytes:
        """The JSON a sealed value (``is_sealed``) holds, in either form."""
        raw = value.encode() if isinstance(value, str) else value
        if raw.startswith(BINARY_MARK):
            return self._open_binary(raw, aad)
        return self._open(raw[len(JSON_MARK):-1], aad)

    def _open_binary(self, sealed: bytes, aad: bytes) -> bytes:
        size = int.from_bytes(sealed[1:3], "big")
        env_id, generation, kid = sealed[3:3 + size].decode().split(" ", 2)
        blob = memoryview(sealed)[3 + size:]
        try:
            return self._cipher(kid, env_id, int(generation)).decrypt(
                blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            raise EncryptionError() from None


def is_sealed(value: bytes | str) -> bool:
    """Whether a JSON column's value is sealed (the check every read of one makes)."""
    if isinstance(value, str):
        return value.startswith(SEALED_JSON)
    return value.startswith(SEALED_BYTES)


@overload
def opened(value: None, aad: bytes) -> None: ...
@overload
def opened(value: bytes, aad: bytes) -> bytes: ...
@overload
def opened(value: bytes | str, aad: bytes) -> bytes | str: ...
@overload
def opened(value: bytes | str | None, aad: bytes) -> bytes | str | None: ...
def opened(value: bytes | str | None, aad: bytes) -> bytes | str | None:
    """A JSON column's value as plaintext JSON, opened if it was sealed."""
    if value is None or not is_sealed(value):
        return value
    return SEALS.open_json(value, aad)


def opened_text(text: str | None, aad: bytes) -> str | None:
    """A text column's value (``seal_text``) as plaintext, opened if it was sealed."""
    if text is None or not text.startswith(TEXT_MARK):
        return text
    return SEALS.open_text(text, aad).decode()


def open_key(key: str | None, event_id: str) -> str | None:
    """An event's ``id`` (idempotency key) as sent, opened if it was sealed."""
    return opened_text(key, key_aad(event_id))


STEP_AAD = b"step"
RUN_AAD = b"run"
PAUSE_AAD = b"pause"


def event_aad(event_id: str) -> bytes:
    return b"event\x00" + event_id.encode()


def key_aad(event_id: str) -> bytes:
    return b"event-id\x00" + event_id.encode()


def context_aad(event_id: str) -> bytes:
    return b"event-context\x00" + event_id.encode()


def meta_aad(event_id: str) -> bytes:
    return b"event-meta\x00" + event_id.encode()


def task_aad(column: str, task_id: str) -> bytes:
    """A Trigger.dev v2 task's ``params``, ``output`` or ``error``."""
    return f"trigger-task-{column}\x00{task_id}".encode()


def status_aad(column: str, run_id: str, key: str) -> bytes:
    """A Trigger.dev v2 status's ``data`` or ``history``."""
    return f"trigger-status-{column}\x00{run_id}\x00{key}".encode()


def store_aad(env_id: str, key: str) -> bytes:
    """A Trigger.dev v2 key-value store value (``io.store``), by environment and key."""
    return f"trigger-store\x00{env_id}\x00{key}".encode()


def _new_field() -> int:
    return int.from_bytes(os.urandom(8), "big") << 32


SEALS = DataSeals()
os.register_at_fork(after_in_child=SEALS._forked)

