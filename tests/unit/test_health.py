"""``/health`` and ``/ready`` on both backends: ready while the database answers, its schema
is current and a write commits; not ready, naming the check, when one of them fails — the
process staying live meanwhile."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import make_settings
from tests.faults import FaultySQLite, FlakyStorage
from tidings.core import Core
from tidings.server import create_app, health
from tidings.storage import storage_for
from tidings.storage.migrations import schema_version
from tidings.storage.tx import Tx


def _client(core: Core) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(core.settings, core)),
                             base_url="http://tidings")


async def test_a_fresh_process_is_live_and_ready(core: Core) -> None:
    async with _client(core) as http:
        live = await http.get("/health")
        ready = await http.get("/ready")
    assert (live.status_code, live.json()) == (200, {"status": 200, "message": "OK"})
    assert ready.status_code == 200
    assert ready.json() == {"status": 200, "message": "ready", "checks": {
        "database": "ok", "migrations": "ok", "writer": "ok"}}


def _add_migration(db_url: str, version: int) -> None:
    """A migration this release does not know, as a newer release would leave it."""
    sql = "INSERT INTO tidings_migrations (version, name, applied_at) VALUES ({}, 'next', 0)"
    if db_url.startswith("sqlite"):
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            conn.execute(sql.format(version))
    else:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(sql.format(version).encode())


async def test_a_schema_of_another_version_is_not_ready(core: Core, db_url: str) -> None:
    current = await core.storage.read(schema_version)
    _add_migration(db_url, current + 1)
    async with _client(core) as http:
        ready = await http.get("/ready")
        live = await http.get("/health")
    assert ready.status_code == 503
    body = ready.json()
    assert body["message"] == "not ready: migrations"
    assert body["checks"]["migrations"] == (
        f"the schema is at version {current + 1}, this release expects {current}: run "
        "`tidings migrate`")
    assert live.status_code == 200


async def test_a_database_that_refuses_writes_is_not_ready(db_url: str, tmp_path: Path) -> None:
    flaky = FlakyStorage(storage_for(db_url))
    core = await Core.start(make_settings(db_url, tmp_path), flaky)  # type: ignore[arg-type]
    try:
        flaky.failing = True
        async with _client(core) as http:
            ready = await http.get("/ready")
            live = await http.get("/health")
        assert ready.status_code == 503
        assert ready.json()["checks"]["writer"] != "ok"
        assert "writer" in ready.json()["message"]
        assert live.status_code == 200  # a database outage is not a reason to restart
    finally:
        flaky.failing = False
        await core.close()


@pytest.mark.parametrize(("mode", "failed"), [("io", {"database", "migrations", "writer"}),
                                              ("die", {"writer"})])
async def test_sqlite_faults_make_the_process_not_ready(
        sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str,
        failed: set[str]) -> None:
    """A locked or full database (reads and writes fail); a writer thread that died (here on
    the probe's own commit: the next probe finds it stopped)."""
    switch = FaultySQLite(tmp_path / "faults")
    switch.install(monkeypatch.setattr)
    core = await Core.start(make_settings(sqlite_url, tmp_path), on_dead=lambda why: None)
    try:
        switch.switch.write_text(mode)
        async with _client(core) as http:
            first = await http.get("/ready")
            again = await http.get("/ready")
        for ready in (first, again):
            assert ready.status_code == 503
            checks = ready.json()["checks"]
            assert {name for name, text in checks.items() if text != "ok"} == failed
        if mode == "die":
            assert "the SQLite writer thread stopped" in again.json()["checks"]["writer"]
    finally:
        switch.switch.unlink(missing_ok=True)
        await core.close()


async def test_a_read_that_hangs_makes_ready_answer_503_at_its_timeout(
        core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
    """The read is left to end on its own: a cancelled database call ends only once its thread
    is done with it (``storage/threads.py``), which ``/ready`` does not wait for."""
    release = threading.Event()

    def hung(tx: Tx) -> int:
        assert release.wait(30)
        return 0

    monkeypatch.setattr(health, "schema_version", hung)
    monkeypatch.setattr(health, "READY_TIMEOUT", 0.2)
    answering = asyncio.create_task(health.ready(core))
    try:
        done, _ = await asyncio.wait({answering}, timeout=20)
        assert done, "/ready waited for the read that hangs"
        status, body = answering.result()
    finally:
        release.set()
        await asyncio.wait({answering})

    assert status == 503
    assert body["checks"]["database"] == "no answer within 0.2 s"
