"""The Trigger.dev v2 endpoints in the OpenAPI document: what ``@trigger.dev/sdk`` 2.x calls,
answered in the shapes its zod schemas parse (``triggerdev/wire.py``)."""

from __future__ import annotations

from typing import Any

from tidings.server.openapi.events import EVENT_TIME, MAYBE_OBJECT, NO_NUL, SENT_ID
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
               "pattern": SENT_ID, "description": "Unique in the environment for good: sending "
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

STATUS_VALUE: dict[str, Any] = {
    "type": "object",
    "properties": {"label": {"type": "string"}, "state": {"enum": ["loading", "success",
                                                                  "failure"]},
                   "data": JSON_OBJECT},
}
STATUS_RECORD: dict[str, Any] = {
    "type": "object",
    "required": ["key", "label", "history"],
    "description": "JobRunStatusRecordSchema: a status's value, and its earlier values",
    "properties": {**STATUS_VALUE["properties"], "key": {"type": "string"},
                   "history": {"type": "array", "items": STATUS_VALUE}},
}
RUN_SUMMARY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "status", "startedAt", "updatedAt", "completedAt"],
    "properties": {"id": {"type": "string"}, "status": RUN_STATUSES,
                   "startedAt": NULLABLE_TIME, "updatedAt": NULLABLE_TIME,
                   "completedAt": NULLABLE_TIME},
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
        "statuses": {"type": "array", "items": STATUS_RECORD},
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
        "statuses": {"type": "array", "items": STATUS_RECORD},
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


JOB_ID: dict[str, Any] = {"name": "job_id", "in": "path", "required": True,
                          "schema": {"type": "string", "minLength": 1, "maxLength": 512}}


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
        "/api/v1/jobs/{job_id}/runs": {"get": op(
            "v2GetRuns", "A Job's runs, newest first (getRuns)", {
                "type": "object", "additionalProperties": False, "required": ["runs"],
                "properties": {"runs": {"type": "array", "items": RUN_SUMMARY},
                               "nextCursor": {"type": "string",
                                              "description": "Where the next page starts"}}},
            400, 401, 404, 409, parameters=[
                JOB_ID,
                {"name": "take", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                           "maximum": 50, "default": 20}},
                {"name": "cursor", "in": "query", "schema": {"type": "string"}}])},
        "/api/v1/jobs/{job_id}/cancel-runs": {"post": op(
            "v2CancelRunsForJob", "Cancel every run of a Job that has not ended "
            "(cancelRunsForJob)", ref("V2CancelledRuns"), 400, 401, 404, 409,
            parameters=[JOB_ID])},
    }


# -- what a v2 app calls while its job executes ----------------------------------------------

TASK_STATUSES: dict[str, Any] = {"enum": ["PENDING", "WAITING", "RUNNING", "COMPLETED",
                                          "ERRORED", "CANCELED"]}
SERVER_TASK: dict[str, Any] = {
    "type": "object",
    "required": ["id", "name", "noop", "status", "idempotencyKey", "attempts"],
    "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "noop": {"type": "boolean"},
        "status": TASK_STATUSES, "idempotencyKey": {"type": "string"},
        "attempts": {"type": "integer", "minimum": 1},
        "startedAt": NULLABLE_TIME, "completedAt": NULLABLE_TIME, "delayUntil": NULLABLE_TIME,
        "params": ANY_JSON, "output": ANY_JSON, "error": {"type": ["string", "null"]},
        "parentId": {"type": ["string", "null"]}, "forceYield": {"type": ["boolean", "null"]},
        "callbackUrl": {"type": ["string", "null"],
                        "description": "Set while the task waits for a callback"},
    },
    "description": "ServerTaskSchema; CANCELED when the run was cancelled (the job stops).",
}
NO_NUL_TEXT: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 512,
                               "pattern": NO_NUL}
TASK_IN: dict[str, Any] = {
    "type": "object",
    "required": ["idempotencyKey"],
    "additionalProperties": True,
    "description": "RunTaskBodyOutputSchema; other fields the SDK sends (icon, properties, "
                   "style, retry, ...) are accepted and not kept. A task with an enabled "
                   "callback waits for it (io.waitForEvent, invokeAndWaitForCompletion; "
                   "io.waitForRequest is refused, 422); operation is refused (422).",
    "properties": {
        "idempotencyKey": NO_NUL_TEXT,
        "name": {**NO_NUL_TEXT, "type": ["string", "null"]},
        "displayKey": {**NO_NUL_TEXT, "type": ["string", "null"]},
        "parentId": {**NO_NUL_TEXT, "type": ["string", "null"]},
        "noop": {"type": "boolean"},
        "delayUntil": {"type": ["string", "null"], "format": "date-time"},
        "params": ANY_JSON,
        "callback": {"type": ["object", "null"], "properties": {
            "enabled": {"type": "boolean"},
            "timeoutInSeconds": {"type": "number", "exclusiveMinimum": 0,
                                 "maximum": 365 * 24 * 3600}}},
    },
}
STORE_ANSWER: dict[str, Any] = {
    "type": "object",
    "required": ["action", "key"],
    "properties": {"action": {"enum": ["GET", "SET", "DELETE"]}, "key": {"type": "string"},
                   "value": {"type": "string"}, "deleted": {"type": "boolean"}},
}
RUN_SCHEMAS: dict[str, Any] = {"V2ServerTask": SERVER_TASK, "V2TaskIn": TASK_IN,
                               "V2StoreAnswer": STORE_ANSWER}


def _json_in(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def run_paths(trigger_key: ApiSecurity) -> dict[str, Any]:
    """The operations a v2 app calls during an execution."""
    def op(operation: str, summary: str, answer: dict[str, Any], *codes: int,
           **more: Any) -> dict[str, Any]:
        return {"operationId": operation, "summary": summary, "security": trigger_key,
                "responses": {"200": json_body(answer, "Done"), **errors(*codes)}, **more}

    run = in_path("run_id")
    task = in_path("task_id")
    key = {"name": "key", "in": "path", "required": True,
           "schema": {"type": "string", "minLength": 1, "maxLength": 512},
           "description": "Any text without line breaks (the SDK namespaces keys: "
                          "job:<id>:..., run:<id>:...); a key with one is not found (404)."}
    version = {"name": "trigger-version", "in": "header", "required": False,
               "schema": {"type": "string"},
               "description": "2023-11-01: output is the task's output as JSON text."}
    return {
        "/api/v1/runs/{run_id}/tasks": {"post": op(
            "v2RunTask", "Start a task, or find it again by its idempotency key",
            ref("V2ServerTask"), 400, 401, 404, 413, 422, parameters=[run],
            requestBody=_json_in(ref("V2TaskIn")))},
        "/api/v1/runs/{run_id}/tasks/{task_id}/complete": {"post": op(
            "v2CompleteTask", "Complete a task with its output", ref("V2ServerTask"),
            400, 401, 404, 413, parameters=[run, task, version], requestBody=_json_in({
                "type": "object", "additionalProperties": True,
                "properties": {"output": ANY_JSON}}))},
        "/api/v1/runs/{run_id}/tasks/{task_id}/fail": {"post": op(
            "v2FailTask", "Fail a task", ref("V2ServerTask"), 400, 401, 404, 413,
            parameters=[run, task], requestBody=_json_in({
                "type": "object", "required": ["error"], "additionalProperties": True,
                "properties": {"error": {
                    "type": "object", "required": ["message"],
                    "properties": {"message": {"type": "string"}, "name": {"type": "string"},
                                   "stack": {"type": "string"}}}}}))},
        "/api/v1/runs/{run_id}/tasks/{task_id}/callback/{secret}": {"post": {
            "operationId": "v2TaskCallback",
            "summary": "Answer io.waitForRequest: its callback URL, POSTed to by anyone the "
                       "job gave it to (the secret is the credential); the JSON body is what "
                       "the task returns",
            "security": [],
            "parameters": [run, task, {
                "name": "secret", "in": "path", "required": True,
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{16,64}$"},
                "description": "The secret of the task's callback URL."}],
            "requestBody": _json_in({"type": "object", "additionalProperties": True}),
            "responses": {"200": json_body({"type": "object", "required": ["ok"],
                                            "properties": {"ok": {"const": True}}},
                                           "The task completes with the body"),
                          **errors(400, 404, 409, 413)}}},
        "/api/v1/store/{key}": {
            "get": op("v2StoreGet", "Read a value (value absent: none)", ref("V2StoreAnswer"),
                      400, 401, 404, parameters=[key]),
            "put": op("v2StoreSet", "Store a value", ref("V2StoreAnswer"), 400, 401, 404, 413,
                      parameters=[key], requestBody={"required": True, "content": {
                          "text/plain": {"schema": {"type": "string", "minLength": 1,
                                                    "maxLength": 256 * 1024}}}}),
            "delete": op("v2StoreDelete", "Delete a value", ref("V2StoreAnswer"), 400, 401,
                         404, parameters=[key]),
        },
        "/api/v1/jobs/{job_id}/invoke": {"post": op(
            "v2InvokeJob", "Start a run of a Job with a payload (invokeJob); Idempotency-Key "
            "makes it once", {"type": "object", "required": ["id"],
                              "properties": {"id": {"type": "string"}}},
            400, 401, 404, 409, 413, 422, parameters=[
                {"name": "job_id", "in": "path", "required": True,
                 "schema": {"type": "string", "minLength": 1, "maxLength": 512}},
                {"name": "idempotency-key", "in": "header", "required": False,
                 "schema": {"type": "string"}}],
            requestBody=_json_in({
                "type": "object", "additionalProperties": False,
                "properties": {"payload": {"type": ["object", "null"]}, "context": ANY_JSON,
                               "options": {"type": ["object", "null"],
                                           "additionalProperties": False, "properties": {
                                               "accountId": {"type": ["string", "null"],
                                                             "pattern": NO_NUL},
                                               "callbackUrl": {
                                                   "type": ["string", "null"],
                                                   "description": "invokeAndWaitForCompletion:"
                                                   " the callback URL of the parent's waiting "
                                                   "task"}}}}}))},
        "/api/v1/runs/{run_id}/statuses/{status_id}": {"put": op(
            "v2UpdateStatus", "Create or update a status of the run (io.createStatus, and the "
            "status's update): the earlier value joins its history", STATUS_RECORD,
            400, 401, 404, 413, parameters=[run, {
                "name": "status_id", "in": "path", "required": True,
                "schema": {"type": "string", "minLength": 1, "maxLength": 512}}],
            requestBody=_json_in({**STATUS_VALUE, "additionalProperties": False}))},
        "/api/v1/event-dispatchers/ephemeral": {"post": op(
            "v2WaitForEvent", "io.waitForEvent: the event the task of a callback URL waits "
            "for (until the task's timeout)", {"type": "object", "required": ["id"],
                                               "properties": {"id": {"type": "string"}}},
            400, 401, 404, 409, 413, 422, requestBody=_json_in({
                "type": "object", "required": ["url", "name"], "additionalProperties": False,
                "properties": {
                    "url": {"type": "string", "description": "The waiting task's callbackUrl"},
                    "name": {"oneOf": [NO_NUL_TEXT, {"type": "array", "items": NO_NUL_TEXT,
                                                     "minItems": 1, "maxItems": 1}]},
                    "source": NO_NUL_TEXT, "accountId": NO_NUL_TEXT,
                    "filter": {"type": "object"}, "contextFilter": {"type": "object"},
                    "timeoutInSeconds": {"type": "integer", "minimum": 10,
                                         "maximum": 365 * 24 * 3600}}}))},
        "/api/v1/endpoints": {"post": op(
            "v2RegisterEndpoint", "An app asks to be indexed (registerEndpoint); the key it "
            "presents is kept sealed and presented to it", {
                "type": "object", "required": ["id", "url", "name", "status"],
                "properties": {"id": {"type": "string"}, "url": {"type": "string"},
                               "name": {"type": "string"}, "status": {"type": "string"}}},
            400, 401, 413, 422, requestBody=_json_in({
                "type": "object", "required": ["url", "name"], "additionalProperties": False,
                "properties": {"url": {"type": "string", "format": "uri"},
                               "name": NO_NUL_TEXT}}))},
    }
