"""Scenario: branch environments for SDK apps. Two copies of the same inngest-py app run against
``tidings serve`` with the production signing key; one is deployed from a branch (the client's
``env="feature-x"``, which the SDK sends as ``X-Inngest-Env``). The branch copy's functions land
in ``production/feature-x``, whether it syncs in band or out of band; events sent to the branch
start only the branch's functions and events sent to production only production's; Tidings calls
the branch copy signed with the production key and naming its branch; its runs' large state is
fetched from the branch (``/v0/runs/{id}/batch``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import inngest
import pytest

from tests.acceptance.py_app_scenario import check_flow, check_synced, send
from tests.acceptance.sdk_apps import (
    Api,
    AppProcess,
    ProductionKeys,
    Proxy,
    clean_env,
    production_keys,
    start_py_app,
    stop_app,
)
from tests.conftest import LiveServer, start_server, stop_server
from tidings.signing import hash_key

BRANCH = "feature-x"


@dataclass
class Branches:
    server: LiveServer
    keys: ProductionKeys
    main: AppProcess
    branch: AppProcess
    proxy: Proxy  # in front of the branch copy: what Tidings sends it
    api: Api
    branch_api: Api

    @property
    def branch_url(self) -> str:
        return self.proxy.url("/api/inngest")

    def logs(self) -> str:
        return (self.main.output() + self.branch.output()
                + (self.server.data_dir / "server.log").read_text(errors="replace"))


@pytest.fixture
def branches(tmp_path: Path) -> Iterator[Branches]:
    keys = production_keys(tmp_path)
    server = start_server(tmp_path, "--db", keys.db, "--env", "production", "--retry-interval",
                          "0.2", command="serve", env=keys.env)
    started: list[AppProcess] = []
    try:
        app_env = clean_env(INNGEST_SIGNING_KEY=keys.signing_key,
                            INNGEST_EVENT_KEY=keys.event_key, INNGEST_BASE_URL=server.url)
        started.append(start_py_app(tmp_path, app_env, name="main-app"))
        started.append(start_py_app(tmp_path, {**app_env, "DEPLOY_BRANCH": BRANCH},
                                    name="branch-app"))
    except BaseException:
        for app in started:
            stop_app(app)
        stop_server(server)
        raise
    main, branch = started
    proxy = Proxy(f"http://127.0.0.1:{branch.port}")
    yield Branches(server, keys, main, branch, proxy, Api(server.url, keys.api_key),
                   Api(server.url, keys.api_key, branch=BRANCH))
    proxy.close()
    stop_app(branch)
    stop_app(main)
    stop_server(server)


@pytest.fixture
def senders(branches: Branches, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[inngest.Inngest]]:
    """The SDK's own clients: one sending to production, one to the branch."""
    for name in ("INNGEST_DEV", "INNGEST_BASE_URL", "INNGEST_EVENT_KEY", "INNGEST_ENV",
                 "INNGEST_SIGNING_KEY"):
        monkeypatch.delenv(name, raising=False)
    clients = [inngest.Inngest(app_id="py-sender", is_production=True, env=env,
                               event_key=branches.keys.event_key,
                               event_api_base_url=branches.server.url)
               for env in (None, BRANCH)]
    yield clients
    for client in clients:
        client._http_client._http_client_sync.close()


def test_an_sdk_app_of_a_branch_lives_in_that_branch(branches: Branches,
                                                    senders: list[inngest.Inngest]) -> None:
    api, branch_api, logs = branches.api, branches.branch_api, branches.logs
    # In band, from production: the branch copy answers with its env and joins the branch.
    for url in (branches.main.url, branches.branch_url):
        synced = api.post("/v1/apps/sync", {"url": url})
        assert synced.status_code == 200, synced.text + logs()
    [main] = api.apps()
    [branch] = branch_api.apps()
    assert (main["url"], branch["url"]) == (branches.main.url, branches.branch_url)
    check_synced(main)
    check_synced(branch)
    # Out of band: the SDK registers with X-Inngest-Env, into the same branch (nothing new).
    put = httpx.put(branches.branch_url, timeout=30)
    assert put.status_code == 200, put.text
    assert put.json() == {"ok": True, "modified": False}
    assert [a["url"] for a in api.apps()] == [branches.main.url]

    to_main, to_branch = senders
    flow = check_flow(branch_api, to_branch, send(to_branch, "py/flow", {"id": 21}), 21, logs)
    [followup] = branch_api.runs("py-app-followup")  # sent by the SDK, to its branch
    assert branch_api.finished(followup["id"], logs=logs)["output"] == {"from": flow["id"]}
    bulky = branch_api.run_of(send(to_branch, "py/bulky"), "py-app-bulky")
    assert branch_api.finished(bulky["id"], logs=logs)["output"] == {
        "a": 3_000_000, "b": 2_000_000, "events": 1}

    doubled = api.run_of(send(to_main, "py/double", {"x": 5}), "py-app-double")
    assert api.finished(doubled["id"], logs=logs)["output"] == {"y": 10}
    # Nothing crossed over: production ran only its own event, the branch only its own.
    assert [r["id"] for r in api.runs("py-app-double")] == [doubled["id"]]
    for slug in ("py-app-flow", "py-app-followup", "py-app-bulky"):
        assert api.runs(slug) == [], slug
    [invoked] = branch_api.runs("py-app-double")
    assert invoked["parent_run_id"] == flow["id"]

    # Every call the branch copy got was signed and named its branch.
    assert branches.proxy.calls
    for headers in branches.proxy.calls:
        assert headers["x-inngest-env"] == BRANCH
        assert headers["x-inngest-signature"].startswith("t=")


def test_a_branch_name_with_a_slash_is_refused(branches: Branches) -> None:
    body = {"appname": "x", "url": "http://127.0.0.1:1/api/inngest", "functions": []}
    answer = httpx.post(f"{branches.server.url}/fn/register", json=body, timeout=10, headers={
        "authorization": f"Bearer {hash_key(branches.keys.signing_key)}",
        "x-inngest-env": "a/b"})
    assert answer.status_code == 400, answer.text
    assert "x-inngest-env" in answer.json()["error"]
