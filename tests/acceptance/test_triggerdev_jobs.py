"""Scenario: an unmodified Trigger.dev v2 app (``tests/node/trigger_app.mjs``: ``@trigger.dev/sdk``
2.3.18 Jobs served by ``@trigger.dev/express``) indexed and run by Tidings — under ``tidings dev
-u URL`` on SQLite, and ``tidings serve`` on PostgreSQL synced through ``POST /v1/apps/sync``.

The app appends ``<run id> <task>`` to a log each time a task body runs, so the tests see how
often each task ran; the runs are read back through Tidings' own runs API, where a Job's tasks
are the run's steps.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import loopback
from tests.acceptance.sdk_apps import (
    NODE_DIR,
    Api,
    AppProcess,
    clean_env,
    node_binary,
    production_keys,
    stop_app,
    tidings_cli,
    wait_for,
)
from tests.conftest import LiveServer, free_port, fresh_schema, start_server, stop_server

pytestmark = pytest.mark.node
APP = "tidings-v2"


@dataclass
class Stack:
    mode: str
    server: LiveServer
    app: AppProcess
    api: Api
    key: str  # the app's trigger key, which sends events too
    task_log: Path
    db: str  # the SQLite file, or the PostgreSQL URL
    restart: Any  # () -> None: stop the server and start it again on the same port and db

    def send(self, event: dict[str, Any]) -> dict[str, Any]:
        reply = httpx.post(f"{self.server.url}/api/v1/events", json={"event": event},
                           headers={"authorization": f"Bearer {self.key}"}, timeout=10)
        assert reply.status_code == 200, reply.text
        record: dict[str, Any] = reply.json()
        return record

    def logs(self) -> str:
        return self.app.output() + (self.server.data_dir / "server.log").read_text(
            errors="replace")

    def run_of(self, record: dict[str, Any], job: str) -> dict[str, Any]:
        return self.api.run_of(record["id"], f"{APP}-{job}")

    def finished(self, run: dict[str, Any]) -> dict[str, Any]:
        return self.api.finished(run["id"], logs=self.logs)

    def ran(self, run_id: str) -> list[str]:
        lines = self.task_log.read_text().splitlines() if self.task_log.exists() else []
        return [line.split(" ", 1)[1] for line in lines if line.startswith(run_id + " ")]


def start_trigger_app(tmp: Path, key: str, server_port: int, task_log: Path) -> AppProcess:
    port = free_port()
    log_path = tmp / "trigger-app.log"
    log = open(log_path, "ab")  # noqa: SIM115
    env = clean_env(TRIGGER_API_KEY=key, TRIGGER_API_URL=f"http://127.0.0.1:{server_port}",
                    PORT=str(port), TASK_LOG=str(task_log))
    process = subprocess.Popen([node_binary(), "trigger_app.mjs"], cwd=NODE_DIR, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    app = AppProcess(f"http://127.0.0.1:{port}/api/trigger", port, process, log, log_path)

    def answers() -> bool | None:
        if process.poll() is not None:
            raise AssertionError(f"the app exited: {app.output()}")
        try:
            httpx.head(app.url, timeout=1)
            return True
        except httpx.TransportError:
            return None

    wait_for(answers, timeout=30, what="the v2 app to listen", logs=app.output)
    return app


@pytest.fixture(scope="module", params=["dev-sqlite",
                                        pytest.param("serve-postgres", marks=pytest.mark.postgres)])
def stack(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp(request.param)
    task_log = tmp / "tasks.log"
    port = free_port()
    with contextlib.ExitStack() as cleanup:
        if request.param == "dev-sqlite":
            db = where = str(tmp / "dev.db")
            env = {"TIDINGS_DATA_DIR": str(tmp / "server")}  # the keyring the server reads
            args: tuple[str, ...] = ("--db", db, "--no-discovery", "--retry-interval", "0.2")
            command, server_env, api_key = "dev", env, None
            key = tidings_cli(tmp, env, "keys", "create", "--env", "dev", "--kind", "trigger",
                              "--db", db)
        else:
            url = where = cleanup.enter_context(fresh_schema())
            keys = production_keys(tmp, db=url)
            args = ("--db", url, "--env", "production", "--retry-interval", "0.2")
            command, server_env, api_key = "serve", keys.env, keys.api_key
            key = tidings_cli(tmp, keys.env, "keys", "create", "--env", "production",
                              "--kind", "trigger", "--db", url)
        app = start_trigger_app(tmp, key, port, task_log)
        cleanup.callback(stop_app, app)
        if command == "dev":
            args = (*args, "-u", app.url)

        def start() -> LiveServer:
            return start_server(tmp, *args, command=command, env=server_env, port=port)

        made = Stack(command, start(), app, Api(f"http://127.0.0.1:{port}", api_key), key,
                     task_log, where, lambda: None)

        def restart() -> None:
            stop_server(made.server)
            made.server = start()

        made.restart = restart
        cleanup.callback(lambda: stop_server(made.server))
        if command == "serve":
            synced = made.api.post("/v1/apps/sync", {"url": app.url})
            assert synced.status_code == 200, synced.text
        wait_for(lambda: made.api.synced(app.url), timeout=30, what="the v2 app to be indexed",
                 logs=made.logs)
        yield made


def delivered(stack: Stack, event_id: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        event: dict[str, Any] = stack.api.get(f"/v1/events/{event_id}")
        return event if event["delivered_at"] else None

    return wait_for(check, timeout=30, what=f"the delivery of {event_id}")


def test_the_app_is_indexed_as_functions_with_v2_triggers(stack: Stack) -> None:
    [app] = [a for a in stack.api.apps() if a["url"] == stack.app.url]
    assert (app["app_id"], app["sdk"], app["functions"]) == (APP, "trigger.dev:v2", 19)
    functions = {f["slug"]: f for f in stack.api.get("/v1/functions")}
    assert functions[f"{APP}-flow"]["triggers"] == [{"event": "v2.flow", "source": "tidings"}]
    assert functions[f"{APP}-filtered"]["triggers"] == [{
        "event": "v2.order", "source": "shop",
        "filter": {"tier": ["pro"], "amount": [{"$gt": 100}]}}]


def test_tasks_a_wait_and_an_event_run_each_task_once_across_a_restart(stack: Stack) -> None:
    record = stack.send({"name": "v2.flow", "payload": {"n": 1, "wait": 3}})
    run = stack.run_of(record, "flow")
    wait_for(lambda: stack.api.run(run["id"])["status"] == "Sleeping" or None, timeout=30,
             what="the run to sleep in io.wait", logs=stack.logs)
    if stack.mode == "dev":
        stack.restart()  # in the middle: two tasks done, the wait pending

    done = stack.finished(run)

    assert done["status"] == "Completed", done
    sent = done["output"]["sent"]
    assert done["output"] == {"n": 21, "sent": sent}
    assert sorted(stack.ran(run["id"])) == ["first", "second", "third"]
    assert [(s["name"], s["kind"]) for s in done["steps"]] == [
        ("first", "run"), ("second", "run"), ("log", "run"), ("pause", "sleep"),
        ("third", "run"), ("announce", "run")]
    announced = stack.api.get(f"/v1/events/{sent}")
    assert (announced["name"], announced["data"]) == ("v2.flow.done", {"n": 21})
    v2_run = httpx.get(f"{stack.server.url}/api/v2/runs/{run['id']}", timeout=10,
                       headers={"authorization": f"Bearer {stack.key}"}).json()
    assert v2_run["status"] == "SUCCESS"
    assert [t["displayKey"] for t in v2_run["tasks"]] == [s["name"] for s in done["steps"]]


def test_source_and_filter_match_as_v2_does(stack: Stack) -> None:
    pro = stack.send({"name": "v2.order", "source": "shop",
                      "payload": {"tier": "pro", "amount": 150, "id": "o1"}})
    others = [stack.send(event) for event in (
        {"name": "v2.order", "source": "shop", "payload": {"tier": "free", "amount": 150}},
        {"name": "v2.order", "source": "shop", "payload": {"tier": "pro", "amount": 50}},
        {"name": "v2.order", "source": "shop", "payload": {"tier": "pro", "amount": "150"}},
        {"name": "v2.order", "source": "web", "payload": {"tier": "pro", "amount": 150}},
        {"name": "v2.order", "payload": {"tier": "pro", "amount": 150}})]

    assert stack.finished(stack.run_of(pro, "filtered"))["output"] == {"matched": "o1"}
    for record in others:
        assert stack.api.runs_of(delivered(stack, record["id"])["id"]) == [], record


def test_a_task_that_throws_twice_succeeds_on_its_third_attempt(stack: Stack) -> None:
    run = stack.run_of(stack.send({"name": "v2.flaky"}), "retrying")

    done = stack.finished(run)

    assert (done["status"], done["output"]) == ("Completed", {"attempts": 3}), done
    assert stack.ran(run["id"]) == ["flaky 1", "flaky 2", "flaky 3"]
    [step] = done["steps"]
    assert (step["name"], step["status"], step["output"]) == (
        "flaky", "completed", {"data": {"attempts": 3}})


def test_a_payload_failing_the_schema_marks_the_run_invalid_with_the_reason(stack: Stack) -> None:
    bad = stack.finished(stack.run_of(stack.send({"name": "v2.typed",
                                                  "payload": {"userId": 5}}), "typed"))
    good = stack.finished(stack.run_of(stack.send({"name": "v2.typed",
                                                   "payload": {"userId": "u1"}}), "typed"))

    assert bad["status"] == "Failed"
    assert bad["error"]["name"] == "InvalidPayload"
    assert "userId" in bad["error"]["message"] and "string" in bad["error"]["message"]
    v2_run = httpx.get(f"{stack.server.url}/api/v2/runs/{bad['id']}", timeout=10,
                       headers={"authorization": f"Bearer {stack.key}"}).json()
    assert v2_run["status"] == "INVALID_PAYLOAD"
    assert (good["status"], good["output"]) == ("Completed", {"user": "u1"})


def test_random_try_the_store_send_events_and_cancel_event(stack: Stack) -> None:
    done = stack.finished(stack.run_of(stack.send({"name": "v2.toolbox",
                                                   "payload": {"who": "ada"}}), "toolbox"))

    assert done["status"] == "Completed", done
    output = done["output"]
    assert output["roll"] in range(1, 8)
    assert output["caught"] == {"caught": "no luck"}
    assert output["stored"] == {"hello": "ada"} and output["cancelled"] is True
    names = [s["name"] for s in done["steps"]]
    assert names == ["roll", "put", "get", "later", "cancel", "invoke"]
    child = stack.finished(stack.api.run(output["started"]))
    assert (child["function"], child["output"]) == (f"{APP}-invoked", {"doubled": 42})
    assert child["event"]["data"] == {"x": 21}
    never = stack.api.get("/v1/events", name="v2.never")
    assert [e["cancelled_at"] is not None for e in never] == [True]


def doubled(x: int) -> dict[str, Any]:
    """The status the ``invoked`` Job publishes, as v2 keeps it: its last value, the first in
    its history."""
    return {"key": "progress", "label": "Doubled", "state": "success",
            "data": {"doubled": x * 2},
            "history": [{"label": "Doubling", "state": "loading", "data": {"x": x}}]}


def client(stack: Stack, operation: str, *args: Any) -> Any:
    """One call of the official v2 client (``tests/node/trigger_events.mjs``): its result."""
    done = subprocess.run([node_binary(), "trigger_events.mjs", stack.server.url, stack.key,
                           operation, *(json.dumps(arg) for arg in args)], cwd=NODE_DIR,
                          env=clean_env(), capture_output=True, text=True, timeout=60,
                          check=False)
    answer = json.loads(done.stdout)
    assert "result" in answer, (operation, answer, done.stderr)
    return answer["result"]


def v2_get(stack: Stack, path: str) -> dict[str, Any]:
    reply = httpx.get(f"{stack.server.url}{path}", timeout=10,
                      headers={"authorization": f"Bearer {stack.key}"})
    assert reply.status_code == 200, reply.text
    found: dict[str, Any] = reply.json()
    return found


def v2_post(stack: Stack, path: str, body: Any = None, method: str = "POST") -> httpx.Response:
    return httpx.request(method, f"{stack.server.url}{path}", json=body, timeout=10,
                         headers={"authorization": f"Bearer {stack.key}"})


def waiting(stack: Stack, run: dict[str, Any], status: str = "Waiting") -> None:
    wait_for(lambda: stack.api.run(run["id"])["status"] == status or None, timeout=30,
             what=f"run {run['id']} to be {status}", logs=stack.logs)


def test_wait_for_event_resumes_with_the_event_matching_its_filters(stack: Stack) -> None:
    run = stack.run_of(stack.send({"name": "v2.wait.start", "payload": {
        "orderId": "o7", "source": "shop", "contextFilter": {"region": ["eu"]}}}), "waiter")
    waiting(stack, run)
    for wrong in ({"name": "v2.approval", "source": "shop", "payload": {"orderId": "o8"},
                   "context": {"region": "eu"}},
                  {"name": "v2.approval", "source": "web", "payload": {"orderId": "o7"},
                   "context": {"region": "eu"}},
                  {"name": "v2.approval", "source": "shop", "payload": {"orderId": "o7"},
                   "context": {"region": "us"}}):
        stack.send(wrong)
    right = stack.send({"name": "v2.approval", "source": "shop", "context": {"region": "eu"},
                        "payload": {"orderId": "o7", "by": "ada"}})

    done = stack.finished(run)

    assert done["status"] == "Completed", done
    approval = done["output"]["approval"]
    assert approval == {"id": right["id"], "name": "v2.approval", "source": "shop",
                        "payload": {"orderId": "o7", "by": "ada"},
                        "timestamp": approval["timestamp"], "context": {"region": "eu"}}
    assert done["output"]["after"] == {"ok": True}
    assert stack.ran(run["id"]) == ["after"]
    assert [(s["name"], s["kind"]) for s in done["steps"]] == [("approval", "wait"),
                                                              ("after", "run")]


def test_wait_for_event_on_several_names_ends_with_the_first_matching_one(
        stack: Stack) -> None:
    run = stack.run_of(stack.send({"name": "v2.wait.start", "payload": {
        "orderId": "o9", "names": ["v2.approved", "v2.rejected"]}}), "waiter")
    waiting(stack, run)
    stack.send({"name": "v2.rejected", "payload": {"orderId": "other"}})  # filtered out
    stack.send({"name": "v2.approval", "payload": {"orderId": "o9"}})  # not a name it waits on
    rejected = stack.send({"name": "v2.rejected", "payload": {"orderId": "o9", "why": "late"}})

    done = stack.finished(run)
    approved = stack.send({"name": "v2.approved", "payload": {"orderId": "o9"}})

    assert done["status"] == "Completed", done
    approval = done["output"]["approval"]
    assert (approval["id"], approval["name"], approval["payload"]) == (
        rejected["id"], "v2.rejected", {"orderId": "o9", "why": "late"})
    assert [(s["name"], s["kind"]) for s in done["steps"]] == [("approval", "wait"),
                                                              ("after", "run")]
    assert stack.ran(run["id"]) == ["after"]
    delivered(stack, approved["id"])
    assert stack.api.run(run["id"])["steps"] == done["steps"]  # the other name ends nothing


def test_wait_for_event_on_several_names_times_out_once(stack: Stack) -> None:
    run = stack.run_of(stack.send({"name": "v2.wait.start", "payload": {
        "orderId": "never", "timeout": 10, "names": ["v2.approved", "v2.rejected"]}}),
        "waiter")
    waiting(stack, run)

    done = stack.finished(run)

    assert done["status"] == "Failed", done
    assert "Remote callback timeout - no requests received" in done["error"]["message"]
    assert [(s["name"], s["kind"], s["output"]) for s in done["steps"]] == [
        ("approval", "wait", None)]


def test_wait_for_event_times_out_as_v2_does(stack: Stack) -> None:
    run = stack.run_of(stack.send({"name": "v2.wait.start", "payload": {
        "orderId": "never", "timeout": 10}}), "waiter")
    waiting(stack, run)

    done = stack.finished(run)

    assert done["status"] == "Failed", done
    assert "Remote callback timeout - no requests received" in done["error"]["message"]
    assert stack.ran(run["id"]) == []


def test_invoke_and_wait_for_completion_gives_the_parent_each_childs_end(stack: Stack) -> None:
    run = stack.run_of(stack.send({"name": "v2.parent", "payload": {"x": 5}}), "parent")

    done = stack.finished(run)

    assert done["status"] == "Completed", done
    good, bad = done["output"]["good"], done["output"]["bad"]
    assert good == {"ok": True, "status": "SUCCESS", "output": {"doubled": 10}, "id": good["id"],
                    "payload": {"x": 5}, "statuses": [doubled(5)]}
    assert bad == {"ok": False, "status": "FAILURE", "message": "refused 5", "id": bad["id"]}
    child = stack.api.run(good["id"])
    assert (child["function"], child["status"], child["output"]) == (
        f"{APP}-invoked", "Completed", {"doubled": 10})
    failed = stack.api.run(bad["id"])
    assert (failed["function"], failed["status"]) == (f"{APP}-failing", "Failed")
    assert stack.ran(run["id"]) == ["parent done"]
    assert [(s["name"], s["kind"]) for s in done["steps"]] == [("good", "invoke"),
                                                              ("bad", "invoke")]


def test_a_run_cancelled_while_a_task_runs_stops_there(stack: Stack, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    run = stack.run_of(stack.send({"name": "v2.gated", "payload": {"gate": str(gate)}}),
                       "gated")
    wait_for(lambda: stack.ran(run["id"]) == ["hold"] or None, timeout=30,
             what="the held task to start", logs=stack.logs)

    cancelled = v2_post(stack, f"/api/v1/runs/{run['id']}/cancel")
    gate.touch()

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "CANCELED"
    wait_for(lambda: len(stack.ran(run["id"])) == 2 or None, timeout=30,
             what="the SDK to stop the job", logs=stack.logs)
    assert stack.ran(run["id"]) == ["hold", "stopped CanceledWithTaskError"]
    done = stack.api.run(run["id"])
    assert done["status"] == "Cancelled" and done["steps"] == [], done
    assert v2_get(stack, f"/api/v2/runs/{run['id']}")["status"] == "CANCELED"


def test_a_run_cancelled_during_io_wait_never_runs_its_later_tasks(stack: Stack) -> None:
    run = stack.run_of(stack.send({"name": "v2.flow", "payload": {"n": 1, "wait": 3600}}),
                       "flow")
    waiting(stack, run, "Sleeping")

    cancelled = v2_post(stack, f"/api/v1/runs/{run['id']}/cancel")

    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELED"
    done = stack.api.run(run["id"])
    assert done["status"] == "Cancelled"
    assert sorted(stack.ran(run["id"])) == ["first", "second"]
    assert "pause" not in [s["name"] for s in done["steps"]]


def test_statuses_and_the_runs_of_a_job_through_the_client(stack: Stack, tmp_path: Path) -> None:
    runs = [stack.run_of(stack.send({"name": "v2.invoked", "payload": {"x": x}}), "invoked")
            for x in (3, 4)]
    for run in runs:
        assert stack.finished(run)["status"] == "Completed"

    read = client(stack, "run", runs[1]["id"])
    assert (read["status"], read["statuses"]) == ("SUCCESS", [doubled(4)])
    assert [t["displayKey"] for t in read["tasks"]] == ["progress", "progress-done"]
    statuses = client(stack, "statuses", runs[0]["id"])
    assert statuses == {"run": {"id": runs[0]["id"], "status": "SUCCESS",
                                "output": {"doubled": 6}}, "statuses": [doubled(3)]}
    first = client(stack, "runs", "invoked", {"take": 1})
    assert [r["id"] for r in first["runs"]] == [runs[1]["id"]]
    listed = [runs[1]["id"]]
    cursor = first["nextCursor"]
    while cursor:
        page = client(stack, "runs", "invoked", {"take": 50, "cursor": cursor})
        listed += [r["id"] for r in page["runs"]]
        cursor = page.get("nextCursor")
    assert listed.index(runs[1]["id"]) < listed.index(runs[0]["id"])
    assert len(listed) == len(set(listed)) == len(stack.api.runs(f"{APP}-invoked"))

    gate = tmp_path / "gate"
    held = stack.run_of(stack.send({"name": "v2.gated", "payload": {"gate": str(gate)}}),
                        "gated")
    wait_for(lambda: stack.ran(held["id"]) == ["hold"] or None, timeout=30,
             what="the held task to start", logs=stack.logs)
    cancelled = client(stack, "cancelJobRuns", "gated")
    gate.touch()
    assert held["id"] in cancelled["cancelledRunIds"]
    assert stack.api.run(held["id"])["status"] == "Cancelled"
    wait_for(lambda: len(stack.ran(held["id"])) == 2 or None, timeout=30,
             what="the SDK to stop the job", logs=stack.logs)


def test_bad_status_updates_are_refused_and_change_nothing(stack: Stack) -> None:
    run = stack.run_of(stack.send({"name": "v2.invoked", "payload": {"x": 1}}), "invoked")
    stack.finished(run)
    path = f"/api/v1/runs/{run['id']}/statuses/progress"
    for body, named in (({"state": "done"}, "state"), ({"label": 5}, "label"),
                        ({"data": [1]}, "data"), ({"label": "x", "extra": 1}, "extra"),
                        ([1], "object")):
        reply = v2_post(stack, path, body, "PUT")
        assert reply.status_code == 400 and named in reply.json()["error"], reply.text
    assert v2_post(stack, "/api/v1/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV/statuses/progress",
                   {"label": "x"}, "PUT").status_code == 404
    assert v2_get(stack, f"/api/v2/runs/{run['id']}/statuses")["statuses"] == [doubled(1)]
    unknown = httpx.get(f"{stack.server.url}/api/v1/jobs/no-such-job/runs", timeout=10,
                        headers={"authorization": f"Bearer {stack.key}"})
    assert unknown.status_code == 404 and "no-such-job" in unknown.json()["error"]


def test_cron_and_interval_jobs_run_on_their_schedule(stack: Stack) -> None:
    functions = {f["slug"]: f for f in stack.api.get("/v1/functions")}
    for job in ("every-minute", "each-60s"):  # intervalTrigger({seconds: 60}) is this cron
        assert functions[f"{APP}-{job}"]["triggers"] == [{"cron": "* * * * *"}]
    for job in ("every-minute", "each-60s"):
        # The first tick is at most a minute away.
        ran = wait_for(lambda job=job: next((r for r in stack.api.runs(f"{APP}-{job}")
                                             if r["status"] == "Completed"), None),
                       timeout=75, what=f"a tick of {job}", logs=stack.logs)
        done = stack.api.run(ran["id"])
        assert done["output"]["event"] == "trigger.scheduled", done
        tick = datetime.fromisoformat(done["output"]["ts"].replace("Z", "+00:00"))
        assert (tick.second, tick.microsecond) == (0, 0)  # on the minute, UTC


def test_io_parallel_waits_for_a_sleeping_and_a_retried_child_and_runs_each_task_once(
        stack: Stack) -> None:
    run = stack.run_of(stack.send({"name": "v2.fanout", "payload": {"nap": 2}}), "fanout")

    done = stack.finished(run)

    assert (done["status"], done["output"]) == ("Completed", {"squares": [1, 4, 9]}), done
    assert sorted(stack.ran(run["id"])) == ["fanout done", "flaky 1", "flaky 2", "square 1",
                                            "square 2", "square 3"]
    steps = {s["name"]: s for s in done["steps"]}
    assert sorted(steps) == ["fan", "flaky-3", "nap-2", "square-1", "square-2", "square-3"]
    assert steps["nap-2"]["kind"] == "sleep"
    assert steps["fan"]["output"] == {"data": [1, 4, 9]}
    v2_run = v2_get(stack, f"/api/v2/runs/{run['id']}")
    assert (v2_run["status"], v2_run["output"]) == ("SUCCESS", {"squares": [1, 4, 9]})


def test_batch_invoke_and_wait_gives_each_childs_end_in_order(stack: Stack) -> None:
    run = stack.run_of(stack.send({"name": "v2.batch", "payload": {"xs": [1, 2, 3]}}), "batch")

    done = stack.finished(run)

    assert done["status"] == "Completed", done
    ends = done["output"]
    assert [(e["ok"], e["output"]) for e in ends] == [
        (True, {"doubled": 2}), (True, {"doubled": 4}), (True, {"doubled": 6})]
    children = [stack.api.run(e["id"]) for e in ends]
    assert [(c["function"], c["event"]["data"]) for c in children] == [
        (f"{APP}-invoked", {"x": x}) for x in (1, 2, 3)]
    assert stack.ran(run["id"]) == ["batch done"]
    assert sorted((s["name"], s["kind"]) for s in done["steps"]) == [
        ("0", "invoke"), ("1", "invoke"), ("2", "invoke"), ("batch", "run")]


class Remote:
    """A third-party HTTP server on loopback for background fetches: ``/flaky`` answers 500
    once, then echoes the request; ``/plain`` is text with 201; ``/job`` is pending on its
    first poll and done after; anything else is 404. Each request is kept as
    ``(method, path, headers, body)``."""

    def __init__(self) -> None:
        remote = self
        self.requests: list[tuple[str, str, dict[str, str], str]] = []

        class Handler(loopback.Handler):
            def do_GET(self) -> None:
                self.serve()

            def do_POST(self) -> None:
                self.serve()

            def serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
                seen = sum(1 for r in remote.requests if r[1] == self.path)
                remote.requests.append((self.command, self.path,
                                        {k.lower(): v for k, v in self.headers.items()}, body))
                if self.path == "/flaky":
                    if seen == 0:
                        return self.answer(500, '{"error": "try later"}')
                    return self.answer(200, json.dumps({"echo": json.loads(body),
                                                        "token": self.headers["x-token"]}))
                if self.path == "/plain":
                    return self.answer(201, "hello", kind="text/plain")
                if self.path == "/job":
                    state = {"state": "pending"} if seen == 0 else {"state": "done", "n": 7}
                    return self.answer(200, json.dumps(state))
                return self.answer(404, '{"error": "no such thing"}')

        self._server = loopback.Loopback(Handler)
        self.url = self._server.url

    def close(self) -> None:
        self._server.close()


def test_background_fetches_are_made_by_tidings_with_retries_and_polls(stack: Stack) -> None:
    remote = Remote()
    try:
        run = stack.run_of(stack.send({"name": "v2.fetch", "payload": {"base": remote.url}}),
                           "fetcher")
        done = stack.finished(run)
    finally:
        remote.close()

    assert done["status"] == "Completed", done
    output = done["output"]
    assert output["body"] == {"echo": {"q": 1}, "token": "t1"}
    assert output["response"] == {"status": 201, "body": "hello"}
    assert output["polled"] == {"state": "done", "n": 7}
    assert "answered 404" in output["missing"]
    assert [(m, p) for m, p, _, _ in remote.requests] == [
        ("POST", "/flaky"), ("POST", "/flaky"), ("GET", "/plain"), ("GET", "/job"),
        ("GET", "/job"), ("GET", "/missing")]
    assert all(headers["x-token"] == "t1" and body == '{"q":1}'
               for _, path, headers, body in remote.requests if path == "/flaky")
    assert stack.ran(run["id"]) == ["fetched"]
    steps = {s["name"]: s for s in done["steps"]}
    assert sorted(steps) == ["flaky", "plain", "poll"]
    assert steps["flaky"]["output"] == {"data": output["body"]}


def callback_url(stack: Stack, run: dict[str, Any]) -> str:
    noted = wait_for(lambda: next((line[4:] for line in stack.ran(run["id"])
                                   if line.startswith("url ")), None),
                     timeout=30, what="the job to note its callback URL", logs=stack.logs)
    return str(noted)


def test_wait_for_request_completes_with_the_body_posted_to_its_callback_url(
        stack: Stack) -> None:
    run = stack.run_of(stack.send({"name": "v2.request"}), "requester")
    url = callback_url(stack, run)
    waiting(stack, run)
    assert url.startswith(f"{stack.server.url}/api/v1/runs/{run['id']}/tasks/")
    secret = url.rsplit("/", 1)[1]

    forged = httpx.post(url.replace(secret, "x" * len(secret)), json={"approved": False},
                        timeout=10)
    not_json = httpx.post(url, content=b"[1]", timeout=10)
    posted = httpx.post(url, json={"approved": True, "by": "ada"}, timeout=10)  # no key
    again = httpx.post(url, json={"approved": False}, timeout=10)

    assert forged.status_code == 404, forged.text
    assert not_json.status_code == 400 and "body" in not_json.json()["error"], not_json.text
    assert posted.status_code == 200, posted.text
    assert again.status_code == 409, again.text
    done = stack.finished(run)
    assert (done["status"], done["output"]) == ("Completed", {
        "got": {"approved": True, "by": "ada"}}), done
    assert stack.ran(run["id"]) == [f"url {url}", "answered"]
    assert [(s["name"], s["kind"], s["output"]) for s in done["steps"]] == [
        ("approve", "wait", {"approved": True, "by": "ada"})]


def test_wait_for_request_times_out_as_v2_does(stack: Stack) -> None:
    run = stack.run_of(stack.send({"name": "v2.request", "payload": {"timeout": 2}}),
                       "requester")
    url = callback_url(stack, run)

    done = stack.finished(run)

    assert done["status"] == "Failed", done
    assert "Remote callback timeout - no requests received" in done["error"]["message"]
    late = httpx.post(url, json={"late": True}, timeout=10)
    assert late.status_code == 409, late.text


def test_an_invoke_trigger_job_runs_only_when_invoked(stack: Stack) -> None:
    [job] = [f for f in stack.api.get("/v1/functions") if f["slug"] == f"{APP}-invoke-only"]
    assert job["triggers"] == []
    run = stack.run_of(stack.send({"name": "v2.caller", "payload": {"n": 4}}), "caller")

    done = stack.finished(run)
    direct = client(stack, "invoke", "invoke-only", {"n": 5})
    refused = v2_post(stack, "/api/v1/jobs/invoke-only/invoke", {"payload": {"n": "five"}})

    assert done["status"] == "Completed", done
    end = done["output"]
    assert (end["ok"], end["output"]) == (True, {"tripled": 12, "event": "invoke"})
    child = stack.api.run(end["id"])
    assert (child["function"], child["event"]["name"]) == (f"{APP}-invoke-only", "invoke")
    assert stack.finished(stack.api.run(direct["id"]))["output"] == {"tripled": 15,
                                                                      "event": "invoke"}
    assert refused.status_code == 200, refused.text
    invalid = stack.finished(stack.api.run(refused.json()["id"]))
    assert (invalid["status"], invalid["error"]["name"]) == ("Failed", "InvalidPayload")
    assert "n" in invalid["error"]["message"]
    # An event named like the trigger starts nothing.
    stray = stack.send({"name": "invoke", "payload": {"n": 1}})
    assert stack.api.runs_of(delivered(stack, stray["id"])["id"]) == []


def on_disk(stack: Stack) -> bytes:
    """Every byte the database holds: the SQLite file and its WAL, or a ``pg_dump``."""
    if stack.mode == "dev":
        db = Path(stack.db)
        return b"".join(p.read_bytes() for p in sorted(db.parent.glob(db.name + "*")))
    schema = stack.db.rsplit("%3D", 1)[1]
    return subprocess.run(["pg_dump", "--no-owner", "-n", schema, stack.db.split("?", 1)[0]],
                          check=True, capture_output=True, timeout=120).stdout


def test_with_encrypt_data_a_jobs_task_data_is_sealed_and_the_app_reads_it_back(
        stack: Stack) -> None:
    canaries = {"params": "canary-params-6d1f0a", "output": "canary-output-b83e27",
                "error": "canary-error-4c90d5", "status": "canary-status-e21a7b",
                "store": "canary-store-9a3c61"}
    switched = stack.api.post("/v1/settings", {"encrypt_data": True})
    assert switched.status_code == 200, switched.text
    try:
        run = stack.run_of(stack.send({"name": "v2.sealed", "payload": canaries}), "sealed")
        done = stack.finished(run)
        # The Job ran again after its wait, its tasks answered from what Tidings keeps: each
        # body ran once, and the SDK was handed the task's params, output and error back.
        assert done["status"] == "Completed", done
        assert done["output"]["kept"] == {"mark": canaries["output"],
                                          "params": {"mark": canaries["params"]}}
        assert canaries["error"] in done["output"]["caught"]  # v2 throws the cached error
        assert done["output"]["stored"] == {"mark": canaries["store"]}  # io.store read back
        assert stack.ran(run["id"]) == ["keep", "doomed"]
        status = {"key": "mark", "label": "Sealing", "state": "success",
                  "data": {"mark": canaries["status"], "done": True},
                  "history": [{"label": "Sealing", "state": "loading",
                               "data": {"mark": canaries["status"]}}]}
        assert client(stack, "statuses", run["id"])["statuses"] == [status]
        disk = on_disk(stack)
        assert [c for c in canaries.values() if c.encode() in disk] == []
    finally:
        switched = stack.api.post("/v1/settings", {"encrypt_data": False})
        assert switched.status_code == 200, switched.text


def test_store_values_written_in_clear_still_read_with_encrypt_data_and_sealed_ones_after(
        stack: Stack) -> None:
    def put(key: str, value: str) -> None:
        reply = httpx.put(f"{stack.server.url}/api/v1/store/{key}", content=value, timeout=10,
                          headers={"authorization": f"Bearer {stack.key}"})
        assert reply.status_code == 200, reply.text

    def switch(on: bool) -> None:
        switched = stack.api.post("/v1/settings", {"encrypt_data": on})
        assert switched.status_code == 200, switched.text

    clear, sealed = '{"mark":"canary-clear-5e02b4"}', '{"mark":"canary-sealed-71c9fd"}'
    put("was-clear", clear)
    switch(True)
    try:
        put("was-sealed", sealed)
        assert v2_get(stack, "/api/v1/store/was-clear")["value"] == clear
        assert v2_get(stack, "/api/v1/store/was-sealed")["value"] == sealed
        disk = on_disk(stack)
        assert b"canary-clear-5e02b4" in disk and b"canary-sealed-71c9fd" not in disk
    finally:
        switch(False)
    assert v2_get(stack, "/api/v1/store/was-sealed")["value"] == sealed
