"""Scenario: an app written with the official ``inngest`` npm SDK, on ``tidings dev``, where
Tidings must do what Inngest does (the SDK's suite checks the same against the Inngest Dev
Server: ``handling-step-errors``, ``step-invoke-not-found``):

* the error a step threw comes back to the function whole on replay: ``err.cause`` included;
  a failed step's output keeps what the SDK sent;
* invoking a function that does not exist fails the step with ``Error`` / ``could not find
  function…``;
* the runs API says what each step was (``run``, ``invoke``, ``send``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.acceptance.sdk_apps import NODE_DIR, Api, dev_stack, node_binary, wait_for
from tests.acceptance.test_inngest_node_functions import send

pytestmark = pytest.mark.node

Stack = tuple[Api, dict[str, str], Callable[[], str]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with dev_stack(tmp_path_factory.mktemp("node-cases"), [node_binary(), "cases.mjs", "{port}"],
                   name="node-cases", cwd=NODE_DIR) as (server, app, env):
        api = Api(server.url)

        def logs() -> str:
            return app.output() + (server.data_dir / "server.log").read_text(errors="replace")

        wait_for(lambda: api.synced(app.url), timeout=30, what="the app to sync", logs=logs)
        yield api, env, logs


def test_a_step_error_comes_back_whole_with_its_cause(stack: Stack) -> None:
    api, env, logs = stack
    run = api.run_of(send(env, "cases/step.errors", {}), "node-cases-step-errors")
    done = api.finished(run["id"], logs=logs)
    assert done["status"] == "Completed", done
    steps = {s["name"]: s for s in done["steps"]}
    a = steps["a"]
    assert (a["status"], a["attempts"], a["kind"]) == ("failed", 2, "run")
    error = a["output"]["error"]
    assert (error["name"], error["message"]) == ("Error", "Oh no!")
    assert error["stack"].startswith("Error: Oh no!")
    assert (error["cause"]["name"], error["cause"]["message"]) == ("Error", "This is the cause")
    assert steps["b"]["output"] == {
        "data": 'err was: "Oh no!" and the cause was: "This is the cause"'}
    d = steps["d fails"]["output"]["error"]
    assert (d["name"], d["message"], d.get("cause")) == ("Error", "D failed!", None)
    assert steps["e succeeds"]["output"] == {"data": {"errMessage": "D failed!"}}
    assert steps["c succeeds"]["output"] == {"data": "c succeeds"}
    assert steps["tell"]["kind"] == "send"


def test_invoking_a_function_that_does_not_exist_fails_as_inngest_says(stack: Stack) -> None:
    api, env, logs = stack
    run = api.run_of(send(env, "cases/invoke.missing", {}), "node-cases-invoke-missing")
    failed = api.finished(run["id"], logs=logs)
    assert failed["status"] == "Failed", failed
    [step] = failed["steps"]
    assert (step["name"], step["kind"], step["status"], step["invoked_run_id"]) == (
        "invoke-non-existent-fn", "invoke", "failed", None)
    error = step["output"]["error"]
    assert error["name"] == "Error"
    assert "could not find function" in error["message"]
