"""Erasing a person reaches backups taken before it: with the data keys in a keystore of their
own, a copy of the SQLite file or a ``pg_dump`` taken before the erasure, restored afterwards,
cannot be opened for that person with the current keys, while everyone else in it still can.
And on PostgreSQL with a server and two workers in processes of their own, no process uses the
erased key once the call has returned."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import fresh_schema, make_settings
from tests.unit.helpers import app_client
from tests.worker_pool import pool
from tidings.settings import Settings

PERSON = "backup-person-1"
OTHER = "backup-person-2"


async def _send(settings: Settings) -> list[str]:
    async with app_client(settings) as (http, _):
        reply = await http.post("/e/k", json=[
            {"name": "a", "user": {"external_id": PERSON, "email": "one@example.org"}},
            {"name": "b", "user": {"external_id": OTHER, "email": "two@example.org"}}])
        ids: list[str] = reply.json()["ids"]
    return ids


async def _users(settings: Settings, ids: list[str]) -> list[tuple[dict[str, Any], bool]]:
    async with app_client(settings) as (http, _):
        found = []
        for event_id in ids:
            event = (await http.get(f"/v1/events/{event_id}")).json()["data"]
            found.append((event["user"], event["user_erased"]))
        return found


async def _erase(settings: Settings) -> None:
    async with app_client(settings) as (http, _):
        reply = await http.delete(f"/v1/users/{PERSON}")
        assert reply.status_code == 200 and reply.json()["data"]["key_destroyed"]


def _backup_sqlite(source: Path, target: Path) -> None:
    with sqlite3.connect(source) as live, sqlite3.connect(target) as copy:
        live.backup(copy)


async def test_an_old_sqlite_copy_cannot_be_opened_for_the_erased_person(tmp_path: Path) -> None:
    db, backup = tmp_path / "tidings.db", tmp_path / "backup.db"
    settings = replace(make_settings(f"sqlite:///{db}", tmp_path),
                       keystore_url=f"sqlite:///{tmp_path / 'keys.db'}")
    ids = await _send(settings)
    _backup_sqlite(db, backup)
    await _erase(settings)

    restored = replace(settings, database_url=f"sqlite:///{backup}")
    (mine, mine_erased), (theirs, _) = await _users(restored, ids)
    assert (mine, mine_erased) == ({}, True)
    assert theirs == {"external_id": OTHER, "email": "two@example.org"}


async def test_without_a_keystore_the_keys_move_there_on_first_use(tmp_path: Path) -> None:
    db = tmp_path / "tidings.db"
    plain = make_settings(f"sqlite:///{db}", tmp_path)
    ids = await _send(plain)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM user_keys").fetchone() == (2,)
    kept = replace(plain, keystore_url=f"sqlite:///{tmp_path / 'keys.db'}")
    assert [user["external_id"] for user, _ in await _users(kept, ids)] == [PERSON, OTHER]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM user_keys").fetchone() == (0,)


def _dump(url: str, schema: str, target: Path) -> None:
    base = url.split("?", 1)[0]
    subprocess.run(["pg_dump", "--no-owner", "-n", schema, "-f", str(target), base],
                   check=True, capture_output=True, timeout=120)


def _restore(url: str, schema: str, dump: Path) -> None:
    base = url.split("?", 1)[0]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(dump), base],
                   check=True, capture_output=True, timeout=120)


def _schema_of(url: str) -> str:
    return url.rsplit("%3D", 1)[1]


@pytest.mark.postgres
async def test_a_pg_dump_taken_before_cannot_be_opened_for_the_erased_person(
    pg_url: str, tmp_path: Path
) -> None:
    with fresh_schema() as keystore:
        settings = replace(make_settings(pg_url, tmp_path), keystore_url=keystore)
        ids = await _send(settings)
        dump = tmp_path / "before.sql"
        _dump(pg_url, _schema_of(pg_url), dump)
        await _erase(settings)

        _restore(pg_url, _schema_of(pg_url), dump)  # the old backup, back in place
        (mine, mine_erased), (theirs, _) = await _users(settings, ids)
        assert (mine, mine_erased) == ({}, True)
        assert theirs == {"external_id": OTHER, "email": "two@example.org"}


WHO_APP = '''
import os
import tidings

client = tidings.Tidings(app_id="who")


@client.function(id="whoami", trigger=tidings.TriggerEvent(event="who/asked"))
def whoami(ctx):
    return {"pid": os.getpid(), "user": ctx.event.user}
'''


def _outputs(db: str, ids: list[str]) -> dict[str, Any]:
    """The outputs of the completed runs among ``ids``."""
    with psycopg.connect(db) as conn:
        rows = conn.execute("SELECT id, output FROM runs WHERE status = 'Completed' "
                            "AND id = ANY(%s)", (ids,)).fetchall()
    return dict(rows)


def _wait_for(check: Any, what: str, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_no_process_uses_the_erased_key_once_the_call_returned(pg_url: str,
                                                                 tmp_path: Path) -> None:
    # The data keys in PostgreSQL too (by default dev keeps them in a file of its data folder).
    with pool(tmp_path, pg_url, "whoapp", WHO_APP, {"TIDINGS_KEYSTORE_URL": pg_url}, workers=2,
              concurrency=4, server_args=("--no-discovery",)) as started:
        server = started.server
        sent = httpx.post(f"{server.url}/e/key", json=[
            {"name": "who/asked", "data": {"n": n},
             "user": {"external_id": PERSON, "email": "one@example.org"}} for n in range(20)])
        event_ids = sent.json()["ids"]

        def first_runs() -> list[str]:
            with psycopg.connect(pg_url) as conn:
                rows = conn.execute("SELECT id FROM runs WHERE status = 'Completed'").fetchall()
            return [r[0] for r in rows] if len(rows) == 20 else []

        runs = _wait_for(first_runs, "the first runs")
        before = _outputs(pg_url, runs)
        assert all(o["user"]["email"] == "one@example.org" for o in before.values())
        # The server has opened the person's events too (its memo holds the key).
        assert httpx.get(f"{server.url}/v1/events/{event_ids[0]}").json()["data"]["user"]

        erased = httpx.delete(f"{server.url}/v1/users/{PERSON}")
        assert erased.status_code == 200 and erased.json()["data"]["key_destroyed"]

        # At once, no waiting: every rerun, on whichever worker, and every read sees {}.
        reruns = [httpx.post(f"{server.url}/v1/runs/{run_id}/rerun").json()["data"]["id"]
                  for run_id in runs]
        assert httpx.get(f"{server.url}/v1/events/{event_ids[0]}").json()["data"]["user"] == {}
        after = _wait_for(lambda: (o := _outputs(pg_url, reruns)) and len(o) == len(reruns)
                          and o, "the reruns")
        assert [o["user"] for o in after.values()] == [{}] * len(reruns)


CANARY_DATA = "canary-data-5d2c81"
CANARY_USER = "canary-user-93be07@example.org"


def canary_app() -> Any:
    import tidings

    client = tidings.Tidings(app_id="canary")

    @client.function(id="echo", trigger=tidings.TriggerEvent(event="canary/sent"))
    async def echo(ctx: tidings.Context) -> Any:
        note = await ctx.step.run("note", lambda: {"note": ctx.event.data["note"]})
        return {"note": note, "user": ctx.event.user}

    return client


async def _send_canary_and_erase(settings: Settings) -> None:
    from tests.engine.conftest import Clock, Engine
    from tidings.core import Core

    core = await Core.start(settings)
    try:
        engine = Engine(core, Clock(), [])
        await engine.start(canary_app())
        for n in range(3):
            await engine.send({"name": "canary/sent", "data": {"note": CANARY_DATA, "n": n},
                               "user": {"external_id": PERSON, "email": CANARY_USER}})
        await engine.send({"name": "canary/sent", "data": {"note": "kept"},
                           "user": {"external_id": OTHER}})
        await engine.drain()
        reply = await engine.api("DELETE", f"/v1/users/{PERSON}?events=delete")
        assert reply.status_code == 200 and reply.json()["data"]["events_deleted"] == 3
    finally:
        await core.close()


def _canaries_in(blob: bytes) -> list[str]:
    return [c for c in (CANARY_DATA, CANARY_USER, PERSON) if c.encode() in blob]


def _canaries_in_files(folder: Path) -> dict[str, list[str]]:
    """The canaries each database file (databases, WALs) holds."""
    files = sorted(folder.glob("*.db*"))
    assert files
    return {p.name: _canaries_in(p.read_bytes()) for p in files}


async def test_after_erasing_with_events_no_canary_is_in_the_sqlite_files(
    tmp_path: Path,
) -> None:
    settings = replace(make_settings(f"sqlite:///{tmp_path / 'tidings.db'}", tmp_path),
                       keystore_url=f"sqlite:///{tmp_path / 'keys.db'}")
    await _send_canary_and_erase(settings)
    found = _canaries_in_files(tmp_path)
    assert found == {name: [] for name in found}


@pytest.mark.postgres
async def test_after_erasing_with_events_no_canary_is_in_a_pg_dump(pg_url: str,
                                                                   tmp_path: Path) -> None:
    await _send_canary_and_erase(make_settings(pg_url, tmp_path))
    dump = tmp_path / "after.sql"
    _dump(pg_url, _schema_of(pg_url), dump)
    text = dump.read_bytes()
    assert b"canary/sent" in text  # the dump is real: the other person's event is in it
    assert _canaries_in(text) == []
