"""Scenario: an app written with the official ``inngest`` Python SDK, on ``tidings dev``, where
Tidings must do what Inngest does (the SDK's own integration suite checks these against the
Inngest Dev Server):

* a run whose state passes 4 MiB: the SDK reads its steps through the API, and no step runs
  twice;
* retries count per step, and per position for the function's own failures;
* the SDK's error is kept whole (``code``, ``stack``), and ``function.failed`` carries
  Inngest's ``{"error": "invalid status code: 500", …}``;
* invoking a missing function, and an invocation that times out, fail as Inngest words them;
  the invoked run's event carries ``data._inngest``, and the runs API links the two runs;
* ``/v1/functions`` describes the app's functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import inngest
import pytest

from tests.acceptance.py_app_scenario import send
from tests.acceptance.sdk_apps import Api, AppProcess, dev_stack, uvicorn_app, wait_for
from tests.conftest import LiveServer

Stack = tuple[LiveServer, AppProcess, Api, Callable[[], str]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with dev_stack(tmp_path_factory.mktemp("py-cases"),
                   uvicorn_app("tests.acceptance.inngest_py_cases"),
                   name="py-cases") as (server, app, _):
        api = Api(server.url)

        def logs() -> str:
            return app.output() + (server.data_dir / "server.log").read_text(errors="replace")

        wait_for(lambda: api.synced(app.url), timeout=30, what="the app to sync", logs=logs)
        yield server, app, api, logs


@pytest.fixture(scope="module")
def sender(stack: Stack) -> Iterator[inngest.Inngest]:
    client = inngest.Inngest(app_id="py-sender", is_production=False,
                             event_api_base_url=stack[0].url)
    yield client
    client._http_client._http_client_sync.close()


def executions(app: AppProcess) -> dict[str, int]:
    counts: dict[str, int] = httpx.get(f"http://127.0.0.1:{app.port}/executions",
                                       timeout=10).json()
    return counts


def test_no_step_runs_twice_when_the_sdk_reads_the_state_through_the_api(
        stack: Stack, sender: inngest.Inngest) -> None:
    _, app, api, logs = stack
    run = api.run_of(send(sender, "cases/big"), "py-cases-big-steps")
    done = api.finished(run["id"], timeout=120, logs=logs)
    assert (done["status"], done["output"]) == ("Completed", 10), done
    ran = executions(app)
    assert {name: count for name, count in ran.items() if name.startswith("big-")} == {
        f"big-{i}": 1 for i in range(10)}


def test_retries_count_per_step_and_per_position(stack: Stack,
                                                 sender: inngest.Inngest) -> None:
    _, _, api, logs = stack
    run = api.run_of(send(sender, "cases/flaky"), "py-cases-two-flaky-steps")
    done = api.finished(run["id"], logs=logs)
    # ctx.attempt on the last call: the function's own failures since step b (one).
    assert (done["status"], done["output"]) == ("Completed", ["a", "b", 1]), done
    assert done["attempt"] == 1
    assert [(s["name"], s["status"], s["attempts"]) for s in done["steps"]] == [
        ("a", "completed", 1), ("b", "completed", 0)]


def test_the_sdk_error_is_kept_whole_and_function_failed_carries_inngests_shape(
        stack: Stack, sender: inngest.Inngest) -> None:
    _, _, api, logs = stack
    run = api.run_of(send(sender, "cases/change-error"), "py-cases-change-error")
    failed = api.finished(run["id"], logs=logs)
    assert failed["status"] == "Failed"
    error = failed["error"]
    assert {k: v for k, v in error.items() if k != "stack"} == {
        "code": "unknown", "message": "I am new", "name": "MyError"}
    assert error["stack"].startswith("Traceback (most recent call last):")
    [foo] = failed["steps"]
    assert foo["output"]["error"]["name"] == "ValueError"

    handler = wait_for(lambda: next(iter(api.runs("py-cases-change-error-failure")), None),
                       timeout=30, what="the on_failure handler", logs=logs)
    reported = api.finished(handler["id"], logs=logs)["output"]
    assert reported == {"error": "invalid status code: 500", "message": "I am new",
                        "name": "MyError", "stack": error["stack"]}


def test_invocations_fail_as_inngest_words_them_and_link_the_runs(
        stack: Stack, sender: inngest.Inngest) -> None:
    _, _, api, logs = stack
    run = api.run_of(send(sender, "cases/invoke"), "py-cases-invoker")
    failed = api.finished(run["id"], logs=logs)
    assert failed["status"] == "Failed", failed
    assert failed["error"] == {"code": "step_errored", "name": "InngestInvokeTimeoutError",
                               "message": "Timed out waiting for invoked function to complete",
                               "stack": None}
    steps = {s["name"]: s for s in failed["steps"]}
    assert [(s["name"], s["kind"], s["status"]) for s in failed["steps"]] == [
        ("echo", "invoke", "completed"), ("missing", "invoke", "failed"),
        ("note", "run", "completed"), ("slow", "invoke", "failed")]
    note = steps["note"]["output"]["data"]
    assert note["name"] == "Error"
    assert note["message"].startswith("could not find function")
    assert steps["missing"]["invoked_run_id"] is None

    child = api.run(steps["echo"]["invoked_run_id"])
    assert (child["function"], child["parent_run_id"], child["parent_step"]) == (
        "py-cases-echo", failed["id"], steps["echo"]["id"])
    data = child["output"]["data"]
    assert sorted(data) == ["_inngest", "x"]
    meta = data["_inngest"]
    assert meta["fn_id"] == "py-cases-echo"
    assert meta["correlation_id"] == f"{failed['id']}.{steps['echo']['id']}"
    assert meta["source_app_id"] == "py-cases" and meta["name"] == "echo"
    assert note["echoed"] == {"data": data}
    slow = api.run(steps["slow"]["invoked_run_id"])
    assert slow["function"] == "py-cases-sleeper" and slow["parent_step"] == steps["slow"]["id"]


def test_functions_api_describes_the_apps_functions(stack: Stack) -> None:
    _, app, api, _ = stack
    functions = {f["slug"]: f for f in api.get("/v1/functions")}
    assert {"py-cases-big-steps", "py-cases-two-flaky-steps", "py-cases-change-error",
            "py-cases-change-error-failure", "py-cases-echo", "py-cases-invoker"} <= set(functions)
    flaky = api.get("/v1/functions/py-cases-two-flaky-steps")
    assert flaky == functions["py-cases-two-flaky-steps"]
    assert (flaky["app_id"], flaky["kind"], flaky["retries"]) == ("py-cases", "sdk", 1)
    assert flaky["url"].startswith(app.url) and "fnId=py-cases-two-flaky-steps" in flaky["url"]
    assert flaky["triggers"] == [{"event": "cases/flaky"}]
    [synced] = [a for a in api.apps() if a["url"] == app.url]
    assert flaky["synced_at"] == synced["synced_at"]
