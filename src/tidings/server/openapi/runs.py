"""The runs, replays and delivery levers in the OpenAPI document."""

from __future__ import annotations

from typing import Any

from tidings.runs.admin import REPLAYABLE, TIMES
from tidings.runs.model import STATUSES, STEP_KINDS
from tidings.server.openapi.parts import (
    ANY_JSON,
    CURSOR_QUERY,
    NULLABLE_ID,
    NULLABLE_STRING,
    NULLABLE_TIME,
    READ_HEADERS,
    TIME_IN,
    ULID_PATTERN,
    ApiSecurity,
    data,
    errors,
    in_path,
    json_body,
    page,
    ref,
    time_query,
)

RUN: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "function", "status", "attempt", "event_id", "created_at", "started_at",
                 "ended_at", "due_at", "output", "error", "parent_run_id", "parent_step",
                 "rerun_of", "replay_id"],
    "properties": {
        "id": {"type": "string", "pattern": ULID_PATTERN},
        "function": {"type": "string", "description": "The function's slug."},
        "status": {"enum": list(STATUSES)},
        "attempt": {"type": "integer", "minimum": 0,
                    "description": "Function-level failures since the run last moved on (a "
                                   "step's own retries are its attempts)."},
        "event_id": {"type": "string", "pattern": ULID_PATTERN,
                     "description": "The event that started the run."},
        "created_at": {"type": "string", "format": "date-time"},
        "started_at": NULLABLE_TIME,
        "ended_at": NULLABLE_TIME,
        "due_at": {**NULLABLE_TIME, "description": "When the run is called next, if queued."},
        "output": {**ANY_JSON, "description": "What the function returned (Completed)."},
        "error": {**ANY_JSON, "description": "Why it failed or was cancelled."},
        "parent_run_id": {**NULLABLE_ID, "description": "The run that invoked this one."},
        "parent_step": {**NULLABLE_STRING,
                        "description": "The step of the parent run that invoked this one."},
        "rerun_of": {**NULLABLE_ID, "description": "The run this one reruns."},
        "replay_id": {**NULLABLE_ID, "description": "The replay that started it."},
    },
}

STEP: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "name", "kind", "invoked_run_id", "status", "attempts", "started_at",
                 "ended_at", "duration_ms", "output", "reused_from", "failed_attempts"],
    "properties": {
        "id": {"type": "string", "description": "The step's hashed id."},
        "name": {"type": "string"},
        "kind": {"enum": list(STEP_KINDS), "description": "What the step was."},
        "invoked_run_id": {**NULLABLE_ID, "description": "The run an invoke step started."},
        "status": {"enum": ["completed", "failed", "errored"],
                   "description": "errored: failed an attempt and will be retried."},
        "attempts": {"type": "integer", "minimum": 0,
                     "description": "Failed attempts of this step."},
        "started_at": NULLABLE_TIME,
        "ended_at": NULLABLE_TIME,
        "duration_ms": {"type": ["integer", "null"]},
        "output": {**ANY_JSON, "description": 'The memoized result: {"data": ...} of a step, '
                   '{"error": ...} of a failure, the event a wait received.'},
        "reused_from": {**NULLABLE_ID, "description": "The run whose recorded result this "
                        "step took over (a rerun from a later step): its code did not run "
                        "in this run, and its times are that run's."},
        "failed_attempts": {
            "type": "array", "description": "Every failed attempt, oldest first (the last one "
            "is the step's result when it failed for good).",
            "items": {"type": "object", "additionalProperties": False,
                      "required": ["attempt", "started_at", "ended_at", "error"],
                      "properties": {"attempt": {"type": "integer", "minimum": 1},
                                     "started_at": NULLABLE_TIME, "ended_at": NULLABLE_TIME,
                                     "error": ANY_JSON}}},
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
        "steps": {"type": "array", "items": ref("Step"),
                  "description": "The step timeline, in the order the steps ended."},
        "pauses": {"type": "array", "items": ref("Pause"),
                   "description": "What the run is sleeping or waiting for."},
        "event": {"oneOf": [ref("EventRecord"), {"type": "null"}],
                  "description": "The event that started the run, with user decrypted."},
    },
}

RUN_PAGE = page("Run")

UNTIL = ("Runs created before this time, which must be after since (a 400 otherwise: JSON "
         "Schema cannot compare two fields).")
REPLAY_IN: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["function", "since", "until", "statuses"],
    "properties": {
        "function": {"type": "string", "minLength": 1},
        "since": {**TIME_IN, "description": "Runs created at or after this time."},
        "until": {**TIME_IN, "description": UNTIL},
        "statuses": {"type": "array", "minItems": 1, "items": {"enum": list(REPLAYABLE)}},
        "dry_run": {"type": "boolean", "default": False,
                    "description": "true: answer how many runs it would touch "
                                   "(`matched`) and touch none."},
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

CANCELLATIONS_IN: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["function", "since", "until"],
    "properties": {
        "function": {"type": "string", "minLength": 1},
        "since": {**TIME_IN, "description": "Runs created at or after this time."},
        "until": {**TIME_IN, "description": UNTIL},
        "dry_run": {"type": "boolean", "default": False,
                    "description": "true: answer how many runs it would touch "
                                   "(`matched`) and touch none."},
    },
}


def _answer(count: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["function", "since", "until", *(extra or {}), count],
        "properties": {
            "function": {"type": "string"},
            "since": {"type": "string", "format": "date-time"},
            "until": {"type": "string", "format": "date-time"},
            **(extra or {}),
            count: {"type": "integer", "minimum": 0},
        },
    }


CANCELLATIONS = _answer("cancelled")
PREVIEW: dict[str, Any] = {"oneOf": [
    _answer("matched"),
    _answer("matched", {"statuses": {"type": "array", "items": {"enum": list(REPLAYABLE)}}}),
], "description": "A dry run: how many runs the request would touch."}

SCHEMAS: dict[str, Any] = {
    "CancellationsIn": CANCELLATIONS_IN,
    "Cancellations": CANCELLATIONS,
    "Preview": PREVIEW,
    "Run": RUN,
    "RunDetail": RUN_DETAIL,
    "RunPage": RUN_PAGE,
    "Step": STEP,
    "Pause": PAUSE,
    "ReplayIn": REPLAY_IN,
    "Replay": REPLAY,
}


def paths(api_key: ApiSecurity) -> dict[str, Any]:
    """The operations on runs and replays."""
    one_run = [in_path("run_id"), *READ_HEADERS]
    return {
        "/v1/runs": {"get": {
            "operationId": "listRuns",
            "summary": "List runs, newest first",
            "security": api_key,
            "parameters": [
                {"name": "function", "in": "query", "description": "A function's slug.",
                 "schema": {"type": "string", "pattern": "^[^\\x00]*$"}},
                {"name": "app", "in": "query",
                 "description": "An app's id: the runs of its functions (404 for an app "
                                "without functions).",
                 "schema": {"type": "string", "pattern": "^[^\\x00]*$"}},
                {"name": "event_id", "in": "query",
                 "description": "The event that started the runs (the first of a batch).",
                 "schema": {"type": "string", "pattern": "^(" + ULID_PATTERN.strip("^$")
                            + ")?$"}},
                {"name": "status", "in": "query", "style": "form", "explode": True,
                 "description": "Repeat, or separate with commas.",
                 "schema": {"type": "array", "items": {"enum": list(STATUSES)}}},
                {"name": "time", "in": "query",
                 "description": "The time since and until apply to: when the run was queued "
                                "(created; the default), started or ended. A filter on status, "
                                "app, event or started/ended time looks at a bounded number of "
                                "runs per page: a page may hold fewer runs than the limit, "
                                "with a cursor to look further.",
                 "schema": {"enum": list(TIMES)}},
                time_query("since", "Runs queued (or started, ended) at or after this time."),
                time_query("until", "Runs queued (or started, ended) before this time; after "
                                    "since (a 400 otherwise)."),
                CURSOR_QUERY,
                {"name": "limit", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}},
                *READ_HEADERS,
            ],
            "responses": {"200": json_body(ref("RunPage"), "A page of runs"),
                          **errors(400, 401, 404)},
        }},
        "/v1/runs/{run_id}": {"get": {
            "operationId": "getRun",
            "summary": "One run: its steps, what it waits for, its event",
            "security": api_key,
            "parameters": one_run,
            "responses": {"200": data(ref("RunDetail"), "The run"),
                          **errors(400, 401, 404)},
        }},
        "/v1/runs/{run_id}/cancel": {"post": {
            "operationId": "cancelRun",
            "summary": "Cancel a run that has not ended",
            "description": "Emits tidings/function.cancelled when a function listens for it.",
            "security": api_key,
            "parameters": one_run,
            "responses": {"200": data(ref("Run"), "Cancelled"),
                          **errors(400, 401, 404, 409)},
        }},
        "/v1/runs/{run_id}/rerun": {"post": {
            "operationId": "rerunRun",
            "summary": "Start a new run of the same function with the same event",
            "description": "With from_step (a step's id), the new run starts with the "
                           "results the run recorded before that step, and runs that step "
                           "and the ones after it again (404 for a step it did not record; "
                           "409 for a Trigger.dev job).",
            "security": api_key,
            "parameters": one_run,
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False,
                "properties": {"from_step": {"type": ["string", "null"], "minLength": 1,
                                             "pattern": "^[^\\x00]*$"}}}}}},
            "responses": {"201": data(ref("Run"), "The new run"),
                          **errors(400, 401, 404, 409, 413, 415)},
        }},
        "/v1/events/{event_id}/runs": {"get": {
            "operationId": "listEventRuns",
            "summary": "The runs an event started, newest first",
            "security": api_key,
            "parameters": [in_path("event_id"), *READ_HEADERS],
            "responses": {"200": data({"type": "array", "items": ref("Run")}, "Its runs"),
                          **errors(400, 401, 404)},
        }},
        "/v1/events/{event_id}/cancel": {"post": {
            "operationId": "cancelEvent",
            "summary": "Cancel the delivery of an event not delivered yet (a delayed one)",
            "security": api_key,
            "parameters": [in_path("event_id"), *READ_HEADERS],
            "responses": {"200": data(ref("EventRecord"), "Cancelled: never delivered"),
                          **errors(400, 401, 404, 409)},
        }},
        "/v1/cancellations": {"post": {
            "operationId": "cancelRuns",
            "summary": "Cancel every run of a function created in a range that has not ended",
            "security": api_key,
            "parameters": READ_HEADERS,
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": ref("CancellationsIn")}}},
            "responses": {
                "200": data({"oneOf": [ref("Cancellations"), ref("Preview")]},
                            "Cancelled (or, with dry_run, how many would be)"),
                **errors(400, 401, 404, 413, 415),
            },
        }},
        "/v1/replays": {"post": {
            "operationId": "startReplay",
            "summary": "Rerun every run of a function created in a range, in some statuses",
            "security": api_key,
            "parameters": READ_HEADERS,
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": ref("ReplayIn")}}},
            "responses": {
                "200": data(ref("Preview"), "dry_run: how many runs it would rerun"),
                "201": data(ref("Replay"), "Done: every rerun is queued"),
                "202": data(ref("Replay"), "Started: the reruns are queued in batches"),
                **errors(400, 401, 404, 413, 415),
            },
        }},
        "/v1/replays/{replay_id}": {"get": {
            "operationId": "getReplay",
            "summary": "A replay's progress",
            "security": api_key,
            "parameters": [in_path("replay_id"), *READ_HEADERS],
            "responses": {"200": data(ref("Replay"), "The replay"),
                          **errors(400, 401, 404)},
        }},
    }


