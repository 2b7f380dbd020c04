"""Key references of sealed values (``sealing.py``) on each backend: registered in a write,
found by another process at its start (``load``) or at once when it meets one
(``Storage.read_now``), also from inside a transaction of its own; a reference the database has
for another key is never taken."""

from __future__ import annotations

import os
from functools import partial
from typing import Any

from tidings.crypto import Keyring
from tidings.ids import new_id
from tidings.sealing import BINARY_MARK, JSON_MARK, DataSeals, event_aad, key_ref
from tidings.storage import Storage

KEYRING = Keyring({"k1": os.urandom(32)}, "k1")
EVENT = new_id()
DATA = b'{"canary":"refs"}'


def _seals() -> DataSeals:
    seals = DataSeals()
    seals.use(KEYRING)
    return seals


def _sealed(seals: DataSeals, env_id: str) -> list[bytes]:
    """One value in binary, one as text, sealed for ``env_id``'s generation 1."""
    return [seals.events_data(env_id, 1, [EVENT], [DATA], binary=binary)[0]
            for binary in (True, False)]


async def test_a_reference_made_by_one_process_is_found_by_others(storage: Storage) -> None:
    env_id = new_id()
    writer = _seals()
    assert await storage.write(partial(writer.register, env_id=env_id, generation=1))
    sealed = _sealed(writer, env_id)
    assert sealed[0].startswith(BINARY_MARK + b"\0\0") and sealed[1].startswith(JSON_MARK + b"#")

    met = _seals()  # a process that started before the reference was made
    met.read_with(storage.read_now)
    assert [met.open_json(s, event_aad(EVENT)) for s in sealed] == [DATA] * 2
    started = _seals()
    await storage.read(started.load)
    assert [started.open_json(s, event_aad(EVENT)) for s in sealed] == [DATA] * 2
    # A reader inside a write transaction of its own (the SQLite writer's thread, a pooled
    # PostgreSQL connection) looks it up beside it.
    inside = _seals()
    inside.read_with(storage.read_now)

    def opened(tx: Any) -> list[bytes]:
        return [inside.open_json(s, event_aad(EVENT)) for s in sealed]

    assert await storage.write(opened) == [DATA] * 2


async def test_a_reference_the_database_has_for_another_key_is_not_taken(
    storage: Storage
) -> None:
    env_id = new_id()
    ref = key_ref("k1", env_id, 1)
    await storage.write(lambda tx: tx.run("sealing_key_save", (ref, "k0", new_id(), 9)))
    seals = _seals()
    assert not await storage.write(partial(seals.register, env_id=env_id, generation=1))
    binary, text = _sealed(seals, env_id)
    assert int.from_bytes(binary[1:3], "big") > 0 and text.startswith(JSON_MARK + env_id.encode())
    other = _seals()
    other.read_with(storage.read_now)
    assert [other.open_json(s, event_aad(EVENT)) for s in (binary, text)] == [DATA] * 2
    rows = await storage.read(lambda tx: tx.all("sealing_keys_all"))
    assert [(int(r[0]), r[1]) for r in rows if int(r[0]) == ref] == [(ref, "k0")]
