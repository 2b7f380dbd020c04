"""What every run of ``inngest_py_app`` must come to, on whichever server: the checks shared by
the dev and the serve scenarios."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import inngest
import pytest

from tests.acceptance.sdk_apps import Api, AppProcess, dev_stack, uvicorn_app, wait_for
from tests.conftest import ROOT, LiveServer


@contextlib.contextmanager
def py_app_stack(tmp_path: Path, *server_args: str, app_env: dict[str, str] | None = None,
                 ) -> Iterator[tuple[LiveServer, AppProcess]]:
    """``inngest_py_app`` (its environment more ``app_env``) synced by a ``tidings dev`` that
    runs ``native_app`` too (its options more ``server_args``); both stopped after."""
    with dev_stack(tmp_path, uvicorn_app("tests.acceptance.inngest_py_app"), name="py-app",
                   app_env=app_env,
                   server_args=(*server_args, "-a", "tests.acceptance.native_app:client"),
                   server_env={"PYTHONPATH": str(ROOT)}) as (server, app, _):
        yield server, app


@contextlib.contextmanager
def dev_sender(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[inngest.Inngest]:
    """The SDK's own client, sending events to the dev server at ``url`` whatever the test
    process's environment says of Inngest (its variables are unset for the test)."""
    for name in ("INNGEST_DEV", "INNGEST_BASE_URL", "INNGEST_EVENT_KEY", "INNGEST_ENV"):
        monkeypatch.delenv(name, raising=False)
    client = inngest.Inngest(app_id="py-sender", is_production=False, event_api_base_url=url)
    try:
        yield client
    finally:
        client._http_client._http_client_sync.close()


def send(client: inngest.Inngest, name: str, data: dict[str, Any] | None = None) -> str:
    [event_id] = client.send_sync(inngest.Event(name=name, data=data or {}))
    return event_id


def check_synced(app: dict[str, Any]) -> None:
    assert app["app_id"] == "py-app"
    assert app["sdk"].startswith("py:v0.5.")
    assert app["framework"] == "fast_api"
    assert app["functions"] == 12  # eleven functions and doomed's on_failure handler


def check_flow(api: Api, sender: inngest.Inngest, flow_event: str, flow_id: int,
               logs: Callable[[], str]) -> dict[str, Any]:
    """The flow started by ``flow_event`` (``data.id`` = ``flow_id``) waits for its approval,
    gets it, and ends with every step in order."""
    flow = api.run_of(flow_event, "py-app-flow")

    def waiting() -> bool | None:
        pauses = api.run(flow["id"])["pauses"]
        return True if any(p["kind"] == "wait" for p in pauses) else None

    wait_for(waiting, timeout=30, what="the flow to wait for its approval", logs=logs)
    [pause] = api.run(flow["id"])["pauses"]
    assert pause["event"] == "py/approved"
    assert pause["condition"] == "event.data.id == async.data.id"
    send(sender, "py/approved", {"id": flow_id + 1, "by": "mallory"})  # another flow's approval
    send(sender, "py/approved", {"id": flow_id, "by": "ana"})

    done = api.finished(flow["id"], logs=logs)
    assert done["status"] == "Completed", done
    assert done["output"] == {"first": "A", "approved_by": "ana", "doubled": {"y": 42},
                              "sent": 1, "parallel": [1, 2], "after": "done", "attempt": 0}
    names = [s["name"] for s in done["steps"]]
    assert names[:5] == ["first", "nap", "approval", "call-double", "send-it"]
    assert sorted(names[5:7]) == ["p1", "p2"]
    assert names[7:] == ["after"]
    assert all(s["status"] == "completed" for s in done["steps"])
    return done


def check_runs(api: Api, sender: inngest.Inngest, logs: Callable[[], str]) -> None:
    """Send the app's events with the SDK's client and check every run it starts."""
    flow_event = send(sender, "py/flow", {"id": 7})
    flaky_event = send(sender, "py/flaky")
    wobbly_event = send(sender, "py/wobbly")
    doomed_event = send(sender, "py/doomed")
    bulky_event = send(sender, "py/bulky")

    flow = check_flow(api, sender, flow_event, 7, logs)

    [invoked] = api.runs("py-app-double")
    assert invoked["parent_run_id"] == flow["id"]
    assert invoked["status"] == "Completed"
    assert invoked["output"] == {"y": 42}
    [followup] = api.runs("py-app-followup")
    assert api.finished(followup["id"])["output"] == {"from": flow["id"]}

    flaky = api.finished(api.run_of(flaky_event, "py-app-flaky")["id"], logs=logs)
    assert flaky["status"] == "Completed", flaky
    assert flaky["output"] == {"succeeded_on_attempt": 2}
    assert flaky["attempt"] == 2

    wobbly = api.finished(api.run_of(wobbly_event, "py-app-wobbly")["id"], logs=logs)
    assert wobbly["status"] == "Completed", wobbly
    assert wobbly["output"] == {"before": "steady", "shaky": "ok on attempt 2"}
    assert wobbly["attempt"] == 0  # only the step was retried
    shaky = next(s for s in wobbly["steps"] if s["name"] == "shaky")
    assert shaky["attempts"] == 2

    bulky = api.finished(api.run_of(bulky_event, "py-app-bulky")["id"], logs=logs)
    assert bulky["status"] == "Completed", bulky
    assert bulky["output"] == {"a": 3_000_000, "b": 2_000_000, "events": 1}

    doomed = api.finished(api.run_of(doomed_event, "py-app-doomed")["id"], logs=logs)
    assert doomed["status"] == "Failed"
    assert doomed["attempt"] == 0
    assert doomed["error"]["name"] == "NonRetriableError"
    assert doomed["error"]["message"] == "stop now"

    handler = wait_for(lambda: next(iter(api.runs("py-app-doomed-failure")), None),
                       timeout=30, what="the on_failure handler to run", logs=logs)
    handled = api.finished(handler["id"], logs=logs)
    assert handled["output"] == {"event": "inngest/function.failed",
                                 "function_id": "py-app-doomed", "original": "py/doomed",
                                 "error": "stop now"}

    # The cron runs every minute: its first tick is at most a minute away.
    tick = wait_for(lambda: next((r for r in api.runs("py-app-ticker")
                                  if r["status"] == "Completed"), None),
                    timeout=75, what="the cron function to run", logs=logs)
    assert tick["output"] == {"cron": "* * * * *", "event": "inngest/scheduled.timer"}
