"""``tidings settings`` and ``tidings vacuum`` against a live ``tidings dev``: a change made by
the CLI reaches the running server within seconds; bad settings name themselves."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import TIDINGS, LiveServer, start_server, stop_server


def _cli(tmp_path: Path, server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TIDINGS, *args], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "TIDINGS_DATA_DIR": str(server.data_dir)},
                          timeout=120, check=False)


def test_settings_from_the_cli_reach_the_server_and_vacuum_shrinks(tmp_path: Path) -> None:
    db = str(tmp_path / "kept.db")
    server = start_server(tmp_path, "--db", db)
    try:
        blob = "x" * 4000
        for _ in range(5):
            sent = httpx.post(f"{server.url}/e/key",
                              json=[{"name": "big", "data": {"b": blob}}] * 100)
            assert sent.status_code == 200
        shown = _cli(tmp_path, server, "settings", "show", "--db", db)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout) == {"env": "dev", "events_ttl": "forever",
                                            "runs_ttl": "forever", "dedup_window": "1d",
                                            "encrypt_data": False}
        bad = _cli(tmp_path, server, "settings", "set", "--events-ttl", "2h", "--db", db)
        assert bad.returncode == 1 and "events_ttl" in bad.stderr
        done = _cli(tmp_path, server, "settings", "set", "--events-ttl", "2h",
                    "--dedup-window", "1h", "--runs-ttl", "forever", "--db", db)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["events_ttl"] == "2h"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listed = httpx.get(f"{server.url}/v1/events", params={"limit": 1}).json()
            if listed["retained_since"] is not None:
                break
            time.sleep(0.2)
        assert listed["retained_since"] is not None
    finally:
        stop_server(server)
    vacuumed = _cli(tmp_path, server, "vacuum", "--db", db)
    assert vacuumed.returncode == 0, vacuumed.stderr
    assert "MiB" in vacuumed.stderr
