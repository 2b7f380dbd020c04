"""Scenario: an app written with the official ``inngest`` npm SDK (the version pinned in
tests/node) and served by node's http server runs unmodified on ``tidings dev -u URL`` with
``INNGEST_DEV=1``, and on ``tidings serve`` with its signing key: a step, a sleep, a
conditional wait, an invocation and parallel steps, with the events sent by the SDK's own
client; and sessions (event ``meta``) passed from a run to what it sends and invokes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jcs
import pytest

from tests.acceptance.sdk_apps import (
    NODE_DIR,
    Api,
    AppProcess,
    clean_env,
    dev_with_app,
    node_binary,
    production_keys,
    start_app,
    stop_app,
    wait_for,
)
from tests.conftest import LiveServer, start_server, stop_server
from tidings.signing import sign

pytestmark = pytest.mark.node


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[LiveServer, AppProcess, dict[str, str]]]:
    with dev_with_app(tmp_path, [node_binary(), "app.mjs", "serve", "{port}"], {},
                      name="node-app", cwd=NODE_DIR) as (server, app):
        yield server, app, clean_env(INNGEST_DEV="1", INNGEST_BASE_URL=server.url)


def send(env: dict[str, str], name: str, data: dict[str, Any],
         meta: dict[str, Any] | None = None) -> str:
    extra = [] if meta is None else [json.dumps(meta)]
    done = subprocess.run([node_binary(), "app.mjs", "send", name, json.dumps(data), *extra],
                          cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    [event_id] = json.loads(done.stdout)["ids"]
    return str(event_id)


def check_flow(api: Api, env: dict[str, str], logs: Callable[[], str]) -> None:
    flow = api.run_of(send(env, "node/flow", {"id": 3}), "node-app-flow")

    def waiting() -> bool | None:
        return True if any(p["kind"] == "wait" for p in api.run(flow["id"])["pauses"]) else None

    wait_for(waiting, timeout=30, what="the flow to wait for its approval", logs=logs)
    send(env, "node/approved", {"id": 4, "by": "mallory"})
    send(env, "node/approved", {"id": 3, "by": "bo"})

    done = api.finished(flow["id"], logs=logs)
    assert done["status"] == "Completed", done
    assert done["output"] == {"first": "A", "approvedBy": "bo", "doubled": {"y": 42},
                              "parallel": [1, 2], "after": "done", "id": 3, "attempt": 0}
    names = [s["name"] for s in done["steps"]]
    assert names[:4] == ["first", "nap", "approval", "call-double"]
    assert sorted(names[4:6]) == ["p1", "p2"]
    assert names[6:] == ["after"]
    [invoked] = api.runs("node-app-double")
    assert invoked["parent_run_id"] == flow["id"]
    assert invoked["output"] == {"y": 42}


def check_sessions(api: Api, env: dict[str, str], logs: Callable[[], str]) -> None:
    """A run sees its event's ``meta`` and the SDK's ``ctx.sessions`` from it; the event it
    sends and the run it invokes are in the same sessions (the SDK stamps them as
    ``propagated_sessions``, the server folds them in), plus those set on the event sent."""
    user = {"sessions": {"user": "user-9"}}
    parent = api.finished(api.run_of(send(env, "node/session.start", {}, user),
                                      "node-app-session-parent")["id"], logs=logs)
    assert parent["status"] == "Completed", parent
    output = parent["output"]
    assert output["meta"] == user
    assert output["sessions"] == {"user": "user-9"}
    both = {"sessions": {"topic": "t-1", "user": "user-9"}}
    assert output["invoked"] == {"meta": user, "sessions": {"user": "user-9"}}
    [child_event] = output["sent"]
    assert api.get(f"/v1/events/{child_event}")["meta"] == both
    child = api.finished(api.run_of(child_event, "node-app-session-child")["id"], logs=logs)
    assert child["output"] == {"meta": both, "sessions": both["sessions"]}


def check_synced(app: dict[str, Any]) -> None:
    assert app["app_id"] == "node-app"
    assert app["sdk"] == "js:v4.24.0"
    assert app["framework"] == "nodejs"
    assert app["functions"] == 6


def test_node_sdk_app_runs_on_tidings_dev(
        stack: tuple[LiveServer, AppProcess, dict[str, str]]) -> None:
    server, app, env = stack
    api = Api(server.url)

    def logs() -> str:
        return app.output() + (server.data_dir / "server.log").read_text(errors="replace")

    check_synced(wait_for(lambda: api.synced(app.url), timeout=30, what="the app to sync",
                          logs=logs))
    check_flow(api, env, logs)
    check_sessions(api, env, logs)

    # A step that fails twice is retried alone (ctx.attempt counts its failures)...
    flaky = api.finished(api.run_of(send(env, "node/flaky", {}), "node-app-flaky")["id"],
                         logs=logs)
    assert flaky["status"] == "Completed", flaky
    assert flaky["output"] == {"shaky": "ok on attempt 2"}
    assert [(s["name"], s["attempts"]) for s in flaky["steps"]] == [("shaky", 2)]
    # ... and one that throws NonRetriableError fails the run at once (206 StepFailed with
    # x-inngest-no-retry, then the SDK rethrows it when replayed).
    fragile = api.finished(api.run_of(send(env, "node/fragile", {}), "node-app-fragile")["id"],
                           logs=logs)
    assert fragile["status"] == "Failed", fragile
    assert fragile["attempt"] == 0
    assert "broken for good" in fragile["error"]["message"]
    assert [(s["name"], s["status"]) for s in fragile["steps"]] == [("break", "failed")]


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "streamed"])
def test_node_sdk_app_runs_on_tidings_serve(tmp_path: Path, streaming: bool) -> None:
    """In production mode the SDK syncs in band (it answers the signed ``PUT`` with its
    configuration), checks every call's signature and its age, and signs its answers; with
    ``INNGEST_STREAMING=true`` it answers 201 at once and streams an envelope whose headers
    sign the answer inside it."""
    node = node_binary()
    keys = production_keys(tmp_path)
    server = start_server(tmp_path, "--db", keys.db, "--env", "production", "--retry-interval",
                          "0.2", command="serve", env=keys.env)
    env = clean_env(INNGEST_SIGNING_KEY=keys.signing_key, INNGEST_EVENT_KEY=keys.event_key,
                    INNGEST_BASE_URL=server.url,
                    **({"INNGEST_STREAMING": "true"} if streaming else {}))
    try:
        app = start_app(tmp_path, [node, "app.mjs", "serve", "{port}"], env, name="node-app",
                        cwd=NODE_DIR)
    except BaseException:
        stop_server(server)
        raise
    try:
        api = Api(server.url, keys.api_key)

        def logs() -> str:
            return app.output() + (server.data_dir / "server.log").read_text(errors="replace")

        unsigned = httpx.post(f"{app.url}?fnId=node-app-double&stepId=step", timeout=30,
                              json={"event": {"name": "node/double", "data": {"x": 1}},
                                    "steps": {}, "ctx": {"run_id": "r"}})
        refused = unsigned.status_code
        if streaming:  # the 201 goes out at once; the refusal comes in the envelope
            assert refused == 201
            refused = json.loads(unsigned.content)["status"]
        assert refused == 401
        synced = api.post("/v1/apps/sync", {"url": app.url})
        assert synced.status_code == 200, synced.text + logs()
        assert synced.json()["data"]["app_id"] == "node-app"  # in band
        check_synced(api.apps()[0])
        check_flow(api, env, logs)

        body = jcs.canonicalize({
            "ctx": {"attempt": 0, "disable_immediate_execution": False, "max_attempts": 1,
                    "run_id": "r", "stack": {"current": 0, "stack": []}, "step_id": "step",
                    "use_api": False},
            "event": {"data": {"x": 1}, "id": "e", "name": "node/double", "ts": 1, "user": {}},
            "events": [], "steps": {}, "use_api": False, "version": 2})
        signed = httpx.post(f"{app.url}?fnId=node-app-double&stepId=step", content=body,
                            timeout=30, headers={"content-type": "application/json",
                                                 "x-inngest-signature": sign(body,
                                                                             keys.signing_key)})
        assert signed.status_code == (201 if streaming else 200), signed.text
    finally:
        stop_app(app)
        stop_server(server)
