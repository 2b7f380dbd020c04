"""A key revoked by another process (``tidings keys revoke``) stops working in a running
server: on PostgreSQL at once — the server here believes a checked key for an hour, so only
the ``NOTIFY tidings_keys`` of the revocation can explain the refusal — and on SQLite within
the cache's bound (1 s)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest

from tests.conftest import TIDINGS, make_settings
from tidings import keys
from tidings.keys import create_key
from tidings.server import create_app


async def _revoke(db_url: str, key_id: str, tmp_path: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        TIDINGS, "keys", "revoke", key_id, "--db", db_url, cwd=tmp_path,
        env={**os.environ, "TIDINGS_DATA_DIR": str(tmp_path / "cli")},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_a_key_revoked_by_another_process_stops_working(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    postgres = db_url.startswith("postgresql")
    if postgres:
        monkeypatch.setattr(keys, "CACHE_SECONDS", 3600.0)
    app = create_app(make_settings(db_url, tmp_path, mode="serve"), env="production",
                     http=False)
    async with app.running() as core, httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://tidings") as http:
        secret, record = await create_key(core.storage, "production", "event")
        event = {"name": "app/go"}
        assert (await http.post(f"/e/{secret}", json=event)).status_code == 200
        assert (await http.post(f"/e/{secret}", json=event)).status_code == 200  # cached

        said = await _revoke(db_url, record.id, tmp_path)
        assert said.strip() == (f"revoked {record.id}; running servers stop accepting it "
                                + ("at once" if postgres else "within 1 s (SQLite)"))

        deadline = asyncio.get_running_loop().time() + 30
        while (reply := await http.post(f"/e/{secret}", json=event)).status_code == 200:
            assert asyncio.get_running_loop().time() < deadline, "the key still works"
            await asyncio.sleep(0.02)
        assert reply.status_code == 401
        assert reply.json()["error"] == "Event key not found"
