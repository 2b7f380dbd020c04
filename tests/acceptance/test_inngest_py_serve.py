"""Scenario: the same unmodified Python SDK app in production mode, against ``tidings serve``:
its environment holds the signing key ``tidings keys create-signing`` printed, an event key and
``INNGEST_BASE_URL``. It syncs in band (``POST /v1/apps/sync``) and out of band (a plain
``PUT`` to the app, which registers with ``Authorization: Bearer <hashed key>``); every call is
signed, and the SDK refuses calls that are not; an answer whose signature does not check out is
not believed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import inngest
import jcs
import pytest

from tests.acceptance.py_app_scenario import check_flow, check_runs, check_synced, send
from tests.acceptance.sdk_apps import (
    Api,
    AppProcess,
    Proxy,
    clean_env,
    outward_address,
    production_keys,
    start_py_app,
    stop_app,
)
from tests.conftest import LiveServer, start_server, stop_server
from tidings.signing import hash_key, sign, verify


@dataclass
class Production:
    server: LiveServer
    app: AppProcess
    api: Api
    signing_key: str
    event_key: str

    def logs(self) -> str:
        return self.app.output() + (self.server.data_dir / "server.log").read_text(
            errors="replace")


@pytest.fixture
def app_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """More of the app's environment (a test sets it with ``indirect`` parametrization)."""
    extra: dict[str, str] = getattr(request, "param", {})
    return extra


@pytest.fixture
def app_host(request: pytest.FixtureRequest) -> str:
    """The address the app listens on and Tidings calls it at (``indirect`` too)."""
    host: str = getattr(request, "param", "127.0.0.1")
    return host


@pytest.fixture
def production(tmp_path: Path, app_env: dict[str, str], app_host: str) -> Iterator[Production]:
    keys = production_keys(tmp_path)
    assert keys.signing_key.startswith("signkey-prod-")
    server = start_server(tmp_path, "--db", keys.db, "--env", "production", "--retry-interval",
                          "0.2", "--allow-app-host", app_host, command="serve", env=keys.env)
    try:
        app = start_py_app(tmp_path, clean_env(INNGEST_SIGNING_KEY=keys.signing_key,
                                               INNGEST_EVENT_KEY=keys.event_key,
                                               INNGEST_BASE_URL=server.url, **app_env),
                           host=app_host)
    except BaseException:
        stop_server(server)
        raise
    yield Production(server, app, Api(server.url, keys.api_key), keys.signing_key,
                     keys.event_key)
    stop_app(app)
    stop_server(server)


@pytest.fixture
def sender(production: Production, monkeypatch: pytest.MonkeyPatch) -> Iterator[inngest.Inngest]:
    for name in ("INNGEST_DEV", "INNGEST_BASE_URL", "INNGEST_EVENT_KEY", "INNGEST_ENV",
                 "INNGEST_SIGNING_KEY"):
        monkeypatch.delenv(name, raising=False)
    client = inngest.Inngest(app_id="py-sender", is_production=True,
                             event_key=production.event_key,
                             event_api_base_url=production.server.url)
    yield client
    client._http_client._http_client_sync.close()


def test_python_sdk_app_runs_on_tidings_serve(production: Production,
                                             sender: inngest.Inngest) -> None:
    api, app = production.api, production.app
    synced = api.post("/v1/apps/sync", {"url": app.url})
    assert synced.status_code == 200, synced.text + production.logs()
    assert synced.json()["data"]["app_id"] == "py-app"  # in band: the app answered the PUT
    [record] = api.apps()
    check_synced(record)

    # Out of band, as `curl -X PUT <app>` does: the SDK registers with its hashed key.
    put = httpx.put(app.url, timeout=30)
    assert put.status_code == 200, put.text
    assert put.headers["x-inngest-sync-kind"] == "out_of_band"
    assert put.json() == {"ok": True, "modified": False}

    check_runs(api, sender, production.logs)


def test_register_needs_the_signing_key(production: Production) -> None:
    url = f"{production.server.url}/fn/register"
    body = {"appname": "intruder", "url": "http://127.0.0.1:1/api/inngest", "functions": []}
    assert httpx.post(url, json=body, timeout=10).status_code == 401
    wrong = hash_key("signkey-prod-" + "ab" * 32)
    assert httpx.post(url, json=body, timeout=10,
                      headers={"authorization": f"Bearer {wrong}"}).status_code == 401
    # Every form of the right key opens it: hashed or plain, with or without the prefix.
    key = production.signing_key
    for token in (hash_key(key), hash_key(key).split("-")[-1], key, key.split("-")[-1]):
        answer = httpx.post(url, json=body, timeout=10,
                            headers={"authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
    mismatch = httpx.post(url, json=body, timeout=10,
                          headers={"authorization": f"Bearer {hash_key(key)}",
                                   "x-inngest-expected-server-kind": "dev"})
    assert mismatch.status_code == 400
    assert mismatch.json()["error"] == "Expected server kind dev, got cloud"


def call_body(run_id: str) -> bytes:
    event = {"data": {"x": 2}, "id": "01J00000000000000000000000", "name": "py/double",
             "ts": 1700000000000, "user": {}}
    return bytes(jcs.canonicalize({
        "ctx": {"attempt": 0, "disable_immediate_execution": False, "max_attempts": 5,
                "run_id": run_id, "stack": {"current": 0, "stack": []}, "step_id": "step",
                "use_api": False},
        "event": event, "events": [event], "steps": {}, "use_api": False, "version": 2}))


def test_the_sdk_refuses_unsigned_calls(production: Production) -> None:
    """What the real SDK does with calls: unsigned or wrongly signed, 401 (``{"message":
    "Unauthorized"}`` in inngest-py 0.5.19, where the reference describes a
    ``HeaderMissingError`` body); signed with the environment's key, it runs the function and
    signs its answer with that key."""
    url = f"{production.app.url}?fnId=py-app-double&stepId=step"
    body = call_body("01J00000000000000000000001")
    headers = {"content-type": "application/json"}
    unsigned = httpx.post(url, content=body, headers=headers, timeout=30)
    assert unsigned.status_code == 401
    assert unsigned.json() == {"message": "Unauthorized"}
    forged = httpx.post(url, content=body, timeout=30, headers={
        **headers, "x-inngest-signature": sign(body, "signkey-prod-" + "cd" * 32)})
    assert forged.status_code == 401

    signed = httpx.post(url, content=body, timeout=30, headers={
        **headers, "x-inngest-signature": sign(body, production.signing_key)})
    assert signed.status_code == 200, signed.text
    assert signed.json() == {"y": 4}
    assert verify(signed.content, signed.headers["x-inngest-signature"],
                  [production.signing_key])


def test_an_answer_with_a_bad_signature_is_not_believed(production: Production,
                                                        sender: inngest.Inngest) -> None:
    proxy = Proxy(f"http://127.0.0.1:{production.app.port}", rewrite=b'{"y": 1000}')
    try:
        through = proxy.url("/api/inngest")
        synced = production.api.post("/v1/apps/sync", {"url": through})
        assert synced.status_code == 200, synced.text
        event_id = send(sender, "py/double", {"x": 3})
        run = production.api.run_of(event_id, "py-app-double")
        done = production.api.finished(run["id"], logs=production.logs)
    finally:
        proxy.close()
    # The app ran the function every time; Tidings never took the rewritten answer for it.
    assert proxy.tampered == 5  # the first attempt and 4 retries
    assert done["status"] == "Failed"
    assert done["output"] is None
    assert done["error"]["name"] == "UntrustedAnswer"


STREAMING = {"INNGEST_STREAMING": "force"}


@pytest.mark.parametrize("app_env", [STREAMING], indirect=True)
def test_streamed_answers_on_tidings_serve(production: Production,
                                           sender: inngest.Inngest) -> None:
    """With ``INNGEST_STREAMING=force`` the SDK answers calls of async functions with a 201,
    keep-alive spaces and an envelope. It signs ``null`` as the stream begins and nothing in
    the envelope; on loopback nothing can rewrite the stream, so Tidings believes it: the flow
    runs as it does unstreamed. Sync functions are not streamed and stay signed as usual."""
    synced = production.api.post("/v1/apps/sync", {"url": production.app.url})
    assert synced.status_code == 200, synced.text + production.logs()

    check_flow(production.api, sender, send(sender, "py/flow", {"id": 5}), 5, production.logs)
    assert "Streaming responses are enabled" in production.app.output()


OUTWARD = outward_address()


@pytest.mark.skipif(OUTWARD is None, reason="this machine has no address besides loopback")
@pytest.mark.parametrize("app_env", [STREAMING], indirect=True)
@pytest.mark.parametrize("app_host", [OUTWARD], indirect=True)
def test_unsigned_streams_over_plain_http_are_not_believed(production: Production,
                                                           sender: inngest.Inngest) -> None:
    """Over plain HTTP to an address other than loopback anyone on the way could rewrite what
    inngest-py streams, which it does not sign: Tidings does not believe those answers, and
    says what to do. The same app's unstreamed (signed) answers are believed."""
    assert not production.app.url.startswith("http://127.")
    synced = production.api.post("/v1/apps/sync", {"url": production.app.url})
    assert synced.status_code == 200, synced.text + production.logs()

    doubled = production.api.run_of(send(sender, "py/double", {"x": 4}), "py-app-double")
    flow = production.api.run_of(send(sender, "py/flow", {"id": 9}), "py-app-flow")
    assert production.api.finished(doubled["id"], logs=production.logs)["output"] == {"y": 8}
    refused = production.api.finished(flow["id"], logs=production.logs)
    assert refused["status"] == "Failed"
    assert refused["error"]["name"] == "UntrustedAnswer"
    assert "HTTPS" in refused["error"]["message"]
    assert refused["steps"] == []
