"""Bad input, sent to every endpoint, on both backends: ``tidings dev`` on SQLite and
``tidings serve`` on PostgreSQL, live on loopback ports.

Every endpoint the app has must be in the OpenAPI document (checked against the app's own
route table), and the cases are built from the document: each path and query parameter, each
documented header, each field of each request body gets the classes of bad input that have
broken servers like this one: text that is not UTF-8, NUL, nesting 100,000 deep, wrong types,
unknown keys, oversized values, credentials that are not ASCII, and hostile CEL expressions.
A new route is covered by the parameters it documents, and a new route taking a body fails
``test_every_endpoint_is_covered`` until ``BODIES`` says what a valid body for it is.

Each case must get a 4xx whose message names what was wrong (the field, parameter or header),
and afterwards the server must answer ``/health``, list and get must work, and nothing may have
been stored (the events, apps and runs listed before and after are the same).

What stays lenient, on purpose (Inngest's server does the same, and its SDKs rely on it):
unknown query parameters on the Event API, the SDK endpoints (Connect's too), ``/health``,
``/ready``, ``/metrics`` and ``/openapi.json``; unknown keys in a registration body
(``/fn/register``), where SDKs send more than any one server reads. ``tidings dev`` takes any
event key, so the key in
``/e/{key}`` is only a credential under ``serve``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.acceptance.sdk_apps import production_keys, tidings_cli
from tests.conftest import LiveServer, fresh_schema, make_settings, start_server, stop_server
from tidings.core import Core
from tidings.server import create_app
from tidings.server.openapi import document
from tidings.server.sdk_api import MAX_REGISTER_BYTES
from tidings.settings import Limits

DOC = document(dev=False)
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    (method.upper(), path): operation
    for path, item in DOC["paths"].items() for method, operation in item.items()
}
LIMITS = Limits()
CLOSED_APP = "http://127.0.0.1:9/api/inngest"  # nothing listens: never called by these cases
BAD_UTF8 = b"\xc3\x28"  # a lead byte without its continuation
DEEP_CEL = "(" * 100_000 + "true" + ")" * 100_000

LENIENT_QUERY = {("POST", "/e/{key}"), ("POST", "/fn/register"),
                 ("GET", "/v0/runs/{run_id}/batch"), ("GET", "/v0/runs/{run_id}/actions"),
                 ("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics"),
                 ("GET", "/openapi.json"),
                 ("POST", "/v0/connect/start"), ("POST", "/v0/connect/flush")}
LENIENT_KEYS = {("POST", "/fn/register"), ("POST", "/api/v1/runs/{run_id}/tasks"),
                ("POST", "/api/v1/runs/{run_id}/tasks/{task_id}/complete"),
                ("POST", "/api/v1/runs/{run_id}/tasks/{task_id}/fail"),
                # io.waitForRequest's body is the caller's own object, returned as it is
                ("POST", "/api/v1/runs/{run_id}/tasks/{task_id}/callback/{secret}")}
# Bodies that are not JSON (the v2 key-value store takes its value as text): their own cases.
RAW_BODIES = {("PUT", "/api/v1/store/{key}")}
# Paths whose parameter may be any text (a store key, a job id): a non-ASCII one is valid.
ANY_TEXT = {"/api/v1/store/{key}", "/api/v1/jobs/{job_id}/invoke",
            "/api/v1/jobs/{job_id}/runs", "/api/v1/jobs/{job_id}/cancel-runs",
            "/api/v1/runs/{run_id}/statuses/{status_id}",
            # erasing or exporting a person never seen: a 200 with nothing
            "/v1/users/{external_id}", "/v1/users/{external_id}/events"}
BODYLESS = {("POST", "/v1/runs/{run_id}/cancel"),
            ("POST", "/v1/events/{event_id}/cancel"), ("POST", "/api/v1/events/{event_id}/cancel"),
            ("POST", "/api/v1/events/{event_id}/cancel-runs"),
            ("POST", "/api/v1/runs/{run_id}/cancel"),
            ("POST", "/api/v1/jobs/{job_id}/cancel-runs")}
# Protobuf bodies: their malformed bodies are in test_connect_bad_input; their headers and
# credentials get the cases here.
PROTOBUF_BODIES = {("POST", "/v0/connect/start"), ("POST", "/v0/connect/flush")}


@dataclass(frozen=True)
class Body:
    """A valid body of an endpoint, where its fields are, and how messages name them."""

    valid: Any
    where: tuple[Any, ...]  # the path to the object whose fields are mutated
    named: str  # how a message names a field: "{}" is the field
    text: tuple[str, ...]  # fields stored as text: no NUL
    json: tuple[str, ...] = ()  # fields holding any JSON: no invalid UTF-8 or deep nesting
    wrong: dict[str, Any] = field(default_factory=dict)  # a value of the wrong type per field
    limit: int = LIMITS.max_body_bytes
    whole: str = "body"  # how a message names the body as a whole
    optional: bool = False  # an empty body is valid (the document says it is not required)


EVENT = {"name": "bad/input", "data": {"k": "v"}, "id": "bad-input-1", "v": "1",
         "source": "src", "account_id": "acc", "context": {"c": "x"}, "user": {"u": "x"},
         "meta": {"sessions": {"s": "1"}}}
EVENT_WRONG = {"name": 1, "data": "x", "id": 1, "ts": "soon", "timestamp": True, "v": 1,
               "source": [], "context": "x", "user": 2, "meta": "x", "deliver_at": False,
               "deliver_after": "1h", "account_id": {}, "payload": 3}
V2_EVENT = {"name": "bad/input", "payload": {"k": "v"}, "context": {"c": "x"},
            "id": "bad-input-v2", "timestamp": "2026-01-01T00:00:00Z", "source": "src"}
V2_WRONG = {"name": 1, "payload": 3, "context": "x", "id": 1, "timestamp": True, "source": [],
            "payloadType": "REQUEST"}
V2_OPTIONS = {"deliverAfter": 3600, "accountId": "acc"}
REGISTER = {
    "appname": "bad-app", "url": CLOSED_APP, "framework": "x", "sdk": "py:v0.5.19",
    "functions": [{"id": "f", "name": "f",
                   "triggers": [{"event": "bad/f", "expression": "event.data.n > 1"}],
                   "steps": {"step": {"id": "step", "name": "step",
                                      "runtime": {"type": "http", "url": CLOSED_APP},
                                      "retries": {"attempts": 1}}}}],
}
BODIES: dict[tuple[str, str], Body] = {
    ("POST", "/e/{key}"): Body([EVENT], (0,), "events[0].{}", ("name", "id", "v", "source",
                               "account_id"), ("data", "context", "user", "meta"), EVENT_WRONG,
                               whole="events"),
    ("POST", "/v1/events"): Body([EVENT], (0,), "events[0].{}", ("name", "id", "v", "source",
                                 "account_id"), ("data", "context", "user", "meta"),
                                 EVENT_WRONG, whole="events"),
    ("POST", "/api/v1/events"): Body({"event": V2_EVENT, "options": V2_OPTIONS}, ("event",),
                                     "event.{}", ("name", "id", "source"),
                                     ("payload", "context"), V2_WRONG),
    ("POST", "/api/v1/events/bulk"): Body({"events": [V2_EVENT], "options": V2_OPTIONS},
                                          ("events", 0), "events[0].{}", ("name", "id", "source"),
                                          ("payload", "context"), V2_WRONG),
    ("POST", "/api/v1/runs/{run_id}/tasks"): Body(
        {"idempotencyKey": "k1", "name": "task", "displayKey": "task", "noop": False,
         "params": {"p": 1}}, (), "{}", ("idempotencyKey", "name", "displayKey"), ("params",),
        {"idempotencyKey": 1, "noop": "yes", "delayUntil": 5, "name": 1}),
    ("POST", "/api/v1/runs/{run_id}/tasks/{task_id}/complete"): Body(
        {"output": {"o": 1}}, (), "{}", ()),
    ("POST", "/api/v1/runs/{run_id}/tasks/{task_id}/callback/{secret}"): Body(
        {"approved": True}, (), "{}", ()),
    ("POST", "/api/v1/runs/{run_id}/tasks/{task_id}/fail"): Body(
        {"error": {"message": "m"}}, (), "{}", (), ("error",), {"error": "x"}),
    ("POST", "/api/v1/jobs/{job_id}/invoke"): Body(
        {"payload": {"p": 1}, "context": {"c": 1}, "options": {"accountId": "a"}}, (), "{}", (),
        ("payload", "context"), {"payload": 3, "options": "x"}),
    ("PUT", "/api/v1/runs/{run_id}/statuses/{status_id}"): Body(
        {"label": "l", "state": "loading", "data": {"d": 1}}, (), "{}", ("label",), ("data",),
        {"label": 1, "state": "done", "data": [1]}),
    ("POST", "/api/v1/event-dispatchers/ephemeral"): Body(
        {"url": "http://127.0.0.1:9/api/v1/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV/tasks/"
                "01ARZ3NDEKTSV4RRFFQ69G5FAV/callback", "name": "e", "source": "s",
         "accountId": "a", "filter": {"a": ["b"]}, "contextFilter": {"c": ["d"]},
         "timeoutInSeconds": 60}, (), "{}", ("name", "source", "accountId"), (),
        {"url": 1, "name": 1, "source": [], "accountId": {}, "filter": "x",
         "contextFilter": [], "timeoutInSeconds": "x"}),
    ("POST", "/api/v1/endpoints"): Body({"url": CLOSED_APP, "name": "bad-app"}, (), "{}",
                                        ("url", "name"), (), {"url": 1, "name": 1}),
    ("POST", "/v1/replays"): Body(
        {"function": "no-such-fn", "since": 0, "until": "2100-01-01T00:00:00Z",
         "statuses": ["Failed"]}, (), "{}", ("function",), ("statuses",),
        {"function": 1, "since": True, "until": [], "statuses": "Failed", "dry_run": "yes"}),
    ("POST", "/v1/cancellations"): Body(
        {"function": "no-such-fn", "since": 0, "until": "2100-01-01T00:00:00Z"}, (), "{}",
        ("function",), ("since",), {"function": 1, "since": True, "until": {}, "dry_run": 1}),
    ("POST", "/v1/functions/{slug}/invoke"): Body(
        {"data": {"k": "v"}, "user": {"u": "x"}}, (), "{}", (), ("data", "user"),
        {"data": "x", "user": 3}, optional=True),
    ("POST", "/v1/runs/{run_id}/rerun"): Body({"from_step": "s"}, (), "{}", ("from_step",), (),
                                              {"from_step": 1}, optional=True),
    ("POST", "/v1/settings"): Body(
        {"events_ttl": "3650d", "runs_ttl": "forever", "dedup_window": "1d"}, (), "{}",
        ("events_ttl", "runs_ttl", "dedup_window"), (),
        {"events_ttl": True, "runs_ttl": {}, "dedup_window": [1]}),
    ("POST", "/v1/apps/sync"): Body({"url": CLOSED_APP}, (), "{}", ("url",), ("url",),
                                    {"url": 1}, limit=64 * 1024),
    ("POST", "/fn/register"): Body(
        REGISTER, (), "{}", ("appname", "url"), ("functions",),
        {"appname": 1, "url": 1, "functions": "f"}, limit=MAX_REGISTER_BYTES),
}
# How the registration's messages name its fields ("App ID required", "the app URL").
REGISTER_NAMES = {"appname": "app", "url": "url", "functions": "functions"}
HOSTILE_CEL = {
    "deep": DEEP_CEL,
    "long": "event.data.n == 1 && " * 100_000 + "true",
    "undefined-function": "foo(1)",
    "type-error": "1 + 'a' == 2",
    "not-a-condition": "event.name",
    "not-cel": "event.data.(",
    "nested-map": "event.data.a.map(x, event.data.a.map(y, x + y)).size() > 0",
}


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str  # the document's path, parameters filled in at send time
    names: str  # what the message must name (case-insensitive)
    params: dict[str, str] = field(default_factory=dict)  # path parameters (raw, encoded)
    query: bytes = b""
    headers: dict[str, bytes] = field(default_factory=dict)
    body: bytes | None = None
    statuses: tuple[int, ...] = (400,)
    modes: tuple[str, ...] = ("dev", "serve")
    auth: bool = True  # send the credential the document asks for (under serve)


def _deep(body: Body) -> bytes:
    """Nesting 100,000 deep, or as deep as fits the body's size limit (still far past where
    Python's recursion gives up)."""
    depth = min(100_000, (body.limit - 1000) // 2)
    return b"[" * depth + b"]" * depth


def _mutate(body: Body, change: Any) -> bytes:
    """The valid body with ``change(obj)`` applied to the object at ``body.where``; bytes
    marked ``@@BAD@@`` in the JSON text become invalid UTF-8 there."""
    value = json.loads(json.dumps(body.valid))
    target = value
    for step in body.where:
        target = target[step]
    change(target)
    return json.dumps(value).encode().replace(b"@@BAD@@", BAD_UTF8).replace(
        b'"@@DEEP@@"', _deep(body))


def _set(key: str, item: Any) -> Any:
    def change(obj: dict[str, Any]) -> None:
        obj[key] = item
    return change


def _nested(item: str) -> Any:
    return {"nested": [item]}


def _body_cases(method: str, path: str, body: Body) -> Iterator[Case]:
    op = f"{method} {path}"
    lenient = (method, path) in LENIENT_KEYS

    def named(key: str) -> str:
        if path == "/fn/register":
            return REGISTER_NAMES.get(key, key)
        return body.named.format(key)

    whole = body.whole
    yield Case(f"{op} body not JSON", method, path, "JSON", body=b'{"name": ')
    if not body.optional:
        yield Case(f"{op} body empty", method, path, "body", body=b"")
    yield Case(f"{op} body deep", method, path, whole if whole == "events" else "nested",
               body=_deep(body))
    yield Case(f"{op} body a number", method, path, "body", body=b"1")
    yield Case(f"{op} body invalid UTF-8 outside strings", method, path, "JSON",
               body=b"[" + BAD_UTF8 + b"]")
    yield Case(f"{op} body oversized", method, path, "limit",
               body=b'{"x": "' + b"a" * (body.limit + 1) + b'"}', statuses=(413,))
    if not lenient:
        yield Case(f"{op} unknown key", method, path, "zz_unknown",
                   body=_mutate(body, _set("zz_unknown", 1)))
    for key in body.text:
        yield Case(f"{op} {key} NUL", method, path, named(key),
                   body=_mutate(body, _set(key, "a\x00b")))
        yield Case(f"{op} {key} invalid UTF-8", method, path, named(key),
                   body=_mutate(body, _set(key, "a@@BAD@@b")))
    for key in body.json:
        yield Case(f"{op} {key} invalid UTF-8 inside", method, path, named(key),
                   body=_mutate(body, _set(key, _nested("a@@BAD@@b"))))
        yield Case(f"{op} {key} deep", method, path, named(key),
                   body=_mutate(body, _set(key, "@@DEEP@@")))
    for key, item in body.wrong.items():
        yield Case(f"{op} {key} wrong type", method, path, named(key),
                   body=_mutate(body, _set(key, item)))
    if path == "/fn/register":
        for name, source in HOSTILE_CEL.items():
            bad = json.loads(json.dumps(REGISTER))
            bad["functions"][0]["triggers"][0]["expression"] = source
            yield Case(f"{op} CEL {name}", method, path, "function 'f'",
                       body=json.dumps(bad).encode())
        bad = json.loads(json.dumps(REGISTER))
        bad["functions"][0]["concurrency"] = [{"limit": 1, "key": "foo(event.data.n)"}]
        yield Case(f"{op} CEL key undefined function", method, path, "concurrency.key",
                   body=json.dumps(bad).encode())


def _parameter_cases(method: str, path: str, operation: dict[str, Any]) -> Iterator[Case]:
    op = f"{method} {path}"
    parameters = operation.get("parameters", [])
    in_path = [p["name"] for p in parameters if p["in"] == "path"]
    body = BODIES.get((method, path))
    valid_body = json.dumps(body.valid).encode() if body else None
    # Ids nothing has (the key of /e/{key} is the target's own event key, filled in later).
    ids = {name: "01ARZ3NDEKTSV4RRFFQ69G5FAV" for name in in_path if name != "key"}
    for name in in_path:
        noun = "key" if name == "key" else name.split("_")[0]
        modes = ("serve",) if path == "/e/{key}" else ("dev", "serve")
        for label, raw in (("NUL", "%00"), ("invalid UTF-8", "%C3%28"),
                           ("oversized", "x" * 5000), ("non-ASCII", "%C3%A9%C3%BF")):
            valid = label == "non-ASCII" and path in ANY_TEXT
            yield Case(f"{op} path {name} {label}", method, path, "" if valid else noun,
                       params={**ids, name: raw},
                       # valid: a key without a permission the path needs gets its 403
                       statuses=(200, 400, 401, 403, 404) if valid else (400, 401, 404),
                       modes=modes, auth=path != "/e/{key}")
    if (method, path) not in LENIENT_QUERY:
        yield Case(f"{op} unknown query parameter", method, path, "zz_unknown", params=ids,
                   query=b"zz_unknown=1", body=valid_body)
    else:  # a parameter it does not read is ignored, whatever it holds
        yield Case(f"{op} unknown query parameter ignored", method, path, "", params=ids,
                   query=b"zz_unknown=%00%C3%28", statuses=(200, 400, 404))
    for parameter in parameters:
        if parameter["in"] != "query":
            continue
        name = parameter["name"]
        values = {"NUL": b"a%00b", "invalid UTF-8": b"%C3%28", "oversized": b"9" * 5000}
        if _typed(parameter["schema"]):
            values["wrong type"] = b"not-a-number"
        for label, raw in values.items():
            yield Case(f"{op} query {name} {label}", method, path, name, params=ids,
                       query=name.encode() + b"=" + raw, statuses=(400, 404))
    if any(p["in"] == "header" and p["name"] == "x-inngest-env" for p in parameters):
        for label, raw in (("not UTF-8", b"\xff\xfe"), ("oversized", b"b" * 200),
                           ("slash", b"a/b"), ("non-ASCII with a slash", "é/x".encode())):
            yield Case(f"{op} header x-inngest-env {label}", method, path, "x-inngest-env",
                       params=ids, headers={"x-inngest-env": raw}, body=valid_body)
    if operation.get("security"):  # /e/{key} takes its key in the path (cases above)
        yield Case(f"{op} non-ASCII credential", method, path, "key", params=ids,
                   headers={"authorization": b"Bearer \xc3\xa9\xff\xfe-key"},
                   statuses=(401,), modes=("serve",), auth=False, body=valid_body)
        yield Case(f"{op} non-ASCII credential (dev ignores it)", method, path, "",
                   params=ids, headers={"authorization": b"Bearer \xc3\xa9\xff\xfe-key"},
                   statuses=(200, 400, 401, 404, 409, 422), modes=("dev",), auth=False)


def _raw_cases(method: str, path: str) -> Iterator[Case]:
    """A text body: not UTF-8, holding NUL, empty or over its limit."""
    op = f"{method} {path}"
    params = {"key": "bad-input-key"}
    for label, body, status in (("invalid UTF-8", b"a" + BAD_UTF8, 400), ("NUL", b"a\x00b", 400),
                                ("sealed-looking", b"\x1fts1 x", 400), ("empty", b"", 400),
                                ("oversized", b"a" * (256 * 1024 + 1), 413)):
        yield Case(f"{op} text body {label}", method, path, "key" if status == 400 else "limit",
                   params=params, body=body, statuses=(status,))


def _typed(schema: dict[str, Any]) -> bool:
    text = json.dumps(schema)
    return '"integer"' in text or '"date-time"' in text


DEV_ONLY = {"/dev"}  # 404 under serve, whatever is sent


def all_cases() -> list[Case]:
    cases: list[Case] = []
    for (method, path), operation in sorted(OPERATIONS.items()):
        cases.extend(_parameter_cases(method, path, operation))
        body = BODIES.get((method, path))
        if body is not None:
            # A path's ids are well-formed ones nothing has: the body is what is wrong.
            ids = {name: "01ARZ3NDEKTSV4RRFFQ69G5FAV" for name in re.findall(r"{(\w+)}", path)
                   if name != "key"}
            cases.extend(replace(c, params=ids) for c in _body_cases(method, path, body))
        if (method, path) in RAW_BODIES:
            cases.extend(_raw_cases(method, path))
    return [replace(c, modes=tuple(m for m in c.modes if m == "dev")) if c.path in DEV_ONLY
            else c for c in cases]


CASES = all_cases()


# -- the servers ---------------------------------------------------------------------------------

@dataclass
class Target:
    mode: str
    server: LiveServer
    keys: dict[str, str]  # the credential of each security scheme (none in dev)
    event_id: str  # an event stored before the cases, read after each

    @property
    def url(self) -> str:
        return self.server.url

    def auth(self, method: str, path: str) -> dict[str, str]:
        for requirement in OPERATIONS[(method, path)].get("security", []):
            for scheme in requirement:
                if scheme in self.keys:
                    return {"authorization": f"Bearer {self.keys[scheme]}"}
        return {}

    def event_key(self) -> str:
        return self.keys.get("eventKey", "any")


@pytest.fixture(scope="module", params=["dev-sqlite",
                                        pytest.param("serve-postgres", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "dev-sqlite":
        server = start_server(tmp, "--db", str(tmp / "bad.db"), "--no-discovery")
        try:
            yield _ready(Target("dev", server, {}, ""))
        finally:
            stop_server(server)
        return
    with fresh_schema() as url:
        keys = production_keys(tmp, db=url)
        trigger_key = tidings_cli(tmp, keys.env, "keys", "create", "--env", "production",
                                  "--kind", "trigger", "--db", url)
        server = start_server(tmp, "--db", url, "--env", "production", command="serve",
                              env=keys.env)
        try:
            yield _ready(Target("serve", server, {"apiKey": keys.api_key,
                                                  "eventKey": keys.event_key,
                                                  "triggerKey": trigger_key,
                                                  "signingKey": keys.signing_key}, ""))
        finally:
            stop_server(server)


def _ready(target: Target) -> Target:
    sent = httpx.post(f"{target.url}/e/{target.event_key()}", timeout=10,
                      json={"name": "good/one", "data": {"n": 1}})
    assert sent.status_code == 200, sent.text
    [target.event_id] = sent.json()["ids"]
    return target


def _read(target: Target, path: str) -> Any:
    reply = httpx.get(f"{target.url}{path}", headers=target.auth("GET", "/v1/events"),
                      timeout=10)
    assert reply.status_code == 200, f"{path}: {reply.status_code} {reply.text[:500]}"
    return reply.json()


def _snapshot(target: Target) -> dict[str, Any]:
    """What must not change: the events, apps and runs there are; reading them also proves the
    server healthy and its reads working."""
    assert httpx.get(f"{target.url}/health", timeout=10).status_code == 200
    headers = target.auth("GET", "/v1/events")
    one = httpx.get(f"{target.url}/v1/events/{target.event_id}", headers=headers, timeout=10)
    assert one.status_code == 200, one.text
    assert one.json()["data"]["data"] == {"n": 1}
    return {path: _listed(target, path) for path in ("/v1/events", "/v1/apps", "/v1/runs")}


def _listed(target: Target, path: str) -> Any:
    reply = httpx.get(f"{target.url}{path}", params={"limit": "1000"} if path != "/v1/apps"
                      else None, headers=target.auth("GET", path), timeout=10)
    assert reply.status_code == 200, f"{path}: {reply.status_code} {reply.text[:500]}"
    return [item.get("id", item.get("url")) for item in reply.json()["data"]]


def _send(target: Target, case: Case) -> httpx.Response:
    path = case.path
    for name, raw in case.params.items():
        path = path.replace("{" + name + "}", raw)
    if case.path == "/e/{key}" and "key" not in case.params:
        path = path.replace("{key}", quote(target.event_key()))
    headers: dict[str, Any] = {}
    if case.auth and target.mode == "serve":
        headers.update(target.auth(case.method, case.path))
    headers.update(case.headers)
    if case.body is not None:
        headers["content-type"] = "application/json"
    url = f"{target.url}{path}" + (f"?{case.query.decode()}" if case.query else "")
    with httpx.Client(timeout=60) as http:
        request = http.build_request(case.method, url, content=case.body, headers=headers)
        # httpx would normalise the percent-encoding of the path: send it as written.
        request.url = request.url.copy_with(raw_path=(path + (
            "?" + case.query.decode() if case.query else "")).encode())
        return http.send(request)


# -- the tests ------------------------------------------------------------------------------------

async def test_every_endpoint_is_covered(tmp_path: Path) -> None:
    core = await Core.start(make_settings(f"sqlite:///{tmp_path / 'routes.db'}", tmp_path))
    try:
        endpoints = set(create_app(core.settings, core).endpoints)
    finally:
        await core.close()
    taking_bodies = {(m, p) for m, p in endpoints if m in ("POST", "PUT", "PATCH")}

    # Every endpoint is in the document, so its parameters and headers get the cases above;
    # every endpoint that takes a body has a valid one here, so its fields get them too.
    assert endpoints == set(OPERATIONS)
    assert taking_bodies == set(BODIES) | BODYLESS | PROTOBUF_BODIES | RAW_BODIES
    assert {(c.method, c.path) for c in CASES} == endpoints


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(target: Target, case: Case) -> None:
    if target.mode not in case.modes:
        pytest.skip(f"not a case under {target.mode}")
    before = _snapshot(target)

    reply = _send(target, case)

    assert reply.status_code in case.statuses, (
        f"{case.id}: {reply.status_code} {reply.text[:1000]}")
    message = _message(reply) if reply.status_code >= 400 else ""
    assert case.names.lower() in message.lower(), f"{case.id}: {message[:1000]}"
    assert _snapshot(target) == before, case.id


def _message(reply: httpx.Response) -> str:
    body = reply.json()
    assert isinstance(body, dict), reply.text[:500]
    assert isinstance(body.get("error"), str) and body["error"], reply.text[:500]
    return " ".join([body["error"], *(f"{e['field']}: {e['message']}"
                                      for e in body.get("errors", []))])


def test_text_postgresql_cannot_hold_is_kept_inside_json_on_both_backends(
    target: Target,
) -> None:
    """``\\u0000`` inside ``data``, ``context`` or ``meta`` is kept (they are JSON columns),
    escaped as it came, read back the same: on both backends, by the same rule."""
    event = {"name": "nul/inside", "data": {"s": "a\u0000b", "a\u0000": [1, "\u0000"]},
             "context": {"c": "\u0000"}, "meta": {"sessions": {"s": "x\u0000y"}}}

    sent = httpx.post(f"{target.url}/e/{target.event_key()}", json=event, timeout=10)
    assert sent.status_code == 200, sent.text
    [event_id] = sent.json()["ids"]
    stored = _read(target, f"/v1/events/{event_id}")["data"]

    assert stored["data"] == event["data"]
    assert stored["context"] == event["context"]
    assert stored["meta"] == {"sessions": {"s": "x\u0000y"}}
    assert re.fullmatch("[0-9A-Z]{26}", event_id)


def test_an_event_id_that_looks_sealed_is_refused_and_the_lists_still_read(target: Target
                                                                          ) -> None:
    """A stored text starting with U+001F is read as sealed: such an id, stored in clear, made
    every read of its event fail (``GET /v1/events`` and the dashboard's home page gave 500)."""
    sent = httpx.post(f"{target.url}/e/{target.event_key()}", timeout=10,
                      json={"name": "sealed/looking", "data": {}, "id": "\u001fts1 abc"})

    assert sent.status_code == 400, sent.text
    assert "id" in _message(sent) and "U+001F" in _message(sent)
    assert _read(target, "/v1/events?name=sealed/looking")["data"] == []
