"""Encryption of ``event.user`` at rest (AES-256-GCM).

Keys form two layers:

* **master keys** (the keyring) come from ``TIDINGS_ENCRYPTION_KEY`` or, in dev, a file under the
  data directory. Each has a short id; the first is active, the others stay for reading.
* **data keys**, one per user (``user.external_id``) and environment, are random, stored in the
  database wrapped by a master key, and found by a *blind index*: an HMAC of the external id whose
  key is itself stored wrapped. Deleting a user's data key erases every ``user`` object ever
  encrypted for them (crypto-shredding) without touching the event log.

A ``user`` without ``external_id`` is encrypted directly under the active master key. Every
ciphertext is bound to its event id (GCM associated data), so it cannot be moved to another row.
A ciphertext under a data key names the key by a fingerprint (a hash of the key, which says
nothing of it): after an erasure a new event of the same person gets a new key, and the old
ciphertexts are then told apart from damaged ones (they read as ``{}``, not as an error).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tidings.errors import ConfigError, EncryptionError

KEY_BYTES = 32
NONCE_BYTES = 12
_MASTER = b"M"
_USER = b"U"  # data key, no fingerprint (written before erasure existed; still read)
_USER_KEYED = b"K"  # data key fingerprint (8 bytes), nonce, ciphertext
FINGERPRINT_BYTES = 8


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def new_key_text() -> str:
    """A fresh master key in the ``kid:base64`` form ``TIDINGS_ENCRYPTION_KEY`` takes."""
    key = secrets.token_bytes(KEY_BYTES)
    return f"{key_id(key)}:{base64.b64encode(key).decode()}"


@dataclass(frozen=True, slots=True)
class Keyring:
    """Master keys by id; ``active`` encrypts, all of them decrypt."""

    keys: dict[str, bytes]
    active: str

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """Read ``kid:base64[,kid:base64...]`` (or one bare base64 key); the first is active."""
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            kid, sep, encoded = part.rpartition(":")
            try:
                key = base64.b64decode(encoded, validate=True)
            except ValueError:
                raise ConfigError("encryption key is not valid base64") from None
            if len(key) != KEY_BYTES:
                raise ConfigError(f"encryption key must be {KEY_BYTES} bytes, got {len(key)}")
            kid = kid if sep else key_id(key)
            keys[kid] = key
            order.append(kid)
        if not order:
            raise ConfigError("no encryption key given")
        return cls(keys, order[0])

    def text(self) -> str:
        ordered = [self.active, *(k for k in self.keys if k != self.active)]
        return ",".join(f"{k}:{base64.b64encode(self.keys[k]).decode()}" for k in ordered)

    def rotated(self) -> Keyring:
        """A keyring with a new active key; the old keys stay for reading."""
        fresh = Keyring.parse(new_key_text())
        return Keyring({**self.keys, **fresh.keys}, fresh.active)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        kid = self.active.encode()
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.keys[self.active]).encrypt(nonce, plaintext, aad)
        return bytes([len(kid)]) + kid + nonce + sealed

    def open(self, blob: bytes, aad: bytes) -> bytes:
        size = blob[0]
        kid = blob[1 : 1 + size].decode()
        key = self.keys.get(kid)
        if key is None:
            raise EncryptionError(f"ciphertext names encryption key {kid!r}, which is not "
                                  "configured")
        nonce = blob[1 + size : 1 + size + NONCE_BYTES]
        try:
            return AESGCM(key).decrypt(nonce, blob[1 + size + NONCE_BYTES :], aad)
        except InvalidTag:
            raise EncryptionError() from None

    def key_of(self, blob: bytes) -> str:
        return blob[1 : 1 + blob[0]].decode()


def load_dev_keyring(data_dir: Path) -> Keyring:
    """The dev keyring, created once under ``data_dir`` and kept there."""
    path = data_dir / "encryption.key"
    if path.exists():
        return Keyring.parse(path.read_text())
    data_dir.mkdir(parents=True, exist_ok=True)
    text = new_key_text()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    return Keyring.parse(text)


def save_dev_keyring(data_dir: Path, keyring: Keyring) -> None:
    path = data_dir / "encryption.key"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(keyring.text() + "\n")
    tmp.replace(path)


_encode = msgspec.json.encode
_decode = msgspec.json.decode


class UserSealer:
    """Encrypts and decrypts ``user`` objects; the storage of data keys is injected."""

    def __init__(self, keyring: Keyring, index_key: bytes) -> None:
        self.keyring = keyring
        self._index_key = index_key

    def subject(self, env_id: str, user: dict[str, Any]) -> bytes | None:
        """The blind index of the user's ``external_id``, or None when there is none."""
        external = user.get("external_id")
        if external is None or external == "":
            return None
        message = f"{env_id}\x00{external}".encode()
        return hmac.new(self._index_key, message, hashlib.sha256).digest()

    def key_index(self, env_id: str, key: str) -> str:
        """The blind index of an event's ``id`` (idempotency key), stored in its place when
        the event's environment seals its data (``sealing.py``)."""
        message = f"event-id\x00{env_id}\x00{key}".encode()
        return hmac.new(self._index_key, message, hashlib.sha256).hexdigest()

    def seal_master(self, user: dict[str, Any], event_id: str) -> bytes:
        return _MASTER + self.keyring.seal(_encode(user), event_id.encode())

    def seal_user(self, user: dict[str, Any], event_id: str, data_key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return (_USER_KEYED + fingerprint(data_key) + nonce
                + AESGCM(data_key).encrypt(nonce, _encode(user), event_id.encode()))

    def readable(self, blob: bytes, data_key: bytes | None) -> bool:
        """False when ``blob`` was sealed under a data key other than ``data_key`` (or there is
        none): its person was erased."""
        kind = blob[:1]
        if kind == _USER_KEYED:
            return data_key is not None and blob[1:1 + FINGERPRINT_BYTES] == fingerprint(data_key)
        return kind != _USER or data_key is not None

    def open(self, blob: bytes, event_id: str, data_key: bytes | None) -> dict[str, Any]:
        kind, body = blob[:1], blob[1:]
        if kind == _MASTER:
            plain = self.keyring.open(body, event_id.encode())
        elif kind in (_USER, _USER_KEYED):
            if not self.readable(blob, data_key):
                return {}
            assert data_key is not None
            if kind == _USER_KEYED:
                body = body[FINGERPRINT_BYTES:]
            try:
                plain = AESGCM(data_key).decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:],
                                                 event_id.encode())
            except InvalidTag:
                raise EncryptionError() from None
        else:
            raise EncryptionError("unknown ciphertext format")
        value: dict[str, Any] = _decode(plain)
        return value

    def new_wrapped_data_key(self, aad: bytes) -> tuple[bytes, bytes]:
        """A fresh data key and its wrapping under the active master key."""
        key = secrets.token_bytes(KEY_BYTES)
        return key, self.keyring.seal(key, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        return self.keyring.open(wrapped, aad)


def fingerprint(data_key: bytes) -> bytes:
    return hashlib.sha256(b"tidings-data-key\x00" + data_key).digest()[:FINGERPRINT_BYTES]


def data_key_aad(env_id: str, subject: bytes) -> bytes:
    return b"data-key\x00" + env_id.encode() + b"\x00" + subject


INDEX_KEY_NAME = "user-index-key"
INDEX_KEY_AAD = b"secret\x00" + INDEX_KEY_NAME.encode()
