"""The Trigger.dev v2 endpoints in the OpenAPI document: what ``@trigger.dev/sdk`` 2.x calls,
answered in the shapes its zod schemas parse (``triggerdev/wire.py``)."""

from __future__ import annotations

from typing import Any

from tidings.server.openapi.events import EVENT_TIME, MAYBE_OBJECT, NO_NUL
from tidings.server.openapi.parts import (
    ANY_JSON,
    JSON_OBJECT,
    LIMITS,
    NULLABLE_TIME,
    ApiSecurity,
    errors,
    in_path,
    json_body,
    ref,
)
from tidings.triggerdev.wire import RUN_STATUS, TASK_STATUS

TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
RUN_STATUSES: dict[str, Any] = {"enum": sorted(set(RUN_STATUS.values()))}

V2_EVENT_IN: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": LIMITS.max_name_chars,
                 "pattern": NO_NUL},
        "payload": {**MAYBE_OBJECT, "description": "The event's data ({} when missing)."},
        "context": {**MAYBE_OBJECT, "description": "Given to runs as context.event.context."},
        "id": {"type": ["string", "null"], "minLength": 1, "maxLength": LIMITS.max_id_chars,
               "pattern": NO_NUL, "description": "Unique in the environment for good: sending "
               "it again returns the event (a delivered or cancelled one unchanged, an "
               "undelivered one rescheduled with the new payload, context and time)."},
        "timestamp": {**EVENT_TIME, "description": "Default now."},
        "source": {"type": ["string", "null"], "minLength": 1,
                   "maxLength": LIMITS.max_name_chars, "pattern": NO_NUL,
                   "default": "tidings"},
        "payloadType": {"enum": ["JSON", None]},
    },
}

V2_OPTIONS: dict[str, Any] = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "properties": {
        "deliverAt": {**EVENT_TIME, "description": "Deliver at this time (wins over "
                      "deliverAfter)."},
        "deliverAfter": {"type": ["integer", "null"], "minimum": 0,
                         "description": "Deliver after this many seconds."},
        "accountId": {"type": ["string", "null"], "pattern": NO_NUL},
    },
}

EVENT_LOG: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "name", "payload", "context", "timestamp", "deliverAt", "deliveredAt",
                 "cancelledAt"],
    "properties": {
        "id": {"type": "string", "description": "The id the sender gave, else Tidings' own."},
        "name": {"type": "string"},
        "payload": JSON_OBJECT,
        "context": {"type": ["object", "null"]},
        "timestamp": TIME,
        "deliverAt": NULLABLE_TIME,
        "deliveredAt": {**NULLABLE_TIME, "description": "Empty until delivered."},
        "cancelledAt": NULLABLE_TIME,
    },
}

V2_EVENT: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "name", "createdAt", "updatedAt", "runs"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "createdAt": TIME,
        "updatedAt": TIME,
        "runs": {"type": "array", "items": {
            "type": "object", "additionalProperties": False,
            "required": ["id", "status", "startedAt", "completedAt"],
            "properties": {"id": {"type": "string"}, "status": RUN_STATUSES,
                           "startedAt": NULLABLE_TIME, "completedAt": NULLABLE_TIME}}},
    },
}

CANCELLED_RUNS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["cancelledRunIds", "failedToCancelRunIds"],
    "properties": {"cancelledRunIds": {"type": "array", "items": {"type": "string"}},
                   "failedToCancelRunIds": {"type": "array", "items": {"type": "string"},
                                            "description": "Runs that had already ended."}},
}

V2_RUN: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "status", "startedAt", "updatedAt", "completedAt", "output", "tasks",
                 "statuses"],
    "properties": {
        "id": {"type": "string"},
        "status": RUN_STATUSES,
        "startedAt": NULLABLE_TIME,
        "updatedAt": NULLABLE_TIME,
        "completedAt": NULLABLE_TIME,
        "output": {**ANY_JSON, "description": "What the run returned, once it succeeded."},
        "tasks": {"type": "array", "description": "The run's steps.", "items": {
            "type": "object", "additionalProperties": False,
            "required": ["id", "displayKey", "status", "name", "icon", "startedAt",
                         "completedAt"],
            "properties": {"id": {"type": "string"}, "displayKey": {"type": ["string", "null"]},
                           "status": {"enum": sorted({*TASK_STATUS.values(), "RUNNING"})},
                           "name": {"type": "string"}, "icon": {"type": ["string", "null"]},
                           "startedAt": NULLABLE_TIME, "completedAt": NULLABLE_TIME}}},
        "statuses": {"type": "array", "items": JSON_OBJECT},
    },
}

V2_RUN_STATUSES: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["run", "statuses"],
    "properties": {
        "run": {"type": "object", "additionalProperties": False,
                "required": ["id", "status", "output"],
                "properties": {"id": {"type": "string"}, "status": RUN_STATUSES,
                               "output": ANY_JSON}},
        "statuses": {"type": "array", "items": JSON_OBJECT},
    },
}

# What getRun may send (``GetRunOptionsSchema``).
RUN_QUERY: dict[str, dict[str, Any]] = {
    "subtasks": {"type": "boolean"}, "taskdetails": {"type": "boolean"},
    "take": {"type": "integer", "minimum": 1, "maximum": 50},
    "cursor": {"type": "string", "maxLength": 100},
}

SCHEMAS: dict[str, Any] = {
    "V2EventIn": V2_EVENT_IN,
    "V2EventLog": EVENT_LOG,
    "V2Event": V2_EVENT,
    "V2CancelledRuns": CANCELLED_RUNS,
    "V2Run": V2_RUN,
    "V2RunStatuses": V2_RUN_STATUSES,
}

EVENT_ID: dict[str, Any] = {
    "name": "event_id", "in": "path", "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": LIMITS.max_id_chars},
    "description": "The id the sender gave the event, or Tidings' own.",
}


def _body(events: bool) -> dict[str, Any]:
    field = "events" if events else "event"
    schema = ({"type": "array", "items": ref("V2EventIn"),
               "maxItems": LIMITS.max_events_per_request} if events else ref("V2EventIn"))
    return {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": False, "required": [field],
        "properties": {field: schema, "options": V2_OPTIONS}}}}}


def paths(trigger_key: ApiSecurity) -> dict[str, Any]:
    """The operations the v2 client calls."""
    def op(operation: str, summary: str, answer: dict[str, Any], *codes: int,
           **more: Any) -> dict[str, Any]:
        return {"operationId": operation, "summary": summary, "security": trigger_key,
                "responses": {"200": json_body(answer, "Done"), **errors(*codes)}, **more}

    one_event = {"parameters": [EVENT_ID]}
    one_run = {"parameters": [in_path("run_id")]}
    return {
        "/api/v1/events": {"post": op(
            "v2SendEvent", "Send an event (Trigger.dev v2 sendEvent)", ref("V2EventLog"),
            400, 401, 413, requestBody=_body(False))},
        "/api/v1/events/bulk": {"post": op(
            "v2SendEvents", "Send events (Trigger.dev v2 sendEvents); every event is checked "
            "before any is stored",
            {"type": "array", "items": ref("V2EventLog")}, 400, 401, 413,
            requestBody=_body(True))},
        "/api/v1/events/{event_id}/cancel": {"post": op(
            "v2CancelEvent", "Stop an event's delivery (a delivered one is left as it is)",
            ref("V2EventLog"), 400, 401, 404, **one_event)},
        "/api/v1/events/{event_id}/cancel-runs": {"post": op(
            "v2CancelRunsForEvent", "Cancel the runs an event started", ref("V2CancelledRuns"),
            400, 401, 404, **one_event)},
        "/api/v2/events/{event_id}": {"get": op(
            "v2GetEvent", "An event and the runs it started", ref("V2Event"), 400, 401, 404,
            **one_event)},
        "/api/v2/runs/{run_id}": {"get": op(
            "v2GetRun", "A run and its tasks", ref("V2Run"), 400, 401, 404, parameters=[
                in_path("run_id"),
                *({"name": name, "in": "query", "schema": schema,
                   "description": "Checked and ignored: every task is returned at once."}
                  for name, schema in RUN_QUERY.items())])},
        "/api/v2/runs/{run_id}/statuses": {"get": op(
            "v2GetRunStatuses", "A run's status", ref("V2RunStatuses"), 400, 401, 404,
            **one_run)},
        "/api/v1/runs/{run_id}/cancel": {"post": op(
            "v2CancelRun", "Cancel a run (one that ended is returned as it is)", ref("V2Run"),
            400, 401, 404, **one_run)},
    }
