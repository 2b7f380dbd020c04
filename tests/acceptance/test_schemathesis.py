"""Schemathesis fuzzes every operation ``/openapi.json`` describes against a live ``tidings dev``
over SQLite: no answer may be a 5xx, and every answer must match the document. Random ids rarely
name a real run, so the runs API and the SDK endpoints are also called on real runs and checked
the same way. Generated app URLs are aimed at a closed loopback port: the fuzzer must not make
the server call hosts on the network (or wait for them)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.conftest import LiveServer, start_server, stop_server
from tidings.connect import wire_pb2 as pb
from tidings.server.openapi import document

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    unsupported_method,
]
# Dev accepts any key and needs none; the fuzzed calls go without, the real-run calls with one.
AUTH = {"Authorization": "Bearer dev"}

# The document the server serves (the last test proves they are equal). Loaded at import so that
# each operation is its own test; ``schemathesis.pytest.from_fixture`` cannot be used with
# pytest 9 (schemathesis 4.32 sets the removed ``Node._nodeid``).
schema = schemathesis.openapi.from_dict(document(dev=True))

# Connect's bodies are protobuf: empty (a valid StartRequest), the messages the SDKs send, or
# any bytes; answers of that type are checked as the opaque string the document says they are.
schemathesis.openapi.media_type("application/protobuf", st.one_of(
    st.just(b""), st.binary(max_size=256),
    st.sampled_from([pb.StartRequest(exclude_gateways=["gw"]).SerializeToString(),
                     pb.SDKResponse(request_id="01M90W3Q9S82EK4PVH1C9AB6KF").SerializeToString(),
                     ])))


@schemathesis.deserializer("application/protobuf")
def _protobuf(ctx: schemathesis.DeserializationContext, response: Any) -> str:
    return bytes(response.content).hex()


FUZZ_APP = """
import tidings

client = tidings.Tidings(app_id="fuzz")


@client.function(id="nap", trigger=tidings.TriggerEvent(event="fuzz/go"))
async def nap(ctx):
    await ctx.step.run("first", lambda: 1)
    await ctx.step.sleep("nap", "1h")


@client.function(id="fail", trigger=tidings.TriggerEvent(event="fuzz/go"), retries=0)
async def fail(ctx):
    raise tidings.NonRetriableError("no")
"""


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "fuzzapp.py").write_text(FUZZ_APP)
    server = start_server(tmp, "--db", str(tmp / "fuzz.db"), "-a", "fuzzapp:client",
                          "--no-discovery")
    yield server
    stop_server(server)


CLOSED_APP = "http://127.0.0.1:9/api/inngest"  # the discard port: nothing listens


def aimed_home(value: Any) -> Any:
    """``value`` with every http(s) URL in it replaced by ``CLOSED_APP``. Text that is not a
    URL the server would call (or that ``urlsplit`` cannot read) stays for the server to
    refuse."""
    if isinstance(value, dict):
        return {key: aimed_home(item) for key, item in value.items()}
    if isinstance(value, list):
        return [aimed_home(item) for item in value]
    if isinstance(value, str):
        try:
            scheme = urlsplit(value).scheme
        except ValueError:
            return value
        return CLOSED_APP if scheme in ("http", "https") else value
    return value


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case: schemathesis.Case,
                                               dev_server: LiveServer) -> None:
    if case.path in ("/fn/register", "/v1/apps/sync", "/api/v1/endpoints"):
        case.body = aimed_home(case.body)
    case.call_and_validate(base_url=dev_server.url, checks=CHECKS)


def test_openapi_json_describes_every_endpoint(dev_server: LiveServer) -> None:
    served = httpx.get(f"{dev_server.url}/openapi.json", timeout=10)

    assert served.status_code == 200
    assert served.headers["content-type"] == "application/json"
    described = {(method.upper(), path) for path, item in served.json()["paths"].items()
                 for method in item}
    assert described == {
        ("POST", "/e/{key}"),
        ("GET", "/v1/events"),
        ("POST", "/v1/events"),
        ("GET", "/v1/events/{event_id}"),
        ("GET", "/v1/events/{event_id}/runs"),
        ("POST", "/v1/events/{event_id}/cancel"),
        ("GET", "/v1/runs"),
        ("GET", "/v1/runs/{run_id}"),
        ("POST", "/v1/runs/{run_id}/cancel"),
        ("POST", "/v1/runs/{run_id}/rerun"),
        ("POST", "/v1/replays"),
        ("POST", "/v1/cancellations"),
        ("GET", "/v1/replays/{replay_id}"),
        ("POST", "/fn/register"),
        ("GET", "/v0/runs/{run_id}/batch"),
        ("GET", "/v0/runs/{run_id}/actions"),
        ("GET", "/v1/apps"),
        ("POST", "/v1/apps/sync"),
        ("POST", "/v0/connect/start"),
        ("POST", "/v0/connect/flush"),
        ("GET", "/v0/connect/envs/{env_id}/conns"),
        ("GET", "/v1/functions"),
        ("GET", "/v1/functions/{slug}"),
        ("POST", "/v1/functions/{slug}/invoke"),
        ("GET", "/dev"),
        ("POST", "/api/v1/events"),
        ("POST", "/api/v1/events/bulk"),
        ("POST", "/api/v1/events/{event_id}/cancel"),
        ("POST", "/api/v1/events/{event_id}/cancel-runs"),
        ("GET", "/api/v2/events/{event_id}"),
        ("GET", "/api/v2/runs/{run_id}"),
        ("GET", "/api/v2/runs/{run_id}/statuses"),
        ("PUT", "/api/v1/runs/{run_id}/statuses/{status_id}"),
        ("POST", "/api/v1/event-dispatchers/ephemeral"),
        ("POST", "/api/v1/jobs/{job_id}/cancel-runs"),
        ("GET", "/api/v1/jobs/{job_id}/runs"),
        ("POST", "/api/v1/runs/{run_id}/cancel"),
        ("POST", "/api/v1/runs/{run_id}/tasks"),
        ("POST", "/api/v1/runs/{run_id}/tasks/{task_id}/complete"),
        ("POST", "/api/v1/runs/{run_id}/tasks/{task_id}/fail"),
        ("POST", "/api/v1/runs/{run_id}/tasks/{task_id}/callback/{secret}"),
        ("GET", "/api/v1/store/{key}"),
        ("PUT", "/api/v1/store/{key}"),
        ("DELETE", "/api/v1/store/{key}"),
        ("POST", "/api/v1/endpoints"),
        ("POST", "/api/v1/jobs/{job_id}/invoke"),
        ("GET", "/health"),
        ("GET", "/ready"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("DELETE", "/v1/users/{external_id}"),
        ("GET", "/v1/users/{external_id}/events"),
        ("GET", "/v1/settings"),
        ("POST", "/v1/settings"),
    }
    assert served.json() == document(dev=True)


def _call(server: LiveServer, path: str, method: str, status: int, **parts: Any) -> Any:
    case = schema[path][method].Case(**parts)
    reply = case.call_and_validate(base_url=server.url, headers=AUTH, checks=CHECKS)
    assert reply.status_code == status, reply.text
    return reply.json().get("data")


def test_the_runs_api_on_real_runs_answers_as_documented(dev_server: LiveServer) -> None:
    sent = httpx.post(f"{dev_server.url}/e/key", timeout=10, json=[
        {"name": "fuzz/go", "user": {"email": "a@b.c"}},
        {"name": "fuzz/go", "deliver_after": 3600}])
    event_id, delayed = sent.json()["ids"]
    deadline = time.monotonic() + 30
    runs: list[dict[str, Any]] = []
    while {r["status"] for r in runs} != {"Sleeping", "Failed"}:
        assert time.monotonic() < deadline, runs
        time.sleep(0.05)
        runs = _call(dev_server, "/v1/events/{event_id}/runs", "GET", 200,
                     path_parameters={"event_id": event_id})
    napping = next(r for r in runs if r["status"] == "Sleeping")
    failed = next(r for r in runs if r["status"] == "Failed")
    one = {"path_parameters": {"run_id": napping["id"]}}

    detail = _call(dev_server, "/v1/runs/{run_id}", "GET", 200, **one)
    listed = _call(dev_server, "/v1/runs", "GET", 200,
                   query={"function": "fuzz-nap", "status": ["Sleeping", "Failed"]})
    rerun = _call(dev_server, "/v1/runs/{run_id}/rerun", "POST", 201,
                  path_parameters={"run_id": failed["id"]})
    cancelled = _call(dev_server, "/v1/runs/{run_id}/cancel", "POST", 200, **one)
    _call(dev_server, "/v1/runs/{run_id}/cancel", "POST", 409, **one)
    replay = _call(dev_server, "/v1/replays", "POST", 201, body={
        "function": "fuzz-fail", "since": 0, "until": "2100-01-01T00:00:00Z",
        "statuses": ["Failed"]})
    progress = _call(dev_server, "/v1/replays/{replay_id}", "GET", 200,
                     path_parameters={"replay_id": replay["id"]})
    stopped = _call(dev_server, "/v1/events/{event_id}/cancel", "POST", 200,
                    path_parameters={"event_id": delayed})
    _call(dev_server, "/v1/events/{event_id}/cancel", "POST", 409,
          path_parameters={"event_id": delayed})

    assert detail["event"]["user"] == {"email": "a@b.c"}
    assert [p["kind"] for p in detail["pauses"]] == ["sleep"]
    assert [(s["name"], s["kind"], s["invoked_run_id"]) for s in detail["steps"]] == [
        ("first", "run", None)]
    assert detail["parent_step"] is None
    assert [r["id"] for r in listed] == [napping["id"]]
    assert rerun["rerun_of"] == failed["id"]
    assert cancelled["status"] == "Cancelled"
    assert replay["done"] and progress == replay
    assert replay["total"] >= 1
    assert stopped["cancelled_at"] is not None


def test_the_functions_api_answers_as_documented(dev_server: LiveServer) -> None:
    listed = _call(dev_server, "/v1/functions", "GET", 200)
    nap = _call(dev_server, "/v1/functions/{slug}", "GET", 200,
                path_parameters={"slug": "fuzz-nap"})
    _call(dev_server, "/v1/functions/{slug}", "GET", 404, path_parameters={"slug": "fuzz-no"})

    assert [f["slug"] for f in listed if f["app_id"] == "fuzz"] == ["fuzz-fail", "fuzz-nap"]
    assert nap in listed
    assert (nap["name"], nap["kind"], nap["url"], nap["retries"]) == ("nap", "native", None, 4)
    assert nap["triggers"] == [{"event": "fuzz/go"}]
    assert nap["flow"] == {} and not nap["archived"]
    assert nap["synced_at"] == nap["updated_at"]


def _call_raw(server: LiveServer, path: str, method: str, status: int, **parts: Any) -> Any:
    case = schema[path][method].Case(**parts)
    reply = case.call_and_validate(base_url=server.url, headers=AUTH, checks=CHECKS)
    assert reply.status_code == status, reply.text
    return reply.json()


def test_the_sdk_endpoints_on_real_runs_and_apps_answer_as_documented(
    dev_server: LiveServer,
) -> None:
    sent = httpx.post(f"{dev_server.url}/e/key", timeout=10,
                      json={"name": "fuzz/go", "data": {"n": 1}})
    [event_id] = sent.json()["ids"]
    deadline = time.monotonic() + 30
    napping = None
    while napping is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
        runs = _call(dev_server, "/v1/events/{event_id}/runs", "GET", 200,
                     path_parameters={"event_id": event_id})
        napping = next((r for r in runs if r["status"] == "Sleeping"), None)
    one = {"path_parameters": {"run_id": napping["id"]}}

    events = _call_raw(dev_server, "/v0/runs/{run_id}/batch", "GET", 200, **one)
    steps = _call_raw(dev_server, "/v0/runs/{run_id}/actions", "GET", 200, **one)
    _call_raw(dev_server, "/v0/runs/{run_id}/batch", "GET", 404,
              path_parameters={"run_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV"})
    registered = _call_raw(dev_server, "/fn/register", "POST", 200, body={
        "appname": "docs-app", "url": CLOSED_APP, "framework": "fast_api", "sdk": "py:v0.5.19",
        "functions": [{"id": "docs-app-f", "name": "f", "triggers": [{"event": "docs/f"}],
                       "steps": {"step": {"id": "step", "name": "step",
                                          "runtime": {"type": "http", "url": CLOSED_APP},
                                          "retries": {"attempts": 1}}}}]})
    _call_raw(dev_server, "/fn/register", "POST", 400, body={
        "appname": "docs-app", "url": CLOSED_APP, "functions": [{"id": "x", "triggers": [],
                                                                  "steps": {}}]})
    unreachable = _call_raw(dev_server, "/v1/apps/sync", "POST", 422, body={"url": CLOSED_APP})
    apps = _call(dev_server, "/v1/apps", "GET", 200)

    assert [(e["id"], e["name"], e["data"]) for e in events] == [
        (event_id, "fuzz/go", {"n": 1})]
    [(step_id, memo)] = steps.items()
    assert memo == {"data": 1} and step_id
    assert registered == {"ok": True, "modified": True}
    assert unreachable["data"]["status"] == "unreachable"
    [app] = [a for a in apps if a["url"] == CLOSED_APP]
    assert (app["status"], app["app_id"], app["functions"]) == ("unreachable", "docs-app", 1)


@pytest.mark.parametrize("query", [
    "limit=%C2%B2",         # "²".isdigit() is true, int("²") fails
    "since=%C2%B2",
    "until=--5",
    "since=" + "9" * 5000,  # more digits than int() converts
    "limit=" + "1" * 5000,
    "since=2020-01-01T00:00:00",  # no UTC offset
    "cursor=01ARZ3NDEKTSV4RRFFQ69G5FAV%0A",
    "name=a%00b",          # PostgreSQL text cannot hold NUL
])
def test_query_values_the_fuzzer_rarely_finds_get_400(dev_server: LiveServer, query: str) -> None:
    reply = httpx.get(f"{dev_server.url}/v1/events?{query}", timeout=10)

    assert reply.status_code == 400, reply.text
    assert reply.json()["status"] == 400


def test_unsupported_method_gets_405_with_allow(dev_server: LiveServer) -> None:
    events = httpx.request("DELETE", f"{dev_server.url}/v1/events", timeout=10)
    ingest = httpx.get(f"{dev_server.url}/e/some-key", timeout=10)

    assert events.status_code == 405
    assert set(events.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
    assert events.json() == {"error": "Method Not Allowed", "status": 405}
    assert ingest.status_code == 405
    assert ingest.headers["allow"] == "POST"


def test_a_seed_reused_in_another_environment_gets_409_not_500(dev_server: LiveServer) -> None:
    seed = {"x-inngest-event-id-seed": "1700000000000,MDEyMzQ1Njc4OQ==", **AUTH}
    first = httpx.post(f"{dev_server.url}/v1/events", json={"name": "app/seeded"}, timeout=10,
                       headers={**seed, "x-inngest-env": "seed-a"})
    second = httpx.post(f"{dev_server.url}/v1/events", json={"name": "app/seeded"}, timeout=10,
                        headers={**seed, "x-inngest-env": "seed-b"})

    assert first.status_code == 200, first.text
    assert second.status_code == 409, second.text
    assert "x-inngest-event-id-seed" in second.json()["error"]


def test_a_non_utf8_branch_header_on_the_event_api_is_not_a_server_error(
    dev_server: LiveServer,
) -> None:
    reply = httpx.post(f"{dev_server.url}/e/key", json={"name": "app/x"}, timeout=10,
                       headers=[(b"x-inngest-env", b"caf\xe9")])

    assert reply.status_code < 500, reply.text


def test_the_dev_document_asks_for_no_credentials_and_dev_needs_none(
    dev_server: LiveServer,
) -> None:
    dev, serve = document(dev=True), document(dev=False)
    operations = [(path, method) for path, item in dev["paths"].items() for method in item]
    needs_none = {("/e/{key}", "post"), ("/health", "get"), ("/ready", "get"),
                  ("/openapi.json", "get"),
                  # a v2 io.waitForRequest callback: its secret in the path is the credential
                  ("/api/v1/runs/{run_id}/tasks/{task_id}/callback/{secret}", "post")}

    asked = {(p, m) for p, m in operations if dev["paths"][p][m].get("security")}
    required = {(p, m) for p, m in operations if serve["paths"][p][m].get("security")}
    answers = {path: httpx.get(f"{dev_server.url}{path}", timeout=10).status_code
               for path in ("/v1/events", "/v1/runs", "/v1/apps")}
    sent = httpx.post(f"{dev_server.url}/v1/events", json={"name": "docs/no-key"}, timeout=10)

    assert asked == set()
    assert required == set(operations) - needs_none
    assert answers == {"/v1/events": 200, "/v1/runs": 200, "/v1/apps": 200}
    assert sent.status_code == 200, sent.text


def test_ts_and_timestamp_together_break_the_document_and_are_refused(
    dev_server: LiveServer,
) -> None:
    event_in = jsonschema_rs.validator_for(document(dev=True)["components"]["schemas"]["EventIn"])
    both = {"name": "docs/both", "ts": 1_700_000_000_000, "timestamp": 1_700_000_000_000}
    either = [{"name": "docs/one", "ts": 1_700_000_000_000},
              {"name": "docs/one", "timestamp": "2023-11-14T22:13:20Z"},
              {"name": "docs/one", "ts": 0, "timestamp": 1_700_000_000_000}]

    reply = httpx.post(f"{dev_server.url}/e/key", json=both, timeout=10)
    accepted = httpx.post(f"{dev_server.url}/e/key", json=either, timeout=10)

    assert not event_in.is_valid(both)
    assert all(event_in.is_valid(one) for one in either)
    assert reply.status_code == 400
    assert [e["field"] for e in reply.json()["errors"]] == ["timestamp"]
    assert accepted.status_code == 200, accepted.text


@pytest.mark.parametrize("path", ["/v1/replays", "/v1/cancellations"])
def test_a_range_must_end_after_it_starts_as_the_document_says(dev_server: LiveServer,
                                                                path: str) -> None:
    """JSON Schema cannot compare two fields: the document says it in words, the server
    answers 400 naming ``until``."""
    schema_name = "ReplayIn" if path == "/v1/replays" else "CancellationsIn"
    until = document(dev=True)["components"]["schemas"][schema_name]["properties"]["until"]
    body: dict[str, Any] = {"function": "fuzz-nap", "since": "2024-01-01T00:00:00Z",
                            "until": "2024-01-01T00:00:00Z"}
    if path == "/v1/replays":
        body["statuses"] = ["Failed"]

    reply = httpx.post(f"{dev_server.url}{path}", json=body, timeout=10)

    assert "must be after since" in until["description"]
    assert reply.status_code == 400
    assert reply.json()["error"].startswith("until:")
