"""Scenario: a run of an official ``inngest`` Python SDK app (served by FastAPI on loopback,
synced by ``tidings dev -u URL``) is rerun from its second step. The SDK gets the first step's
recorded result as memoized, so that step's code does not run again; the second and third
steps run in the new run; the new run's page draws the reused step apart, at its own start."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.sdk_apps import Api, AppProcess, dev_stack, uvicorn_app, wait_for
from tests.conftest import LiveServer


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[LiveServer, AppProcess, Path]]:
    calls = tmp_path / "calls.txt"
    calls.touch()
    with dev_stack(tmp_path, uvicorn_app("tests.acceptance.inngest_py_rerun_app"),
                   name="py-rerun", app_env={"STEP_CALLS": str(calls)}) as (server, app, _):
        yield server, app, calls


def test_a_rerun_from_the_second_step_reuses_the_first_and_runs_the_rest(
        stack: tuple[LiveServer, AppProcess, Path]) -> None:
    server, app, calls = stack
    api = Api(server.url)

    def logs() -> str:
        return app.output() + (server.data_dir / "server.log").read_text(errors="replace")

    wait_for(lambda: api.synced(app.url), timeout=30, what="the app to sync", logs=logs)
    sent = httpx.post(f"{server.url}/v1/events", json={"name": "rerun/go", "data": {}})
    assert sent.status_code == 200, sent.text
    first = api.run_of(sent.json()["data"][0]["id"], "py-rerun-three-steps")
    first = api.finished(first["id"], logs=logs)
    assert first["status"] == "Completed", first
    assert [s["name"] for s in first["steps"]] == ["fetch", "transform", "store"]

    transform = first["steps"][1]["id"]
    rerun = api.post(f"/v1/runs/{first['id']}/rerun", {"from_step": transform})
    assert rerun.status_code == 201, rerun.text
    second = api.finished(rerun.json()["data"]["id"], logs=logs)
    assert second["status"] == "Completed", second
    assert second["rerun_of"] == first["id"]
    # The first step's recorded value, not a new one: its code did not run again.
    assert second["output"]["fetched"] == first["output"]["fetched"]
    assert second["output"] == first["output"]
    ran = Counter(line.split()[1] for line in calls.read_text().splitlines()
                  if line.startswith(second["id"] + " "))
    assert ran == {"transform": 1, "store": 1}, calls.read_text()
    assert Counter(line.split()[1] for line in calls.read_text().splitlines()) == {
        "fetch": 1, "transform": 2, "store": 2}
    steps = {s["name"]: s for s in second["steps"]}
    assert steps["fetch"]["reused_from"] == first["id"]
    assert steps["transform"]["reused_from"] is None and steps["store"]["reused_from"] is None

    # The page: the reused step is marked and drawn where the new run started, not at the
    # time it ran in the first run (before this run's axis begins).
    page = httpx.get(f"{server.url}/runs/{second['id']}").text
    lane = re.search(r'title="fetch">fetch</span><span class="track">(.*?)</span></div>', page)
    assert lane is not None, page
    bar = re.search(r'class="bar k-run b-reused[^"]*" data-left="([\d.]+)"', lane.group(1))
    assert bar is not None, lane.group(1)
    assert f"reused from run {first['id']}" in lane.group(1)
    queue = re.search(r'class="bar k-queue b-queued[^"]*" data-left="([\d.]+)" '
                      r'data-width="([\d.]+)"', page)
    assert queue is not None
    assert float(bar.group(1)) == pytest.approx(float(queue.group(1)) + float(queue.group(2)),
                                                abs=0.5)
    lefts = [float(left) for left in re.findall(r'data-left="(-?[\d.]+)"', page)]
    assert min(lefts) >= 0
    assert f'reused from run <a class="mono" href="/runs/{first["id"]}">' in page
