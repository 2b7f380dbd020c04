"""``event.user`` is encrypted at rest: unreadable in the database files, readable through the
API, erasable per user, and still readable after the master key rotates."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from tests.conftest import make_settings
from tests.unit.helpers import app_client
from tidings.core import Core
from tidings.crypto import Keyring, new_key_text
from tidings.errors import EncryptionError
from tidings.events.reads import get_event

CANARY_EMAIL = "canary-7f3a9c@example.org"
CANARY_ID = "ext-user-5b1d2e"


def _user(extra: str = "") -> dict[str, str]:
    return {"external_id": CANARY_ID + extra, "email": CANARY_EMAIL, "name": "Canary"}


async def _send_canaries(db_url: str, tmp_path: Path) -> list[str]:
    async with app_client(make_settings(db_url, tmp_path)) as (http, _):
        ids = (await http.post("/e/k", json=[
            {"name": "user/signed-up", "user": _user()},
            {"name": "user/anonymous", "user": {"email": CANARY_EMAIL}},
        ])).json()["ids"]
        for event_id in ids:
            got = (await http.get(f"/v1/events/{event_id}")).json()["data"]
            assert got["user"]["email"] == CANARY_EMAIL
    return list(ids)


async def test_canary_is_nowhere_in_the_sqlite_files(tmp_path: Path) -> None:
    db = tmp_path / "tidings.db"
    await _send_canaries(f"sqlite:///{db}", tmp_path)
    _assert_no_canary_in_files(tmp_path, db)


def _assert_no_canary_in_files(tmp_path: Path, db: Path) -> None:
    files = [p for p in tmp_path.iterdir() if p.name.startswith("tidings.db")]
    assert db in files
    for path in files:
        content = path.read_bytes()
        for secret in (CANARY_EMAIL, CANARY_ID):
            assert secret.encode() not in content, f"{secret} found in {path.name}"
            assert secret.encode("utf-16-le") not in content


@pytest.mark.postgres
async def test_canary_is_nowhere_in_the_postgres_tables(pg_url: str, tmp_path: Path) -> None:
    await _send_canaries(pg_url, tmp_path)
    with psycopg.connect(pg_url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
        assert "events" in tables
        dump = []
        for table in tables:
            with conn.cursor().copy(f"COPY {table} TO STDOUT") as copy:
                dump.extend(bytes(chunk) for chunk in copy)
    everything = b"".join(dump)
    assert b"user/signed-up" in everything  # the dump is real
    for secret in (CANARY_EMAIL, CANARY_ID):
        assert secret.encode() not in everything


async def test_erasing_a_user_makes_their_data_unreadable(db_url: str, tmp_path: Path) -> None:
    async with app_client(make_settings(db_url, tmp_path)) as (http, core):
        ids = (await http.post("/e/k", json=[
            {"name": "a", "user": _user()}, {"name": "b", "user": _user("-other")},
            {"name": "c", "user": _user()}])).json()["ids"]
        env = await core.gate.env_for("k", "event")
        assert await core.vault.erase(env.id, CANARY_ID)
        users = [(await http.get(f"/v1/events/{i}")).json()["data"]["user"] for i in ids]
        assert users[0] == {} and users[2] == {}
        assert users[1]["external_id"] == CANARY_ID + "-other"
        assert not await core.vault.erase(env.id, CANARY_ID)


async def test_rotation_keeps_old_data_readable(db_url: str, tmp_path: Path) -> None:
    first = Keyring.parse(new_key_text())
    settings = replace(make_settings(db_url, tmp_path), encryption_key=first.text())
    async with app_client(settings) as (http, core):
        before = (await http.post("/e/k", json=[{"name": "a", "user": _user()},
                                                {"name": "b", "user": {"email": "x@y.z"}}]))
        rotated = first.rotated()
        assert rotated.active != first.active and first.active in rotated.keys
        assert await core.vault.rewrap(rotated) == 1
    async with app_client(replace(settings, encryption_key=rotated.text())) as (http, core):
        after = (await http.post("/e/k", json={"name": "c", "user": _user()})).json()["ids"]
        for event_id in [*before.json()["ids"], *after]:
            user = (await http.get(f"/v1/events/{event_id}")).json()["data"]["user"]
            assert user, event_id
        env = await core.gate.env_for("k", "event")
        row = await core.storage.read(lambda tx: get_event(tx, env.id, before.json()["ids"][1]))
        assert row is not None and row.user is not None
        assert core.vault.sealer.keyring.key_of(row.user[1:]) == first.active


async def test_a_ciphertext_is_bound_to_its_event(db_url: str, tmp_path: Path) -> None:
    async with app_client(make_settings(db_url, tmp_path)) as (http, core):
        ids = (await http.post("/e/k", json=[{"name": "a", "user": {"email": "a@b.c"}},
                                             {"name": "b"}])).json()["ids"]
        env = await core.gate.env_for("k", "event")
        row = await core.storage.read(lambda tx: get_event(tx, env.id, ids[0]))
        assert row is not None and row.user is not None
        with pytest.raises(EncryptionError):
            await core.vault.open_user(env.id, ids[1], row.user, None)


async def test_serve_needs_an_encryption_key(db_url: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIDINGS_ENCRYPTION_KEY", raising=False)
    settings = replace(make_settings(db_url, tmp_path, mode="serve"), encryption_key=None)
    from tidings.errors import ConfigError

    with pytest.raises(ConfigError, match="TIDINGS_ENCRYPTION_KEY"):
        await Core.start(settings)


def test_keyring_parsing() -> None:
    text = new_key_text()
    ring = Keyring.parse(text)
    assert ring.text() == text
    bare = Keyring.parse(text.split(":", 1)[1])
    assert bare.active == ring.active
    from tidings.errors import ConfigError

    for bad in ["", "kid:not base64!", "kid:" + "QUJD"]:
        with pytest.raises(ConfigError):
            Keyring.parse(bad)
