"""Scenario: what an operator reads in the logs of ``tidings serve`` (JSON lines) and
``tidings dev`` (text) while real runs of the unmodified Python SDK app go right and wrong.

Under ``serve`` at DEBUG with the access log on, a whole run of the app — synced with the
signing key, events sent with the event key and a ``user`` object, reads with the API key, a
function failing twice before it succeeds, one failing for good — leaves JSON lines naming
the runs' ids, and none of the secrets anywhere. Under ``dev``, an app whose answer cannot
be taken in leaves a WARNING with the status and the start of the answer, and the run shows
that error and when its next attempt is due.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.acceptance.sdk_apps import (
    Api,
    Proxy,
    clean_env,
    production_keys,
    start_py_app,
    stop_app,
    wait_for,
)
from tests.conftest import start_server, stop_server
from tidings.signing import hash_key

USER_SECRET = "ana.secret-4242@example.com"


def _send(server_url: str, key: str, name: str, data: dict[str, Any] | None = None,
          user: dict[str, Any] | None = None) -> str:
    event: dict[str, Any] = {"name": name, "data": data or {}}
    if user is not None:
        event["user"] = user
    answer = httpx.post(f"{server_url}/e/{key}", json=event, timeout=10)
    assert answer.status_code == 200, answer.text
    event_id: str = answer.json()["ids"][0]
    return event_id


def test_a_full_run_under_serve_logs_json_with_ids_and_no_secret(tmp_path: Path) -> None:
    keys = production_keys(tmp_path)
    server = start_server(tmp_path, "--db", keys.db, "--env", "production", "--retry-interval",
                          "0.2", "--log-level", "debug", "--access-log", command="serve",
                          env=keys.env)
    app = None
    try:
        app = start_py_app(tmp_path, clean_env(INNGEST_SIGNING_KEY=keys.signing_key,
                                               INNGEST_EVENT_KEY=keys.event_key,
                                               INNGEST_BASE_URL=server.url))
        api = Api(server.url, keys.api_key)
        synced = api.post("/v1/apps/sync", {"url": app.url})
        assert synced.status_code == 200, synced.text
        user = {"email": USER_SECRET, "external_id": "user-ext-77"}
        flaky = _send(server.url, keys.event_key, "py/flaky", user=user)
        doomed = _send(server.url, keys.event_key, "py/doomed", user=user)
        _send(server.url, keys.event_key, "py/double", {"x": 2}, user=user)
        flaky_run = api.finished(api.run_of(flaky, "py-app-flaky")["id"])
        doomed_run = api.finished(api.run_of(doomed, "py-app-doomed")["id"])
        assert (flaky_run["status"], doomed_run["status"]) == ("Completed", "Failed")
    finally:
        if app is not None:
            stop_app(app)
        stop_server(server)
    text = (server.data_dir / "server.log").read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert len(lines) == len([line for line in text.splitlines() if line.strip()])

    start = lines[0]
    assert start["message"].startswith("Tidings serve on http://127.0.0.1:")
    assert start["mode"] == "serve" and start["load"]["max_write_backlog"] > 0
    assert any(line["logger"] == "tidings.access" for line in lines)
    assert any(line["message"].startswith("app py-app synced") for line in lines)

    failed = [line for line in lines if line.get("run_id") == flaky_run["id"]
              and line["level"] == "WARNING"]
    assert len(failed) == 2, failed  # attempts 1 and 2 failed; the third succeeded
    for line in failed:
        assert line["function"] == "py-app-flaky" and line["app"] == "py-app"
        assert line["event_id"] == flaky and line["status"] == 500
        assert "failing on attempt" in line["answer"]
    ended = [line for line in lines if line.get("run_id") == doomed_run["id"]
             and "failed for good" in line["message"]]
    assert len(ended) == 1 and ended[0]["level"] == "INFO"  # NonRetriableError

    signing = keys.signing_key
    secrets = {
        "event key": keys.event_key,
        "API key": keys.api_key,
        "signing key": signing,
        "signing key without its prefix": signing.split("-")[-1],
        "hashed signing key": hash_key(signing).split("-")[-1],
        "encryption key": keys.env["TIDINGS_ENCRYPTION_KEY"],
        "user": USER_SECRET,
        "user id": "user-ext-77",
    }
    for what, secret in secrets.items():
        assert secret not in text, f"the {what} is in the logs"
    assert "authorization" not in text.lower()
    assert "bearer" not in text.lower()


def test_an_answer_that_cannot_be_taken_in_is_logged_and_shown_on_the_run(
        tmp_path: Path) -> None:
    """The complaint that started this: a run sat in Running with ``error: null`` while every
    call failed to parse the app's answer, and nothing was logged."""
    server = start_server(tmp_path, "--db", str(tmp_path / "dev.db"), "--retry-interval", "600",
                          "--no-discovery")
    app = start_py_app(tmp_path, clean_env(INNGEST_DEV="1", INNGEST_BASE_URL=server.url))
    proxy = Proxy(f"http://127.0.0.1:{app.port}", rewrite=b"<html>502 Bad Gateway</html>")
    try:
        api = Api(server.url)
        synced = api.post("/v1/apps/sync", {"url": proxy.url("/api/inngest")})
        assert synced.status_code == 200, synced.text
        event = _send(server.url, "any", "py/double", {"x": 2})
        run = api.run_of(event, "py-app-double")

        def waiting() -> dict[str, Any] | None:
            shown = api.run(run["id"])
            return shown if shown["error"] is not None else None

        shown = wait_for(waiting, timeout=30, what="the run to show its failed attempt")
    finally:
        proxy.close()
        stop_app(app)
        stop_server(server)
    assert shown["status"] == "Running" and shown["attempt"] == 1
    assert shown["error"]["name"] == "ProtocolError"
    assert shown["due_at"] is not None and shown["due_at"] > shown["created_at"]
    text = (server.data_dir / "server.log").read_text()
    [line] = [line for line in text.splitlines() if run["id"] in line and "WARNING" in line]
    assert "status=200" in line and "reason=ProtocolError" in line
    assert 'answer="<html>502 Bad Gateway</html>"' in line
    assert "function=py-app-double" in line and "app=py-app" in line
