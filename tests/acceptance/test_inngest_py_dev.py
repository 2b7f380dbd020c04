"""Scenario: an app written with the official ``inngest`` Python SDK and served by FastAPI runs
unmodified on ``tidings dev -u URL``: its environment says ``INNGEST_DEV=1`` and where the
server is, nothing else. The dev server syncs it, events sent with the SDK's own client start
its functions, and every run — steps, a sleep, a conditional wait, an invocation, a sent event,
parallel steps, retries of the function and of one step, a non-retriable failure and its
``on_failure`` handler, a cron — ends with the output the code says, read back through
``/v1/runs``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import inngest
import pytest

from tests.acceptance.py_app_scenario import (
    check_flow,
    check_runs,
    check_synced,
    dev_sender,
    py_app_stack,
    send,
)
from tests.acceptance.sdk_apps import Api, AppProcess, wait_for
from tests.conftest import LiveServer


@pytest.fixture
def app_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """More of the app's environment (a test sets it with ``indirect`` parametrization)."""
    extra: dict[str, str] = getattr(request, "param", {})
    return extra


@pytest.fixture
def stack(tmp_path: Path, app_env: dict[str, str]) -> Iterator[tuple[LiveServer, AppProcess]]:
    with py_app_stack(tmp_path, app_env=app_env) as stack:
        yield stack


@pytest.fixture
def sender(stack: tuple[LiveServer, AppProcess],
           monkeypatch: pytest.MonkeyPatch) -> Iterator[inngest.Inngest]:
    with dev_sender(stack[0].url, monkeypatch) as client:
        yield client


def test_python_sdk_app_runs_on_tidings_dev(stack: tuple[LiveServer, AppProcess],
                                           sender: inngest.Inngest) -> None:
    server, app = stack
    api = Api(server.url)

    def logs() -> str:
        return app.output() + (server.data_dir / "server.log").read_text(errors="replace")

    check_synced(wait_for(lambda: api.synced(app.url), timeout=30, what="the app to sync",
                          logs=logs))
    check_runs(api, sender, logs)


def test_native_and_sdk_functions_invoke_each_other(stack: tuple[LiveServer, AppProcess],
                                                   sender: inngest.Inngest) -> None:
    server, app = stack
    api = Api(server.url)

    def logs() -> str:
        return app.output() + (server.data_dir / "server.log").read_text(errors="replace")

    wait_for(lambda: api.synced(app.url), timeout=30, what="the app to sync", logs=logs)
    native_to_sdk = api.run_of(send(sender, "native/relay"), "native-app-relay")
    sdk_to_native = api.run_of(send(sender, "py/call-native"), "py-app-call-native")

    relayed = api.finished(native_to_sdk["id"], logs=logs)
    assert relayed["status"] == "Completed", relayed
    assert relayed["output"] == {"doubled": {"y": 10}}
    called = api.finished(sdk_to_native["id"], logs=logs)
    assert called["status"] == "Completed", called
    assert called["output"] == {"tripled": {"z": 12}}
    [child] = [r for r in api.runs("native-app-triple") if r["parent_run_id"] == called["id"]]
    assert child["output"] == {"z": 12}


@pytest.mark.parametrize("app_env", [{"INNGEST_STREAMING": "force"}], indirect=True)
def test_streamed_answers(stack: tuple[LiveServer, AppProcess], sender: inngest.Inngest) -> None:
    """With ``INNGEST_STREAMING=force`` the SDK answers async functions with a 201, keep-alive
    spaces and the real answer in an envelope: the flow runs the same."""
    server, app = stack
    api = Api(server.url)

    def logs() -> str:
        return app.output() + (server.data_dir / "server.log").read_text(errors="replace")

    wait_for(lambda: api.synced(app.url), timeout=30, what="the app to sync", logs=logs)
    check_flow(api, sender, send(sender, "py/flow", {"id": 11}), 11, logs)


def test_flow_control_of_sdk_functions(stack: tuple[LiveServer, AppProcess],
                                       sender: inngest.Inngest) -> None:
    """The flow control an SDK registers is applied: a rate limit skips (and says so on the
    event), cancel_on cancels, a batch runs once with every event."""
    server, app = stack
    api = Api(server.url)

    def logs() -> str:
        return app.output() + (server.data_dir / "server.log").read_text(errors="replace")

    wait_for(lambda: api.synced(app.url), timeout=30, what="the app to sync", logs=logs)
    first = send(sender, "py/shaped", {"user": "ana"})
    again = send(sender, "py/shaped", {"user": "ana"})
    other = send(sender, "py/shaped", {"user": "bob"})
    ana = api.run_of(first, "py-app-shaped")
    bob = api.run_of(other, "py-app-shaped")
    skipped = wait_for(lambda: api.get(f"/v1/events/{again}")["skipped"] or None,
                       timeout=30, what="the rate-limited event", logs=logs)
    assert [(s["function"], s["reason"]) for s in skipped] == [("py-app-shaped",
                                                               "rate_limited")]
    assert api.runs_of(again) == []
    send(sender, "py/stop", {"user": "bob"})
    assert api.finished(bob["id"], logs=logs)["status"] == "Cancelled"
    done = api.finished(ana["id"], logs=logs)
    assert done["status"] == "Completed" and done["output"] == {"user": "ana"}

    batch = [send(sender, "py/batched", {"n": n}) for n in range(3)]
    run = api.run_of(batch[0], "py-app-batched")
    finished = api.finished(run["id"], logs=logs)
    assert finished["status"] == "Completed" and finished["output"] == {"n": [0, 1, 2]}
