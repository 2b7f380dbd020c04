"""The OpenAPI document of the JSON endpoints, served at ``/openapi.json``.

``tests/acceptance/test_schemathesis.py`` fuzzes the server against it, so every answer the
server can give (status, headers, body) is written down here.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from tidings.events.parse import TS_MAX, TS_MIN
from tidings.keys import MAX_BRANCH_CHARS
from tidings.runs.model import STATUSES
from tidings.runs.store import REPLAYABLE
from tidings.settings import Limits

LIMITS = Limits()
ULID_PATTERN = "^[0-9A-HJKMNP-TV-Z]{26}$"
MAX_MILLIS = (1 << 48) - 1


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


JSON_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}
NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}
NULLABLE_TIME: dict[str, Any] = {"type": ["string", "null"], "format": "date-time"}
EVENT_TIME: dict[str, Any] = {"oneOf": [
    {"type": "integer", "minimum": TS_MIN, "maximum": TS_MAX - 1},
    {"type": "string", "format": "date-time"},
    {"type": "null"},
]}
# Every optional field of an incoming event may also be null, which means "not given".
MAYBE_OBJECT: dict[str, Any] = {"type": ["object", "null"], "additionalProperties": True}

EVENT_IN: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": LIMITS.max_name_chars,
                 "description": "Event name; the prefixes inngest/ and tidings/ are reserved."},
        "data": {**MAYBE_OBJECT, "description": "The payload (Inngest name)."},
        "payload": {**MAYBE_OBJECT, "description": "The payload (Trigger.dev name); give it or "
                    "data, not two different values."},
        "user": {**MAYBE_OBJECT, "description": "Encrypted at rest; external_id identifies the "
                 "user for erasure."},
        "id": {"type": ["string", "null"], "maxLength": LIMITS.max_id_chars,
               "description": "Idempotency key: a second event with the same id in the dedup "
               "window is not stored again."},
        "ts": {"oneOf": [{"type": "integer", "minimum": TS_MIN, "maximum": TS_MAX - 1},
                         {"enum": [0, None]}],
               "description": "Milliseconds since the epoch; default (or 0) now."},
        "timestamp": {**EVENT_TIME, "description": "Same as ts (Trigger.dev name); give one "
                      "of them or the same moment in both."},
        "v": NULLABLE_STRING,
        "source": {"type": ["string", "null"], "minLength": 1,
                   "maxLength": LIMITS.max_name_chars, "default": "tidings"},
        "context": MAYBE_OBJECT,
        "account_id": NULLABLE_STRING,
        "deliver_at": {**EVENT_TIME, "description": "Deliver to functions at this time."},
        "deliver_after": {"type": ["integer", "null"], "minimum": 0,
                          "description": "Deliver after this many seconds (before 2100)."},
    },
}

EVENT_RECORD: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "name", "data", "user", "event_id", "idempotency_key", "ts", "timestamp",
                 "v", "source", "context", "account_id", "received_at", "deliver_at",
                 "delivered_at", "cancelled_at"],
    "properties": {
        "id": {"type": "string", "pattern": ULID_PATTERN, "description": "Internal ULID."},
        "name": {"type": "string"},
        "data": JSON_OBJECT,
        "user": {**JSON_OBJECT, "description": "Decrypted; {} when none or erased."},
        "event_id": {"type": "string", "description": "The sender's id, else the internal id."},
        "idempotency_key": NULLABLE_STRING,
        "ts": {"type": "integer"},
        "timestamp": {"type": "string", "format": "date-time"},
        "v": NULLABLE_STRING,
        "source": {"type": "string"},
        "context": {"type": ["object", "null"]},
        "account_id": NULLABLE_STRING,
        "received_at": {"type": "string", "format": "date-time"},
        "deliver_at": NULLABLE_TIME,
        "delivered_at": NULLABLE_TIME,
        "cancelled_at": NULLABLE_TIME,
    },
}

FIELD_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["index", "field", "message"],
    "properties": {
        "index": {"type": "integer", "minimum": 0, "description": "Position in the request."},
        "field": {"type": "string", "description": "Empty when the event as a whole is bad."},
        "message": {"type": "string"},
    },
}

ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error", "status"],
    "properties": {
        "error": {"type": "string"},
        "status": {"type": "integer"},
        "errors": {"type": "array", "items": _ref("FieldError"),
                   "description": "One entry per invalid field, when events failed validation."},
    },
}

INGEST_REPLY: dict[str, Any] = {
    "type": "object",
    "required": ["ids", "status"],
    "properties": {
        "ids": {"type": "array", "items": {"type": "string", "pattern": ULID_PATTERN},
                "description": "One per event, in order; empty when nothing was stored."},
        "status": {"type": "integer"},
        "error": {"type": "string"},
        "errors": {"type": "array", "items": _ref("FieldError")},
    },
}

EVENT_PAGE: dict[str, Any] = {
    "type": "object",
    "required": ["data", "cursor"],
    "properties": {
        "data": {"type": "array", "items": _ref("EventRecord")},
        "cursor": {"type": ["string", "null"],
                   "description": "Pass as cursor for the next (older) page; null at the end."},
    },
}

NULLABLE_ID: dict[str, Any] = {"type": ["string", "null"], "pattern": ULID_PATTERN}
ANY_JSON: dict[str, Any] = {"description": "Any JSON value, or null."}

RUN: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "function", "status", "attempt", "event_id", "created_at", "started_at",
                 "ended_at", "due_at", "output", "error", "parent_run_id", "rerun_of",
                 "replay_id"],
    "properties": {
        "id": {"type": "string", "pattern": ULID_PATTERN},
        "function": {"type": "string", "description": "The function's slug."},
        "status": {"enum": list(STATUSES)},
        "attempt": {"type": "integer", "minimum": 0,
                    "description": "Retries of the whole function so far."},
        "event_id": {"type": "string", "pattern": ULID_PATTERN,
                     "description": "The event that started the run."},
        "created_at": {"type": "string", "format": "date-time"},
        "started_at": NULLABLE_TIME,
        "ended_at": NULLABLE_TIME,
        "due_at": {**NULLABLE_TIME, "description": "When the run is called next, if queued."},
        "output": {**ANY_JSON, "description": "What the function returned (Completed)."},
        "error": {**ANY_JSON, "description": "Why it failed or was cancelled."},
        "parent_run_id": {**NULLABLE_ID, "description": "The run that invoked this one."},
        "rerun_of": {**NULLABLE_ID, "description": "The run this one reruns."},
        "replay_id": {**NULLABLE_ID, "description": "The replay that started it."},
    },
}

STEP: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "name", "status", "attempts", "started_at", "ended_at", "duration_ms",
                 "output"],
    "properties": {
        "id": {"type": "string", "description": "The step's hashed id."},
        "name": {"type": "string"},
        "status": {"enum": ["completed", "failed", "errored"],
                   "description": "errored: failed an attempt and will be retried."},
        "attempts": {"type": "integer", "minimum": 0, "description": "Failed attempts."},
        "started_at": NULLABLE_TIME,
        "ended_at": NULLABLE_TIME,
        "duration_ms": {"type": ["integer", "null"]},
        "output": {**ANY_JSON, "description": 'The memoized result: {"data": ...} of a step, '
                   '{"error": ...} of a failure, the event a wait received.'},
    },
}

PAUSE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["step", "name", "kind", "event", "condition", "invoked_run_id", "until"],
    "properties": {
        "step": {"type": "string"},
        "name": {"type": "string"},
        "kind": {"enum": ["sleep", "wait", "invoke"]},
        "event": {**NULLABLE_STRING, "description": "The event name a wait is for."},
        "condition": {**NULLABLE_STRING, "description": "The wait's condition."},
        "invoked_run_id": {**NULLABLE_ID, "description": "The run an invoke waits for."},
        "until": {"type": "string", "format": "date-time",
                  "description": "When the sleep ends or the wait times out."},
    },
}

WAITING: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["reason", "key", "since", "until"],
    "properties": {
        "reason": {"enum": ["concurrency_limited", "throttled", "debounced", "batching"]},
        "key": {"type": "string", "description": "The flow-control key's value."},
        "since": NULLABLE_TIME,
        "until": {**NULLABLE_TIME, "description": "When it looks again or starts."},
        "size": {"type": "integer", "description": "Events in the batch or debounce so far."},
    },
}

RUN_DETAIL: dict[str, Any] = {
    **RUN,
    "required": [*RUN["required"], "steps", "pauses", "event", "waiting"],
    "properties": {
        **RUN["properties"],
        "waiting": {"oneOf": [WAITING, {"type": "null"}],
                    "description": "Why flow control holds the run back, if it does."},
        "steps": {"type": "array", "items": _ref("Step"),
                  "description": "The step timeline, in the order the steps ended."},
        "pauses": {"type": "array", "items": _ref("Pause"),
                   "description": "What the run is sleeping or waiting for."},
        "event": {"oneOf": [_ref("EventRecord"), {"type": "null"}],
                  "description": "The event that started the run, with user decrypted."},
    },
}

RUN_PAGE: dict[str, Any] = {
    "type": "object",
    "required": ["data", "cursor"],
    "properties": {
        "data": {"type": "array", "items": _ref("Run")},
        "cursor": {"type": ["string", "null"],
                   "description": "Pass as cursor for the next (older) page; null at the end."},
    },
}

TIME_IN: dict[str, Any] = {"anyOf": [
    {"type": "integer", "minimum": 0, "maximum": MAX_MILLIS},
    {"type": "string", "format": "date-time"},
]}

REPLAY_IN: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["function", "since", "until", "statuses"],
    "properties": {
        "function": {"type": "string", "minLength": 1},
        "since": {**TIME_IN, "description": "Runs created at or after this time."},
        "until": {**TIME_IN, "description": "Runs created before this time (after since)."},
        "statuses": {"type": "array", "minItems": 1, "items": {"enum": list(REPLAYABLE)}},
    },
}

REPLAY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "function", "since", "until", "statuses", "total", "created", "done",
                 "created_at"],
    "properties": {
        "id": {"type": "string", "pattern": ULID_PATTERN},
        "function": {"type": "string"},
        "since": {"type": "string", "format": "date-time"},
        "until": {"type": "string", "format": "date-time"},
        "statuses": {"type": "array", "items": {"enum": list(REPLAYABLE)}},
        "total": {"type": "integer", "minimum": 0,
                  "description": "Runs that matched when the replay started."},
        "created": {"type": "integer", "minimum": 0, "description": "Reruns created so far."},
        "done": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time"},
    },
}

EVENT_DETAIL: dict[str, Any] = {
    **EVENT_RECORD,
    "required": [*EVENT_RECORD["required"], "skipped"],
    "properties": {
        **EVENT_RECORD["properties"],
        "skipped": {"type": "array", "description": "Functions that started no run for this "
                    "event because of their flow control.", "items": {
                        "type": "object", "additionalProperties": False,
                        "required": ["function", "reason", "at"],
                        "properties": {
                            "function": {"type": "string"},
                            "reason": {"enum": ["rate_limited", "idempotency", "singleton"]},
                            "at": {"type": "string", "format": "date-time"}}}},
    },
}

CANCELLATIONS_IN: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["function", "since", "until"],
    "properties": {
        "function": {"type": "string", "minLength": 1},
        "since": {**TIME_IN, "description": "Runs created at or after this time."},
        "until": {**TIME_IN, "description": "Runs created before this time (after since)."},
    },
}

CANCELLATIONS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["function", "since", "until", "cancelled"],
    "properties": {
        "function": {"type": "string"},
        "since": {"type": "string", "format": "date-time"},
        "until": {"type": "string", "format": "date-time"},
        "cancelled": {"type": "integer", "minimum": 0},
    },
}

SCHEMAS: dict[str, Any] = {
    "EventDetail": EVENT_DETAIL,
    "CancellationsIn": CANCELLATIONS_IN,
    "Cancellations": CANCELLATIONS,
    "EventIn": EVENT_IN,
    "EventRecord": EVENT_RECORD,
    "FieldError": FIELD_ERROR,
    "Error": ERROR,
    "IngestReply": INGEST_REPLY,
    "EventPage": EVENT_PAGE,
    "Run": RUN,
    "RunDetail": RUN_DETAIL,
    "RunPage": RUN_PAGE,
    "Step": STEP,
    "Pause": PAUSE,
    "ReplayIn": REPLAY_IN,
    "Replay": REPLAY,
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _json(_ref("Error"), "Error") for code in codes}


def _header(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "schema": schema,
            "description": description}


ENV_HEADER = _header(
    "x-inngest-env",
    {"type": "string", "maxLength": MAX_BRANCH_CHARS, "pattern": "^[^/]*$"},
    "A branch environment of the key's environment, created on first use.",
)
SEED_HEADER = _header(
    "x-inngest-event-id-seed", {"type": "string"},
    "'<millis>,<base64 of 10 bytes>': retries with the same seed get the same ids (anything "
    "else is ignored).",
)
READ_HEADERS = [ENV_HEADER]
SEND_HEADERS = [ENV_HEADER, SEED_HEADER]

EVENTS_BODY: dict[str, Any] = {
    "required": True,
    "content": {"application/json": {"schema": {"oneOf": [
        _ref("EventIn"),
        {"type": "array", "items": _ref("EventIn"),
         "maxItems": LIMITS.max_events_per_request},
    ]}}},
}


def _time_query(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": TIME_IN}


def _in_path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1}}


def _data(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return _json({"type": "object", "required": ["data"], "properties": {"data": schema}},
                 description)


def _runs_paths(api_key: list[dict[str, list[str]]]) -> dict[str, Any]:
    one_run = [_in_path("run_id"), *READ_HEADERS]
    return {
        "/v1/runs": {"get": {
            "operationId": "listRuns",
            "summary": "List runs, newest first",
            "security": api_key,
            "parameters": [
                {"name": "function", "in": "query", "description": "A function's slug.",
                 "schema": {"type": "string", "pattern": "^[^\\x00]*$"}},
                {"name": "status", "in": "query", "style": "form", "explode": True,
                 "description": "Repeat, or separate with commas.",
                 "schema": {"type": "array", "items": {"enum": list(STATUSES)}}},
                _time_query("since", "Runs created at or after this time."),
                _time_query("until", "Runs created before this time."),
                {"name": "cursor", "in": "query",
                 "schema": {"type": "string", "pattern": ULID_PATTERN}},
                {"name": "limit", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}},
                *READ_HEADERS,
            ],
            "responses": {"200": _json(_ref("RunPage"), "A page of runs"),
                          **_errors(400, 401, 404)},
        }},
        "/v1/runs/{run_id}": {"get": {
            "operationId": "getRun",
            "summary": "One run: its steps, what it waits for, its event",
            "security": api_key,
            "parameters": one_run,
            "responses": {"200": _data(_ref("RunDetail"), "The run"),
                          **_errors(400, 401, 404)},
        }},
        "/v1/runs/{run_id}/cancel": {"post": {
            "operationId": "cancelRun",
            "summary": "Cancel a run that has not ended",
            "description": "Emits tidings/function.cancelled when a function listens for it.",
            "security": api_key,
            "parameters": one_run,
            "responses": {"200": _data(_ref("Run"), "Cancelled"),
                          **_errors(400, 401, 404, 409)},
        }},
        "/v1/runs/{run_id}/rerun": {"post": {
            "operationId": "rerunRun",
            "summary": "Start a new run of the same function with the same event",
            "security": api_key,
            "parameters": one_run,
            "responses": {"201": _data(_ref("Run"), "The new run"),
                          **_errors(400, 401, 404, 409)},
        }},
        "/v1/events/{event_id}/runs": {"get": {
            "operationId": "listEventRuns",
            "summary": "The runs an event started, newest first",
            "security": api_key,
            "parameters": [_in_path("event_id"), *READ_HEADERS],
            "responses": {"200": _data({"type": "array", "items": _ref("Run")}, "Its runs"),
                          **_errors(400, 401, 404)},
        }},
        "/v1/events/{event_id}/cancel": {"post": {
            "operationId": "cancelEvent",
            "summary": "Cancel the delivery of an event not delivered yet (a delayed one)",
            "security": api_key,
            "parameters": [_in_path("event_id"), *READ_HEADERS],
            "responses": {"200": _data(_ref("EventRecord"), "Cancelled: never delivered"),
                          **_errors(400, 401, 404, 409)},
        }},
        "/v1/replays": {"post": {
            "operationId": "startReplay",
            "summary": "Rerun every run of a function created in a range, in some statuses",
            "security": api_key,
            "parameters": READ_HEADERS,
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": _ref("ReplayIn")}}},
            "responses": {
                "201": _data(_ref("Replay"), "Done: every rerun is queued"),
                "202": _data(_ref("Replay"), "Started: the reruns are queued in batches"),
                **_errors(400, 401, 404, 413, 415),
            },
        }},
        "/v1/cancellations": {"post": {
            "operationId": "cancelRuns",
            "summary": "Cancel every run of a function created in a range that has not ended",
            "security": api_key,
            "parameters": READ_HEADERS,
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("CancellationsIn")}}},
            "responses": {
                "200": _data(_ref("Cancellations"), "Cancelled"),
                **_errors(400, 401, 404, 413, 415),
            },
        }},
        "/v1/replays/{replay_id}": {"get": {
            "operationId": "getReplay",
            "summary": "A replay's progress",
            "security": api_key,
            "parameters": [_in_path("replay_id"), *READ_HEADERS],
            "responses": {"200": _data(_ref("Replay"), "The replay"),
                          **_errors(400, 401, 404)},
        }},
    }


@cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once)."""
    ingest_errors = {str(c): _json(_ref("IngestReply"), "Rejected; nothing stored")
                     for c in (400, 401, 413, 415)}
    api_key: list[dict[str, list[str]]] = [{"apiKey": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tidings", "version": "1",
                 "description": "Events in, durable functions out. Every answer is JSON."},
        "paths": {
            "/e/{key}": {"post": {
                "operationId": "ingest",
                "summary": "Send events (Inngest-compatible Event API)",
                "description": "Answers only after the events are committed; a request with "
                               "one bad event stores nothing.",
                "parameters": [
                    {"name": "key", "in": "path", "required": True,
                     "schema": {"type": "string", "minLength": 1},
                     "description": "Event key (any in dev)."},
                    *SEND_HEADERS,
                ],
                "requestBody": EVENTS_BODY,
                "responses": {"200": _json(_ref("IngestReply"), "Stored"), **ingest_errors},
            }},
            "/v1/events": {
                "get": {
                    "operationId": "listEvents",
                    "summary": "List events, newest first",
                    "security": api_key,
                    "parameters": [
                        {"name": "name", "in": "query",
                         "schema": {"type": "string", "pattern": "^[^\\x00]*$"}},
                        _time_query("since", "Events at or after this time."),
                        _time_query("until", "Events before this time."),
                        {"name": "cursor", "in": "query",
                         "schema": {"type": "string", "pattern": ULID_PATTERN}},
                        {"name": "limit", "in": "query",
                         "schema": {"type": "integer", "minimum": 1, "maximum": 1000,
                                    "default": 50}},
                        *READ_HEADERS,
                    ],
                    "responses": {"200": _json(_ref("EventPage"), "A page of events"),
                                  **_errors(400, 401)},
                },
                "post": {
                    "operationId": "sendEvents",
                    "summary": "Send events and get the stored records back",
                    "security": [{"eventKey": []}],
                    "parameters": SEND_HEADERS,
                    "requestBody": EVENTS_BODY,
                    "responses": {
                        "200": _json({"type": "object", "required": ["data"], "properties": {
                            "data": {"type": "array", "items": _ref("EventRecord")}}}, "Stored"),
                        **_errors(400, 401, 409, 413, 415),
                    },
                },
            },
            "/v1/events/{event_id}": {"get": {
                "operationId": "getEvent",
                "summary": "One event, with user decrypted",
                "security": api_key,
                "parameters": [
                    {"name": "event_id", "in": "path", "required": True,
                     "schema": {"type": "string", "minLength": 1}},
                    *READ_HEADERS,
                ],
                "responses": {"200": _json({"type": "object", "required": ["data"],
                                            "properties": {"data": _ref("EventDetail")}},
                                           "The event"),
                              **_errors(400, 401, 404)},
            }},
            **_runs_paths(api_key),
            "/health": {"get": {
                "operationId": "health",
                "summary": "Health",
                "responses": {"200": _json({
                    "type": "object", "required": ["status", "message"],
                    "properties": {"status": {"const": 200}, "message": {"type": "string"}},
                }, "OK")},
            }},
            "/openapi.json": {"get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": _json({"type": "object", "required": ["openapi", "paths"]},
                                           "OpenAPI 3.1")},
            }},
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer",
                           "description": "An API key (tda_...); tidings dev needs none."},
                "eventKey": {"type": "http", "scheme": "bearer",
                             "description": "An event key (tdk_...); any in tidings dev."},
            },
        },
    }
