"""Scenario: functions written with the official ``inngest`` npm SDK (``tests/node/driver.mjs``,
the version pinned in tests/node) behave on ``tidings dev`` as on Inngest: after a parallel
group the next lone step runs in the request that finds it; a race group
(``group.parallel({mode: "race"})``) lets each branch go on at its own pace; ``step.ai.infer``
requests go out from Tidings and come back as the step's output; and ``GET /dev`` lists the
functions as the SDK's own test harness checks them."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.sdk_apps import (
    NODE_DIR,
    Api,
    AppProcess,
    dev_stack,
    node_binary,
    wait_for,
)
from tests.acceptance.stand_ins import PROVIDER_ANSWER, Provider
from tests.conftest import LiveServer

pytestmark = pytest.mark.node

KEY = f"sk-ant-node-{secrets.token_hex(8)}"
PROMPT = {"messages": [{"role": "user", "content": "Say hi"}]}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[LiveServer, AppProcess, Provider]]:
    provider = Provider()
    try:
        with dev_stack(tmp_path, [node_binary(), "driver.mjs", "{port}"], name="node-parity",
                       cwd=NODE_DIR, app_env={"PROVIDER_URL": provider.url,
                                              "PROVIDER_KEY": KEY}) as (server, app, _):
            api = Api(server.url)
            wait_for(lambda: api.synced(app.url), timeout=30, what="the app to sync",
                     logs=app.output)
            yield server, app, provider
    finally:
        provider.close()


def _run(server: LiveServer, app: AppProcess, name: str, function: str) -> dict[str, Any]:
    api = Api(server.url)
    sent = httpx.post(f"{server.url}/e/key", json={"name": name, "data": {"prompt": PROMPT}},
                      timeout=10)
    [event_id] = sent.json()["ids"]

    def logs() -> str:
        return app.output() + (server.data_dir / "server.log").read_text(errors="replace")

    return api.finished(api.run_of(event_id, function)["id"], logs=logs)


def _seen(app: AppProcess) -> dict[str, list[Any]]:
    seen: dict[str, list[Any]] = httpx.get(app.url.replace("/api/inngest", "/seen"),
                                           timeout=10).json()
    return seen


def test_a_lone_step_after_a_parallel_group_runs_in_the_request_that_finds_it(
        stack: tuple[LiveServer, AppProcess, Provider]) -> None:
    server, app, _ = stack
    done = _run(server, app, "node-parity/group-then-two", "node-parity-group-then-two")
    assert done["status"] == "Completed", done
    assert done["output"] == {"pair": [1, 2], "first": "A", "second": "B"}
    assert [s["name"] for s in done["steps"][2:]] == ["first", "second"]
    assert len(_seen(app)["group-then-two"]) == 6  # 8 when every later step was planned first


def test_a_race_group_lets_each_branch_go_on_at_its_own_pace(
        stack: tuple[LiveServer, AppProcess, Provider]) -> None:
    server, app, _ = stack
    done = _run(server, app, "node-parity/race", "node-parity-race")
    assert done["status"] == "Completed", done
    assert _seen(app)["race"] == ["a.1", "a.2", "b.1", "b.2"]


def test_ai_infer_requests_go_out_from_tidings(
        stack: tuple[LiveServer, AppProcess, Provider]) -> None:
    server, app, provider = stack
    done = _run(server, app, "node-parity/infer", "node-parity-infer")
    assert done["status"] == "Completed", done
    assert done["output"] == {"answer": PROVIDER_ANSWER}
    [request] = provider.requests
    assert request["path"] == "/v1/messages"
    assert request["body"] == {**PROMPT, "max_tokens": 16, "model": "claude-parity"}
    assert request["headers"]["x-api-key"] == KEY
    assert request["headers"]["anthropic-version"] == "2023-06-01"


def test_get_dev_answers_what_the_sdk_harness_checks(
        stack: tuple[LiveServer, AppProcess, Provider]) -> None:
    """``checkIntrospection`` of inngest-js (``src/test/helpers.ts``): each function listed
    with its name, exactly its triggers, and the step ``{id, name, uri}`` whose URL aims at
    it."""
    server, app, _ = stack
    answer = httpx.get(f"{server.url}/dev", timeout=10)
    assert answer.status_code == 200
    functions = answer.json()["functions"]
    race = next(f for f in functions if f["name"] == "race")
    assert race["triggers"] == [{"event": "node-parity/race"}]
    assert race["steps"] == [{"id": "step", "name": "step", "retries": 0,
                              "uri": f"{app.url}?fnId=node-parity-race&stepId=step"}]
    assert all(re.fullmatch(r"http.+\?fnId=.+-" + re.escape(f["name"]) + "&stepId=step",
                            f["steps"][0]["uri"]) for f in functions)
