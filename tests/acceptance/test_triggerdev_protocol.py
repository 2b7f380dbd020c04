"""Scenario: what Tidings does with v2 apps that answer badly, against a stand-in app on
loopback (``http.server``) that speaks the v2 endpoint protocol as scripted: a Job answering an
unknown status, an answer that is not JSON, a 4xx, a task of another run; an index holding
parts Tidings does not run; a key the app refuses. Each is a clear error on the run or the app,
never a 5xx, and nothing half-stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import loopback
from tests.acceptance.sdk_apps import Api, tidings_cli, wait_for
from tests.conftest import LiveServer, start_server, stop_server

CLIENT = "stand-in"
JOB = {"id": "job", "name": "job", "version": "1", "enabled": True, "integrations": {},
       "trigger": {"type": "static", "title": "t", "rule": {"event": "stand.in",
                                                            "source": "trigger.dev"}},
       "event": {"name": "stand.in", "title": "t", "source": "trigger.dev", "icon": "x"},
       "startPosition": "latest", "preprocessRuns": False, "internal": False}
INDEX = {"jobs": [JOB], "sources": [], "webhooks": [], "dynamicTriggers": [],
         "dynamicSchedules": [], "httpEndpoints": []}


class StandIn:
    """A v2 endpoint on loopback: it takes only ``key``, answers ``PING`` as client
    ``stand-in``, ``INDEX_ENDPOINT`` with ``index`` and ``EXECUTE_JOB`` with what the event's
    payload names (``answer``: a JSON value; ``raw``: text; ``status``: the HTTP status)."""

    def __init__(self, key: str, index: dict[str, Any]) -> None:
        stand_in = self
        self.index = index
        self.executions: list[dict[str, Any]] = []

        class Handler(loopback.Handler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("x-trigger-api-key") != key:
                    return self.reply(401, {"message": "Forbidden: client apiKey mismatch"})
                action = self.headers.get("x-trigger-action")
                if action == "PING":
                    endpoint = self.headers.get("x-trigger-endpoint-id")
                    return self.reply(200, {"ok": True} if endpoint == CLIENT else {
                        "ok": False, "error": f"Endpoint ID mismatch error. Expected {CLIENT}, "
                                              f"got {endpoint}"})
                if action == "INDEX_ENDPOINT":
                    return self.reply(200, stand_in.index)
                execution = json.loads(body)
                stand_in.executions.append(execution)
                script = execution["event"]["payload"]
                if "raw" in script:
                    return self.reply(script.get("status", 200), None, script["raw"])
                return self.reply(script.get("status", 200), script["answer"])

            def do_PUT(self) -> None:
                self.reply(401, {"message": "Unauthorized: missing x-trigger-api-key header"})

            def reply(self, status: int, value: Any, raw: str | None = None) -> None:
                self.answer(status, raw if raw is not None else json.dumps(value))

        self._server = loopback.Loopback(Handler)
        self.url = f"{self._server.url}/api/trigger"

    def close(self) -> None:
        self._server.close()


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    tmp: Path = tmp_path_factory.mktemp("v2-protocol")
    db = str(tmp / "dev.db")
    key = tidings_cli(tmp, {"TIDINGS_DATA_DIR": str(tmp / "server")}, "keys", "create",
                      "--env", "dev", "--kind", "trigger", "--db", db)
    server = start_server(tmp, "--db", db, "--no-discovery", "--retry-interval", "0.2")
    yield server, key
    stop_server(server)


@pytest.fixture(scope="module")
def stand_in(dev: tuple[LiveServer, str]) -> Iterator[StandIn]:
    server, key = dev
    app = StandIn(key, INDEX)
    synced = Api(server.url).post("/v1/apps/sync", {"url": app.url})
    assert synced.status_code == 200, synced.text
    assert synced.json()["data"]["app_id"] == CLIENT
    yield app
    app.close()


def run_for(server: LiveServer, key: str, script: dict[str, Any]) -> dict[str, Any]:
    api = Api(server.url)
    sent = httpx.post(f"{server.url}/api/v1/events", timeout=10,
                      headers={"authorization": f"Bearer {key}"},
                      json={"event": {"name": "stand.in", "payload": script}})
    assert sent.status_code == 200, sent.text
    run = api.run_of(sent.json()["id"], f"{CLIENT}-job")
    return api.finished(run["id"])


@pytest.mark.parametrize(("script", "message"), [
    ({"answer": {"status": "BOGUS"}}, "unknown status 'BOGUS'"),
    ({"answer": {"no": "status"}}, "unknown status None"),
    ({"raw": "not json"}, "not a JSON object"),
    ({"answer": {"message": "Job not found"}, "status": 404}, "answered 404: Job not found"),
    ({"answer": {"status": "RESUME_WITH_TASK", "task": {"id": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}}},
     "names a task this run does not have"),
    ({"answer": {"status": "RESUME_WITH_PARALLEL_TASK", "task": {}, "childErrors": []}},
     "RESUME_WITH_PARALLEL_TASK names a task this run does not have"),
    ({"answer": {"status": "ERROR", "error": {"message": "boom", "name": "Error"}}}, "boom"),
])
def test_bad_answers_fail_the_run_saying_what_came_back(
    dev: tuple[LiveServer, str], stand_in: StandIn, script: dict[str, Any], message: str,
) -> None:
    done = run_for(*dev, script)

    assert done["status"] == "Failed"
    assert message in done["error"]["message"], done["error"]


def test_the_app_gets_the_event_the_run_and_the_environment(
    dev: tuple[LiveServer, str], stand_in: StandIn,
) -> None:
    done = run_for(*dev, {"answer": {"status": "SUCCESS", "output": {"ok": 1}}})

    assert (done["status"], done["output"]) == ("Completed", {"ok": 1})
    execution = stand_in.executions[-1]
    assert execution["job"] == {"id": "job", "version": "1"}
    assert execution["run"]["id"] == done["id"] and execution["tasks"] == []
    assert execution["environment"]["type"] == "DEVELOPMENT"
    assert execution["event"]["name"] == "stand.in"


def test_tasks_of_another_run_and_unknown_runs_are_404(
    dev: tuple[LiveServer, str], stand_in: StandIn,
) -> None:
    server, key = dev
    first = run_for(server, key, {"answer": {"status": "SUCCESS"}})
    second = run_for(server, key, {"answer": {"status": "SUCCESS"}})
    auth = {"authorization": f"Bearer {key}"}
    made = httpx.post(f"{server.url}/api/v1/runs/{first['id']}/tasks", headers=auth,
                      json={"idempotencyKey": "k", "name": "t"}, timeout=10)
    assert made.status_code == 200 and made.json()["status"] == "RUNNING", made.text
    again = httpx.post(f"{server.url}/api/v1/runs/{first['id']}/tasks", headers=auth,
                       json={"idempotencyKey": "k", "name": "t"}, timeout=10)
    assert again.json()["id"] == made.json()["id"]  # found again by its key

    task = made.json()["id"]
    other = httpx.post(f"{server.url}/api/v1/runs/{second['id']}/tasks/{task}/complete",
                       headers=auth, json={"output": 1}, timeout=10)
    assert other.status_code == 404 and "task" in other.json()["error"]
    unknown = httpx.post(f"{server.url}/api/v1/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV/tasks",
                         headers=auth, json={"idempotencyKey": "k"}, timeout=10)
    assert unknown.status_code == 404 and "run" in unknown.json()["error"]
    ended = httpx.post(f"{server.url}/api/v1/runs/{first['id']}/tasks", headers=auth,
                       json={"idempotencyKey": "w", "name": "Wait for Request",
                             "callback": {"enabled": True}}, timeout=10)
    assert ended.status_code == 200 and ended.json()["status"] == "WAITING", ended.text
    late = httpx.post(ended.json()["callbackUrl"], json={"x": 1}, timeout=10)
    assert late.status_code == 409 and "ended" in late.json()["error"]  # the run ended


def test_a_completed_task_of_another_run_is_not_completed_and_fails_the_run(
    dev: tuple[LiveServer, str], stand_in: StandIn,
) -> None:
    """``AUTO_YIELD_EXECUTION_WITH_COMPLETED_TASK`` completes the task it names only when it is
    the run's own; naming another run's fails the run as other answers naming one do."""
    server, key = dev
    first = run_for(server, key, {"answer": {"status": "SUCCESS"}})
    auth = {"authorization": f"Bearer {key}"}
    task = {"idempotencyKey": "theirs", "name": "t"}
    made = httpx.post(f"{server.url}/api/v1/runs/{first['id']}/tasks", headers=auth,
                      json=task, timeout=10)
    assert made.status_code == 200 and made.json()["status"] == "RUNNING", made.text

    done = run_for(server, key, {"answer": {
        "status": "AUTO_YIELD_EXECUTION_WITH_COMPLETED_TASK", "id": made.json()["id"],
        "properties": [], "output": '"stolen"', "data": {}}})

    assert done["status"] == "Failed"
    assert "names a task this run does not have" in done["error"]["message"], done["error"]
    again = httpx.post(f"{server.url}/api/v1/runs/{first['id']}/tasks", headers=auth,
                       json=task, timeout=10)
    assert again.json()["id"] == made.json()["id"]
    assert (again.json()["status"], again.json()["output"]) == ("RUNNING", None)


def test_bad_callbacks_are_refused_naming_the_field(
    dev: tuple[LiveServer, str], stand_in: StandIn,
) -> None:
    server, key = dev
    ended = run_for(server, key, {"answer": {"status": "SUCCESS"}})
    other = run_for(server, key, {"answer": {"status": "SUCCESS"}})
    auth = {"authorization": f"Bearer {key}"}

    def post(path: str, body: Any) -> httpx.Response:
        return httpx.post(f"{server.url}{path}", headers=auth, json=body, timeout=10)

    made = post(f"/api/v1/runs/{ended['id']}/tasks", {
        "idempotencyKey": "cb", "name": "Wait for Event",
        "callback": {"enabled": True, "timeoutInSeconds": 60}})
    assert made.status_code == 200 and made.json()["status"] == "WAITING", made.text
    url = made.json()["callbackUrl"]
    assert url.endswith(f"/api/v1/runs/{ended['id']}/tasks/{made.json()['id']}/callback")
    plain = post(f"/api/v1/runs/{ended['id']}/tasks", {"idempotencyKey": "p", "name": "p"})
    plain_url = url.replace(made.json()["id"], plain.json()["id"])
    wrong_run = url.replace(ended["id"], other["id"])
    dispatch = "/api/v1/event-dispatchers/ephemeral"
    cases = [
        ({"url": "http://x/y", "name": "e"}, 400, "url"),
        ({"url": url, "name": [f"e{i}" for i in range(26)]}, 400, "name"),
        ({"url": url, "name": []}, 400, "name"),
        ({"url": url, "name": ["a", 5]}, 400, "name"),
        ({"url": url, "name": 5}, 400, "name"),
        ({"url": url, "name": "e", "filter": {"a": "b"}}, 400, "filter"),
        ({"url": url, "name": "e", "contextFilter": []}, 400, "contextFilter"),
        ({"url": url, "name": "e", "timeoutInSeconds": 5}, 400, "timeoutInSeconds"),
        ({"url": url, "name": "e", "extra": 1}, 400, "extra"),
        ({"url": wrong_run, "name": "e"}, 404, "task"),
        ({"url": plain_url, "name": "e"}, 409, "does not wait"),
        ({"url": url, "name": "e"}, 409, "has ended"),
    ]
    for body, status, named in cases:
        reply = post(dispatch, body)
        assert reply.status_code == status and named in reply.json()["error"], (body, reply.text)
    runs_before = Api(server.url).runs(f"{CLIENT}-job")
    for options, status in (({"callbackUrl": "nope"}, 400), ({"callbackUrl": url}, 409)):
        reply = post("/api/v1/jobs/job/invoke", {"payload": {}, "options": options})
        assert reply.status_code == status and "callbackUrl" in reply.json()["error"], reply.text
    unknown = post("/api/v1/jobs/no-such-job/invoke", {"payload": {}})
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["error"] == "job 'no-such-job' not found"
    assert Api(server.url).runs(f"{CLIENT}-job") == runs_before  # no run started
    bad_timeout = post(f"/api/v1/runs/{other['id']}/tasks", {
        "idempotencyKey": "t", "callback": {"enabled": True, "timeoutInSeconds": -1}})
    assert bad_timeout.status_code == 400 and "timeoutInSeconds" in bad_timeout.json()["error"]


def test_parts_tidings_does_not_run_are_refused_at_indexing(
    dev: tuple[LiveServer, str],
) -> None:
    server, key = dev
    scheduled = {**JOB, "id": "cron", "trigger": {"type": "scheduled", "schedule": {
        "type": "interval", "options": {"seconds": 90}}}}  # no cron says every 90 s
    with_integration = {**JOB, "id": "gh", "integrations": {"github": {"id": "github"}}}
    index = {**INDEX, "jobs": [JOB, scheduled, with_integration],
             "sources": [{"key": "s"}], "dynamicTriggers": [{"id": "d"}]}
    app = StandIn(key, index)
    try:
        reply = Api(server.url).post("/v1/apps/sync", {"url": app.url})
        assert reply.status_code == 422, reply.text
        error = reply.json()["error"]
        for named in ("1 HTTP sources", "1 dynamic triggers", "'cron': an interval of 90 s",
                      "'gh': integrations (github)"):
            assert named in error, error
        listed = wait_for(lambda: next((a for a in Api(server.url).apps()
                                        if a["url"] == app.url), None), timeout=10,
                          what="the app's record")
        assert listed["status"] == "failed" and "dynamic triggers" in listed["error"]
        assert not [f for f in Api(server.url).get("/v1/functions")
                    if f["url"] == app.url]
    finally:
        app.close()


def test_an_app_refusing_every_key_is_not_indexed(dev: tuple[LiveServer, str]) -> None:
    server, _ = dev
    app = StandIn("tr_dev_someOtherKey", INDEX)
    try:
        reply = Api(server.url).post("/v1/apps/sync", {"url": app.url})
        assert reply.status_code == 422 and "refused every trigger key" in reply.json()["error"]
    finally:
        app.close()


@pytest.mark.parametrize(("task", "named"), [
    ({"operation": "teleport", "params": {"url": "http://x"}}, "operation"),
    ({"operation": "fetch", "params": "http://x"}, "params"),
    ({"operation": "fetch", "params": {"url": "ftp://x"}}, "params.url"),
    ({"operation": "fetch", "params": {"url": "http://x", "requestInit": {"body": 5}}},
     "params.requestInit.body"),
    ({"operation": "fetch", "params": {"url": "http://x", "retry": {"5x": {
        "strategy": "backoff"}}}}, "params.retry.5x"),
    ({"operation": "fetch", "params": {"url": "http://x", "retry": {"500": {
        "strategy": "guess"}}}}, "params.retry.500.strategy"),
    ({"operation": "fetch", "params": {"url": "http://x", "timeout": {"durationInMs": -1}}},
     "params.timeout.durationInMs"),
    ({"operation": "fetch-poll", "params": {"url": "http://x", "interval": 1,
                                            "responseFilter": {}}}, "params.interval"),
    ({"operation": "fetch-poll", "params": {"url": "http://x"}}, "params.responseFilter"),
])
def test_bad_background_fetches_are_refused_naming_the_field_and_not_stored(
    dev: tuple[LiveServer, str], stand_in: StandIn, task: dict[str, Any], named: str,
) -> None:
    server, key = dev
    run = run_for(server, key, {"answer": {"status": "SUCCESS"}})
    auth = {"authorization": f"Bearer {key}"}
    path = f"{server.url}/api/v1/runs/{run['id']}/tasks"

    refused = httpx.post(path, headers=auth, json={"idempotencyKey": "op", "name": "fetch",
                                                   **task}, timeout=10)
    plain = httpx.post(path, headers=auth, json={"idempotencyKey": "op", "name": "plain"},
                       timeout=10)

    assert refused.status_code in (400, 422), refused.text
    assert refused.json()["error"].startswith(named), refused.text
    assert (plain.json()["name"], plain.json()["operation"]) == ("plain", None)  # none kept
