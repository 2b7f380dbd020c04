"""Scenario: the official ``inngest`` Python SDK app runs unmodified on ``tidings dev
--encrypt-data``: every run of the shared scenario (steps, sleep, conditional wait, invocation,
sent event, parallel steps, retries, failure handler, cron) ends as on plain storage, the SDK
being handed plaintext events and memoized steps over HTTP, while the database file and its
WAL hold the events' data and the steps' and runs' outputs only sealed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import inngest
import pytest

from tests.acceptance.py_app_scenario import check_runs, dev_sender, py_app_stack, send
from tests.acceptance.sdk_apps import Api, AppProcess, wait_for
from tests.conftest import LiveServer

IN_DATA = "canary-sdk-data-91c2"
# What the scenario's functions return from a step and as a run's output.
IN_STEP = "ok on attempt 2"
IN_RUN = "succeeded_on_attempt"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[LiveServer, AppProcess]]:
    with py_app_stack(tmp_path, "--encrypt-data") as stack:
        yield stack


@pytest.fixture
def sender(stack: tuple[LiveServer, AppProcess],
           monkeypatch: pytest.MonkeyPatch) -> Iterator[inngest.Inngest]:
    with dev_sender(stack[0].url, monkeypatch) as client:
        yield client


def test_python_sdk_app_runs_on_sealed_storage(stack: tuple[LiveServer, AppProcess],
                                              sender: inngest.Inngest, tmp_path: Path) -> None:
    server, app = stack
    api = Api(server.url)

    def logs() -> str:
        return app.output() + (server.data_dir / "server.log").read_text(errors="replace")

    wait_for(lambda: api.synced(app.url), timeout=30, what="the app to sync", logs=logs)
    check_runs(api, sender, logs)
    doubled = api.finished(api.run_of(send(sender, "py/double", {"x": 4, "note": IN_DATA}),
                                      "py-app-double")["id"], logs=logs)
    assert doubled["output"] == {"y": 8}

    disk = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("dev.db*")))
    assert [c for c in (IN_DATA, IN_STEP, IN_RUN) if c.encode() in disk] == []
    assert b'"\\u001fts1 ' in disk
