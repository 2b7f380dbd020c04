"""Scenario: ``tidings dev`` without ``-u`` finds an Inngest SDK app on one of the local ports
and paths ``inngest dev`` scans, syncs it, and keeps checking it: an app that stops answering
is marked unreachable, and synced again once it is back."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.acceptance.sdk_apps import Api, clean_env, start_py_app, stop_app, wait_for
from tests.conftest import free_port, start_server, stop_server
from tidings.apps.sync import DISCOVERY_PORTS


def free_discovery_port() -> int:
    for port in reversed(DISCOVERY_PORTS):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("every port tidings dev scans is taken on this machine")


def test_dev_discovers_an_app_and_notices_it_going(tmp_path: Path) -> None:
    server_port = free_port()
    port = free_discovery_port()
    env = clean_env(INNGEST_DEV="1", INNGEST_BASE_URL=f"http://127.0.0.1:{server_port}")
    app = start_py_app(tmp_path, env, port=port)
    server = start_server(tmp_path, "--db", str(tmp_path / "dev.db"), "--poll-interval", "0.3",
                          port=server_port)
    try:
        api = Api(server.url)
        found = wait_for(lambda: api.synced(app.url), timeout=30, what="the app to be found")
        assert found["app_id"] == "py-app"

        stop_app(app)
        gone = wait_for(lambda: next((a for a in api.apps() if a["status"] == "unreachable"),
                                     None), timeout=30, what="the app to be marked unreachable")
        assert gone["url"] == app.url
        assert "cannot reach the app" in gone["error"]

        app = start_py_app(tmp_path, env, port=port, name="py-app-again")
        back = wait_for(lambda: api.synced(app.url), timeout=30, what="the app to sync again")
        assert back["error"] is None
    finally:
        stop_server(server)
        stop_app(app)
