"""Scenario: Prometheus scrapes a ``tidings serve`` and a ``tidings worker`` (``--metrics-
port``) that call a real SDK app: the serve process wants an API key, the worker's port
answers ``/metrics``, ``/health`` and ``/ready``, and both report the same shared state."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.sdk_apps import Api, clean_env, production_keys, start_py_app, stop_app
from tests.conftest import TIDINGS, free_port, start_server, stop_process, stop_server


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_serve_and_a_worker_report_runs_and_the_same_queue(tmp_path: Path) -> None:
    keys = production_keys(tmp_path)
    server = start_server(tmp_path, "--db", keys.db, "--env", "production", "--no-http",
                          command="serve", env=keys.env)
    port = free_port()
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen([TIDINGS, "worker", "--db", keys.db, "--metrics-port", str(port)],
                              cwd=tmp_path, env={**os.environ, **keys.env}, stdout=log,
                              stderr=subprocess.STDOUT)
    app = None
    try:
        app = start_py_app(tmp_path, clean_env(INNGEST_SIGNING_KEY=keys.signing_key,
                                               INNGEST_EVENT_KEY=keys.event_key,
                                               INNGEST_BASE_URL=server.url))
        api = Api(server.url, keys.api_key)
        assert api.post("/v1/apps/sync", {"url": app.url}).status_code == 200
        sent = httpx.post(f"{server.url}/e/{keys.event_key}",
                          json={"name": "py/double", "data": {"x": 2}}, timeout=10)
        run = api.run_of(sent.json()["ids"][0], "py-app-double")
        assert api.finished(run["id"])["status"] == "Completed"

        probes = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"{probes}/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
                time.sleep(0.05)
        assert health.json() == {"status": 200, "message": "OK"}
        assert httpx.get(f"{probes}/ready", timeout=5).json()["message"] == "ready"
        refused = httpx.get(f"{probes}/metrics", timeout=5)
        assert refused.status_code == 401  # outside dev, a token here too
        bearer = {"authorization": f"Bearer {keys.api_key}"}
        from_worker = _samples(httpx.get(f"{probes}/metrics", headers=bearer, timeout=5).text)
        assert httpx.get(f"{server.url}/metrics", timeout=5).status_code == 401
        from_server = _samples(httpx.get(f"{server.url}/metrics", headers=bearer,
                                         timeout=5).text)
    finally:
        if app is not None:
            stop_app(app)
        stop_process(worker)
        log.close()
        stop_server(server)
    fn = (("app", "py-app"), ("function", "py-app-double"))
    # The worker called the app; the server stored the event and created the run.
    assert from_worker[("tidings_sdk_requests_total", (*fn, ("outcome", "success")))] >= 1
    assert from_worker[("inngest_sdk_req_ended_total",
                        (("fn", "py-app-double"), ("status", "success")))] >= 1
    assert from_worker[("tidings_runs_finished_total", (*fn, ("status", "Completed")))] == 1
    assert from_server[("tidings_events_received_total",
                        (("outcome", "accepted"), ("source", "event_api")))] == 1
    assert from_server[("tidings_runs_scheduled_total", (*fn, ("trigger", "py/double")))] == 1
    assert from_server[("tidings_app_syncs_total", (("app", "py-app"), ("result", "changed")))] \
        == 1
    for name in ("tidings_queue_depth", "tidings_waits_pending"):
        shared = {k: v for k, v in from_server.items() if k[0] == name}
        assert shared and shared == {k: v for k, v in from_worker.items() if k[0] == name}
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()
