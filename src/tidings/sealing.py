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
byte (``BINARY_MARK``), which JSON text never does, then its key (below), the nonce and the
ciphertext; every reader of a JSON column takes both forms
(``is_sealed``, ``opened``, ``DataSeals.open_json``). PostgreSQL's ``data`` is ``json``: there
the text form stays.

Values name their key by a reference: the first six bytes of a hash of the key's name (master
key id, environment, generation; ``key_ref``). In binary that is a name's length of 0 (two
bytes) and the reference, 9 bytes with the mark instead of ~40 (P2's rows, 144 bytes, were a
quarter key name, paid for again by the writer and the checkpointer); as text, ``#`` and its
hex. The name of a reference is kept in the database (``sealing_keys``, made by ``register``
in a write before the first value names it), read by every process at start (``load``) and,
for one made by another process since, at once on the database's own connection
(``Storage.read_now``), as readers far from a transaction (``event_from_row``, ``opened``)
cannot wait. A name read back is believed only if it hashes to the reference, so which
database answers cannot matter, and a reference whose row names another key (two names with
the same hash) is never used: that key's values name it in full, as values sealed before
references existed do (``env_id generation kid``), which still open. Until a key's reference
is committed this process names it in full too, except in the transaction that makes it.
Environment ids are unique, so a reference made in one database is not taken for made in
another that one process also opened (tests), as ``events/env_settings.py`` assumes too.

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
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, NamedTuple, overload

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
REF_BYTES = 6  # a key reference's: 2**-48 that two keys share one, and then one is named in full
_REF_START = BINARY_MARK + b"\x00\x00"  # a binary value naming its key by reference
KeyName = tuple[str, str, int]  # master key id, environment, generation
ReadNow = Callable[[Callable[[Any], Any]], Any]  # ``Storage.read_now``
log = logging.getLogger("tidings.sealing")


class _Sealer(NamedTuple):
    """What new writes of an environment seal with: the cipher, and how values name its key
    as text (before the base64) and in binary (before the nonce)."""

    cipher: AESGCM
    head: bytes
    binary: bytes
    settled: bool  # named by reference, or never will be: nothing left to register


class DataSeals:
    """The master keys of this process, and the ciphers derived from them."""

    def __init__(self) -> None:
        self._masters: dict[str, bytes] = {}
        self._active: str | None = None
        self._ciphers: dict[tuple[str, str, int], AESGCM] = {}
        self._sealers: dict[tuple[str, int], _Sealer] = {}
        self._lock = threading.Lock()
        self._field, self._used = _new_field(), 0
        self._names: dict[int, KeyName] = {}  # reference -> key, each checked (``_believe``)
        self._by_ref: dict[int, AESGCM] = {}
        self._registered: set[int] = set()  # references committed in the database, as named
        self._taken: set[int] = set()  # references the database has for another key
        self._readers: list[weakref.WeakMethod[ReadNow]] = []

    def use(self, keyring: Keyring) -> None:
        """Open with every key of ``keyring`` from now on; seal with its active key."""
        self._masters.update(keyring.keys)
        if keyring.active != self._active:
            self._active = keyring.active
            self._sealers.clear()

    def read_with(self, read_now: ReadNow) -> None:
        """Look references no one named to this process up with ``read_now`` (a storage's
        ``read_now``; held weakly: a closed storage's goes with it)."""
        if not any(ref() == read_now for ref in self._readers):
            self._readers = [ref for ref in self._readers if ref() is not None]
            self._readers.append(weakref.WeakMethod(read_now))

    # -- key references ----------------------------------------------------------------------

    def load(self, tx: Any) -> None:
        """Believe every reference of ``tx``'s database (at start)."""
        for ref, kid, env_id, generation in tx.all("sealing_keys_all"):
            if self._believe(int(ref), (str(kid), str(env_id), int(generation))):
                self._registered.add(int(ref))

    def _believe(self, ref: int, name: KeyName) -> bool:
        """Take ``name`` for ``ref``'s if it hashes to it (whoever said so)."""
        if key_ref(*name) != ref:
            return False
        self._names[ref] = name
        return True

    def registered(self, env_id: str, generation: int) -> bool:
        """Whether new writes of ``env_id`` name their key by reference (or never will: the
        database has the reference for another key)."""
        found = self._sealers.get((env_id, generation))
        if found is not None:
            return found.settled  # ingest asks on every request: this, not a hash
        if self._active is None:
            return True  # nothing to register: sealing fails for want of a key
        ref = key_ref(self._active, env_id, generation)
        return ref in self._registered or ref in self._taken

    def register(self, tx: Any, env_id: str, generation: int) -> bool:
        """Store the reference of the key new writes of ``env_id`` use in ``tx``'s database;
        whether values written in ``tx`` may name the key by it. Once ``tx`` commits, every
        new value does."""
        kid = self._active
        if kid is None:
            return False
        name = (kid, env_id, generation)
        ref = key_ref(*name)
        tx.run("sealing_key_save", (ref, *name))
        row = tx.one("sealing_key_of", (ref,))
        # What the row says is committed (PostgreSQL waits for a rival insert's end) or ours.
        if row is None or (str(row[0]), str(row[1]), int(row[2])) != name:
            self._taken.add(ref)
            self._sealers.pop((env_id, generation), None)  # made again, settled
            if row is not None:
                self._believe(ref, (str(row[0]), str(row[1]), int(row[2])))
            return False
        self._names[ref] = name
        tx.after_commit(partial(self._committed, ref, env_id, generation))
        return True

    def _committed(self, ref: int, env_id: str, generation: int) -> None:
        self._registered.add(ref)
        self._sealers.pop((env_id, generation), None)  # made again, naming its key by ``ref``

    def _ref_cipher(self, ref: int) -> AESGCM:
        cipher = self._by_ref.get(ref)
        if cipher is None:
            name = self._names.get(ref) or self._look_up(ref)
            if name is None:
                raise EncryptionError(f"ciphertext names sealing key #{ref:012x}, which no "
                                      "database of this process knows")
            cipher = self._by_ref[ref] = self._cipher(*name)
        return cipher

    def _look_up(self, ref: int) -> KeyName | None:
        for weak in list(self._readers):
            read_now = weak()
            if read_now is None:
                continue
            try:
                row = read_now(lambda tx: tx.one("sealing_key_of", (ref,)))
            except Exception:  # a closed storage, a database of another kind: the next one
                log.debug("looking sealing key #%012x up failed", ref, exc_info=True)
                continue
            if row is not None and self._believe(ref, (str(row[0]), str(row[1]),
                                                       int(row[2]))):
                self._registered.add(ref)
                return self._names[ref]
        return None

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

    def _sealer(self, env_id: str, generation: int, tx: Any = None) -> _Sealer:
        """What new writes of ``env_id`` seal with. Their key is named by reference once it is
        registered (``register``; in ``tx``, when it is not yet), else in full."""
        found = self._sealers.get((env_id, generation))
        if found is None:
            kid = self._active
            if kid is None:
                raise EncryptionError("no encryption key is configured in this process")
            cipher = self._cipher(kid, env_id, generation)
            ref = key_ref(kid, env_id, generation)
            if ref in self._registered:
                found = _by_reference(cipher, ref)
            elif (tx is not None and ref not in self._taken
                  and self.register(tx, env_id, generation)):
                return _by_reference(cipher, ref)  # in ``tx`` only, until it commits
            else:
                key_id = f"{env_id} {generation} {kid}".encode()
                found = _Sealer(cipher, key_id + b" ",
                                BINARY_MARK + len(key_id).to_bytes(2, "big") + key_id,
                                ref in self._taken)
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
        cipher, head, start, _ = self._sealer(env_id, generation)
        encrypt = cipher.encrypt
        nonces = [n.to_bytes(NONCE_BYTES, "big") for n in self._invocations(len(event_ids))]
        if binary:
            return [start + nonce + encrypt(nonce, data, b"event\x00" + event_id.encode())
                    for nonce, event_id, data in zip(nonces, event_ids, datas, strict=True)]
        start = JSON_MARK + head
        return [start + _b2a(nonce + encrypt(nonce, data, b"event\x00" + event_id.encode()),
                             newline=False) + b'"'
                for nonce, event_id, data in zip(nonces, event_ids, datas, strict=True)]

    def _seal(self, env_id: str, generation: int, plain: bytes, aad: bytes, tx: Any) -> bytes:
        cipher, head, _, _ = self._sealer(env_id, generation, tx)
        nonce = self._nonce()
        return head + _b64(nonce + cipher.encrypt(nonce, plain, aad))

    def seal_text(self, env_id: str, generation: int, plain: bytes, aad: bytes,
                  tx: Any = None) -> str:
        """Bytes sealed, as text (``TEXT_MARK``, the key's name, the ciphertext in base64);
        written in ``tx``, which registers the key's reference if it is not yet."""
        return _TAG + self._seal(env_id, generation, plain, aad, tx).decode()

    def seal_json(self, env_id: str, generation: int, plain: bytes | str, aad: bytes,
                  tx: Any = None) -> bytes:
        """A JSON value sealed: a JSON string holding the ciphertext (``JSON_MARK`` ...); as
        ``seal_text`` with ``tx``."""
        raw = plain.encode() if isinstance(plain, str) else plain
        return JSON_MARK + self._seal(env_id, generation, raw, aad, tx) + b'"'

    def _open(self, sealed: bytes, aad: bytes) -> bytes:
        head, _, body = sealed.rpartition(b" ")
        if b" " in head:  # named in full: ``env_id generation kid``
            env_id, generation, kid = head.decode().split(" ", 2)
            cipher = self._cipher(kid, env_id, int(generation))
        else:  # ``#`` and the reference in hex
            cipher = self._ref_cipher(int(head[1:], 16))
        blob = _unb64(body)
        try:
            return cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
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
        size = int.from_bytes(sealed[1:3], "big")  # of the key's name; 0: a reference
        if size:
            env_id, generation, kid = sealed[3:3 + size].decode().split(" ", 2)
            cipher = self._cipher(kid, env_id, int(generation))
        else:
            cipher = self._ref_cipher(int.from_bytes(sealed[3:3 + REF_BYTES], "big"))
            size = REF_BYTES
        blob = memoryview(sealed)[3 + size:]
        try:
            return cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
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


def key_ref(kid: str, env_id: str, generation: int) -> int:
    """The reference values name a key by: the first ``REF_BYTES`` of a hash of its name."""
    name = f"tidings-sealing-key\x00{kid}\x00{env_id}\x00{generation}".encode()
    return int.from_bytes(hashlib.sha256(name).digest()[:REF_BYTES], "big")


def _by_reference(cipher: AESGCM, ref: int) -> _Sealer:
    return _Sealer(cipher, f"#{ref:012x} ".encode(), _REF_START + ref.to_bytes(REF_BYTES, "big"),
                   True)


def _new_field() -> int:
    return int.from_bytes(os.urandom(8), "big") << 32


SEALS = DataSeals()
os.register_at_fork(after_in_child=SEALS._forked)

