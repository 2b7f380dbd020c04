"""Scenario: a ``tidings serve --no-http`` takes events and syncs apps but calls no SDK app; a
``tidings worker`` without clients, on the same database (one SQLite file, or PostgreSQL),
makes those calls — signed with the environment's key — and the runs of an unmodified inngest-py
app complete: steps, a sleep, a wait, an invocation, parallel steps, a retried function. The
worker also picks up a run that was queued before it started."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import inngest
import pytest

from tests.acceptance.py_app_scenario import check_flow, send
from tests.acceptance.sdk_apps import (
    Api,
    clean_env,
    production_keys,
    start_py_app,
    stop_app,
)
from tests.conftest import TIDINGS, start_server, stop_server


@pytest.fixture
def sender(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[inngest.Inngest]]:
    """Filled in by the test once the server's URL and event key are known."""
    for name in ("INNGEST_DEV", "INNGEST_BASE_URL", "INNGEST_EVENT_KEY", "INNGEST_ENV",
                 "INNGEST_SIGNING_KEY"):
        monkeypatch.delenv(name, raising=False)
    clients: list[inngest.Inngest] = []
    yield clients
    for client in clients:
        client._http_client._http_client_sync.close()


def test_a_worker_calls_the_sdk_apps_of_the_servers(db_url: str, tmp_path: Path,
                                                    sender: list[inngest.Inngest]) -> None:
    keys = production_keys(tmp_path, db_url)
    server = start_server(tmp_path, "--db", db_url, "--env", "production", "--retry-interval",
                          "0.2", "--no-http", command="serve", env=keys.env)
    app = None
    worker = None
    worker_log = tmp_path / "worker.log"
    try:
        app = start_py_app(tmp_path, clean_env(INNGEST_SIGNING_KEY=keys.signing_key,
                                               INNGEST_EVENT_KEY=keys.event_key,
                                               INNGEST_BASE_URL=server.url))
        api = Api(server.url, keys.api_key)

        def logs() -> str:
            return "\n".join(path.read_text(errors="replace") for path in (
                app.log_path, worker_log, server.data_dir / "server.log") if path.exists())

        synced = api.post("/v1/apps/sync", {"url": app.url})
        assert synced.status_code == 200, synced.text + logs()
        client = inngest.Inngest(app_id="py-sender", is_production=True,
                                 event_key=keys.event_key, event_api_base_url=server.url)
        sender.append(client)
        early = api.run_of(send(client, "py/double", {"x": 6}), "py-app-double")
        assert early["status"] == "Queued"

        with open(worker_log, "wb") as log:
            worker = subprocess.Popen(
                [TIDINGS, "worker", "--db", db_url, "--retry-interval", "0.2"], cwd=tmp_path,
                env=clean_env(**keys.env), stdout=log, stderr=subprocess.STDOUT)
        assert api.finished(early["id"], logs=logs)["output"] == {"y": 12}

        flaky = api.run_of(send(client, "py/flaky"), "py-app-flaky")
        check_flow(api, client, send(client, "py/flow", {"id": 31}), 31, logs)
        retried = api.finished(flaky["id"], logs=logs)
        assert (retried["status"], retried["output"]) == (
            "Completed", {"succeeded_on_attempt": 2}), retried

        assert worker.poll() is None, logs()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, logs()
        assert "SDK apps (queue http)" in worker_log.read_text()
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait()
        if app is not None:
            stop_app(app)
        stop_server(server)


def test_a_worker_with_nothing_to_run_says_so(tmp_path: Path) -> None:
    done = subprocess.run([TIDINGS, "worker", "--no-http", "--db", str(tmp_path / "x.db")],
                          cwd=tmp_path, env={**os.environ, "TIDINGS_DATA_DIR": str(tmp_path)},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "nothing to run" in done.stderr
