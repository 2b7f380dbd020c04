"""Scenario: functions written with the official ``inngest`` Python SDK
(``inngest_py_driver_app``) behave on ``tidings dev`` as on Inngest:

- after a parallel group, the next lone step runs in the request that finds it (immediate
  execution), so a group and two steps take six requests, not eight;
- in a race group (``ParallelMode.RACE``) each branch goes on at its own pace;
- ``step.ai.infer``: Tidings makes the request the SDK describes to a provider (a stand-in on
  loopback that answers as Python's ``http.server`` does: HTTP/1.0, to the end of the
  connection), records the answer as the step's output, retries a failed attempt as a step's,
  fails a step whose URL is no http(s) URL, and keeps the provider's key nowhere;
- an app that streams its answers (``streaming=FORCE``) behind an HTTP/1.0 proxy that passes
  ``Transfer-Encoding: chunked`` on over an unchunked body (as the SDK's own test suite does) is
  read as Go reads it.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import inngest
import pytest

from tests.acceptance.sdk_apps import (
    Api,
    AppProcess,
    clean_env,
    dev_stack,
    start_app,
    stop_app,
    wait_for,
)
from tests.acceptance.stand_ins import OVERLOADED, PROVIDER_ANSWER, Http10Proxy, Provider
from tests.conftest import LiveServer, free_port, start_server, stop_server

AUTH_KEY = f"sk-ant-parity-{secrets.token_hex(8)}"
PROMPT = {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 16}


def _uvicorn(app: str) -> list[str]:
    return [sys.executable, "-m", "uvicorn", f"tests.acceptance.inngest_py_driver_app:{app}",
            "--host", "{host}", "--port", "{port}", "--log-level", "warning"]


@pytest.fixture
def provider() -> Iterator[Provider]:
    stand_in = Provider()
    yield stand_in
    stand_in.close()


@pytest.fixture
def stack(tmp_path: Path, provider: Provider) -> Iterator[tuple[LiveServer, AppProcess]]:
    with dev_stack(tmp_path, _uvicorn("app"), name="parity-app",
                   app_env={"PROVIDER_URL": provider.url, "PROVIDER_KEY": AUTH_KEY},
                   ) as (server, app, _):
        yield server, app


def _send(server: LiveServer, name: str, data: dict[str, Any] | None = None) -> str:
    client = inngest.Inngest(app_id="parity-sender", is_production=False,
                             event_api_base_url=server.url)
    try:
        [event_id] = client.send_sync(inngest.Event(name=name,
                                                    data={"prompt": PROMPT, **(data or {})}))
    finally:
        client._http_client._http_client_sync.close()
    return event_id


def _finished(server: LiveServer, app: AppProcess, event: str,
              function: str) -> dict[str, Any]:
    api = Api(server.url)

    def logs() -> str:
        return app.output() + (server.data_dir / "server.log").read_text(errors="replace")

    wait_for(lambda: api.synced(app.url), timeout=30, what="the app to sync", logs=logs)
    run = api.run_of(_send(server, event), function)
    return api.finished(run["id"], logs=logs)


def _seen(app: AppProcess) -> dict[str, list[Any]]:
    seen: dict[str, list[Any]] = httpx.get(app.url.replace("/api/inngest", "/seen"),
                                           timeout=10).json()
    return seen


def test_a_lone_step_after_a_parallel_group_runs_in_the_request_that_finds_it(
        stack: tuple[LiveServer, AppProcess]) -> None:
    server, app = stack
    done = _finished(server, app, "parity/group-then-two", "parity-group-then-two")
    assert done["status"] == "Completed", done
    assert done["output"] == {"pair": [1, 2], "first": "A", "second": "B"}
    assert sorted(s["name"] for s in done["steps"][:2]) == ["p1", "p2"]
    assert [s["name"] for s in done["steps"][2:]] == ["first", "second"]
    # The group (1), its two steps (2), "first" and "second" each run where they are found
    # (2), the return (1). With every later step planned first, as before, it took 8.
    assert len(_seen(app)["group-then-two"]) == 6


def test_a_race_group_lets_each_branch_go_on_at_its_own_pace(
        stack: tuple[LiveServer, AppProcess]) -> None:
    server, app = stack
    done = _finished(server, app, "parity/race", "parity-race")
    assert done["status"] == "Completed", done
    seen = _seen(app)
    assert seen["race"] == ["a.1", "a.2", "b.1", "b.2"]
    # The plan, four steps, and a request after each of them (the last one returns): as the
    # SDK's own suite counts on Inngest.
    assert len(seen["race-requests"]) == 9


def test_ai_infer_makes_the_request_the_sdk_describes_and_records_the_answer(
        stack: tuple[LiveServer, AppProcess], provider: Provider) -> None:
    server, app = stack
    api = Api(server.url)
    done = _finished(server, app, "parity/infer", "parity-infer")
    assert done["status"] == "Completed", done
    assert done["output"] == {"answer": PROVIDER_ANSWER, "after": "done"}
    [request] = provider.requests
    assert request["path"] == "/v1/messages"
    assert request["body"] == {**PROMPT, "model": "claude-parity"}
    headers = request["headers"]
    assert headers["x-api-key"] == AUTH_KEY
    assert headers["x-my-header"] == "my-value"
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["content-type"] == "application/json"
    # Named as Go names them: the SDK's own suite reads them so from http.server.
    assert {"X-Api-Key", "X-My-Header", "Anthropic-Version", "Content-Type"} <= set(
        request["names"])
    ask = next(s for s in api.run(done["id"])["steps"] if s["name"] == "ask")
    assert (ask["status"], ask["output"]) == ("completed", {"data": PROVIDER_ANSWER})


def test_a_failed_inference_is_retried_as_a_step_and_fails_the_step_when_out_of_attempts(
        stack: tuple[LiveServer, AppProcess], provider: Provider) -> None:
    server, app = stack
    api = Api(server.url)

    def logs() -> str:
        return app.output() + (server.data_dir / "server.log").read_text(errors="replace")

    wait_for(lambda: api.synced(app.url), timeout=30, what="the app to sync", logs=logs)
    flaky = api.run_of(_send(server, "parity/infer", {"path": "/flaky/v1"}), "parity-infer")
    down = api.run_of(_send(server, "parity/infer", {"path": "/down/v1"}), "parity-infer")

    flaky = api.finished(flaky["id"], logs=logs)
    assert flaky["status"] == "Completed", flaky
    assert flaky["output"]["answer"] == PROVIDER_ANSWER
    ask = next(s for s in flaky["steps"] if s["name"] == "ask")
    assert (ask["status"], ask["attempts"]) == ("completed", 1)

    down = api.finished(down["id"], logs=logs)
    assert down["status"] == "Failed", down
    ask = next(s for s in down["steps"] if s["name"] == "ask")
    assert ask["status"] == "failed"
    error = ask["output"]["error"]
    assert error["name"] == "AIGatewayError"
    assert error["message"] == "Error making AI request: unsuccessful status code: 503"
    assert error["data"] == OVERLOADED
    assert "unsuccessful status code: 503" in json.dumps(down["error"])
    assert [r["path"] for r in provider.requests].count("/down/v1/messages") == 3  # retries=2
    assert [r["path"] for r in provider.requests].count("/flaky/v1/messages") == 2


def test_an_inference_to_a_url_that_is_not_http_fails_its_step_at_once(
        stack: tuple[LiveServer, AppProcess], provider: Provider) -> None:
    server, app = stack
    done = _finished(server, app, "parity/infer-nowhere", "parity-infer-nowhere")
    assert done["status"] == "Completed", done
    assert done["output"] == ("AIGatewayError: step.ai.infer 'ask' cannot be sent: the URL is "
                              "not an http(s) URL (file scheme)")
    ask = next(s for s in done["steps"] if s["name"] == "ask")
    assert (ask["status"], ask["attempts"]) == ("failed", 1)  # no retry: it cannot work
    assert provider.requests == []


def test_the_providers_key_is_kept_nowhere(stack: tuple[LiveServer, AppProcess],
                                           provider: Provider, tmp_path: Path) -> None:
    server, app = stack
    api = Api(server.url)
    done = _finished(server, app, "parity/infer", "parity-infer")
    down = api.finished(api.run_of(_send(server, "parity/infer", {"path": "/down/v1"}),
                                   "parity-infer")["id"])
    nowhere = _finished(server, app, "parity/infer-nowhere", "parity-infer-nowhere")
    assert (done["status"], down["status"], nowhere["status"]) == (
        "Completed", "Failed", "Completed")
    assert provider.requests[0]["headers"]["x-api-key"] == AUTH_KEY
    secret = AUTH_KEY.encode()
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.stat().st_size]
    assert any(p.name.startswith("dev.db") for p in files)
    assert any(p.name == "server.log" for p in files)
    for path in files:
        if path.name.startswith("dev.db") or path.name == "server.log":
            assert secret not in path.read_bytes(), path


@pytest.fixture
def streaming_stack(tmp_path: Path) -> Iterator[tuple[LiveServer, AppProcess, Http10Proxy]]:
    server_port = free_port()
    app = start_app(tmp_path, _uvicorn("streaming_app"), clean_env(
        INNGEST_DEV="1", INNGEST_BASE_URL=f"http://127.0.0.1:{server_port}"),
        name="streaming-app")
    proxy = Http10Proxy(app.url.removesuffix("/api/inngest"))
    try:
        server = start_server(tmp_path, "--db", str(tmp_path / "dev.db"), "-u", proxy.url,
                              "--no-discovery", port=server_port)
    except BaseException:
        proxy.close()
        stop_app(app)
        raise
    yield server, app, proxy
    stop_server(server)
    proxy.close()
    stop_app(app)


def test_a_streamed_answer_through_an_http_1_0_proxy_is_read_as_go_reads_it(
        streaming_stack: tuple[LiveServer, AppProcess, Http10Proxy]) -> None:
    server, app, proxy = streaming_stack
    api = Api(server.url)

    def logs() -> str:
        return app.output() + (server.data_dir / "server.log").read_text(errors="replace")

    wait_for(lambda: api.synced(proxy.url), timeout=30, what="the app to sync", logs=logs)
    run = api.run_of(_send(server, "parity/streamed"), "parity-streaming-streamed")
    done = api.finished(run["id"], timeout=30, logs=logs)
    assert done["status"] == "Completed", done
    assert done["output"] == "Hi, stepped"
    assert [s["name"] for s in done["steps"]] == ["step"]
    # Both calls were streamed, and passed on as the suite's proxy passes them on.
    assert [status for status, _ in proxy.answers] == [201, 201]
    assert all(h.get("transfer-encoding") == "chunked" for _, h in proxy.answers)


def test_get_dev_lists_the_functions_with_their_triggers_and_step_urls(
        stack: tuple[LiveServer, AppProcess]) -> None:
    server, app = stack
    api = Api(server.url)
    wait_for(lambda: api.synced(app.url), timeout=30, what="the app to sync")
    answer = httpx.get(f"{server.url}/dev", timeout=10)
    assert answer.status_code == 200, answer.text
    info = answer.json()
    assert info["version"].startswith("tidings-")
    assert info["startOpts"]["urls"] == [app.url]
    by_slug = {f["slug"]: f for f in info["functions"]}
    assert sorted(by_slug) == ["parity-group-then-two", "parity-infer", "parity-infer-nowhere",
                               "parity-race"]
    infer = by_slug["parity-infer"]
    assert infer == {"id": infer["id"], "name": "infer", "slug": "parity-infer",
                     "triggers": [{"event": "parity/infer"}],
                     "steps": [{"id": "step", "name": "step", "retries": 2,
                                "uri": f"{app.url}?fnId=parity-infer&stepId=step"}]}
    [handler] = info["handlers"]
    assert handler["sdk"]["appName"] == "parity"
    assert sorted(handler["functionIDs"]) == sorted(f["id"] for f in info["functions"])


def test_the_events_api_gives_each_event_its_internal_id_as_inngest_names_it(
        live_server: LiveServer) -> None:
    """The inngest-py suite reads ``internal_id`` of ``GET /v1/events`` to match the ids its
    sends returned."""
    ids = [_send(live_server, "parity/listed") for _ in range(2)]
    listed = httpx.get(f"{live_server.url}/v1/events", params={"name": "parity/listed"},
                       timeout=10).json()["data"]
    assert sorted(e["internal_id"] for e in listed) == sorted(ids)
    assert all(e["internal_id"] == e["id"] for e in listed)
