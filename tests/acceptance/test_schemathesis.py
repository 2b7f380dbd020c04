"""Schemathesis fuzzes every operation ``/openapi.json`` describes against a live ``tidings dev``
over SQLite: no answer may be a 5xx, and every answer must match the document."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.conftest import LiveServer, start_server, stop_server
from tidings.server.openapi import document

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    unsupported_method,
]
# Dev accepts any event key; the bearer makes POST /v1/events reach the handler.
AUTH = {"Authorization": "Bearer dev"}

# The document the server serves (the last test proves they are equal). Loaded at import so that
# each operation is its own test; ``schemathesis.pytest.from_fixture`` cannot be used with
# pytest 9 (schemathesis 4.32 sets the removed ``Node._nodeid``).
schema = schemathesis.openapi.from_dict(document())


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("fuzz")
    server = start_server(tmp, "--db", str(tmp / "fuzz.db"))
    yield server
    stop_server(server)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case: schemathesis.Case,
                                               dev_server: LiveServer) -> None:
    case.call_and_validate(base_url=dev_server.url, headers=AUTH, checks=CHECKS)


def test_openapi_json_describes_every_json_endpoint(dev_server: LiveServer) -> None:
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
        ("GET", "/health"),
        ("GET", "/openapi.json"),
    }
    assert served.json() == document()


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


@pytest.mark.xfail(strict=True, reason="event_api.py decodes x-inngest-env as UTF-8 and answers "
                   "500 for other bytes (not in a file this suite's author may edit)")
def test_a_non_utf8_branch_header_on_the_event_api_is_not_a_server_error(
    dev_server: LiveServer,
) -> None:
    reply = httpx.post(f"{dev_server.url}/e/key", json={"name": "app/x"}, timeout=10,
                       headers=[(b"x-inngest-env", b"caf\xe9")])

    assert reply.status_code < 500, reply.text

