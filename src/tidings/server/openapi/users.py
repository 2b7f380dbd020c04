"""The people behind events in the OpenAPI document (``/v1/users``)."""

from __future__ import annotations

from typing import Any

from tidings.server.openapi.events import EVENT_RECORD
from tidings.server.openapi.parts import (
    CURSOR_QUERY,
    LIMITS,
    NULLABLE_TIME,
    READ_HEADERS,
    ApiSecurity,
    data,
    errors,
    json_body,
    page,
    ref,
)

ERASURE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["erasure_id", "events_mode", "key_destroyed", "events", "events_deleted",
                 "runs_cancelled", "runs_erased", "steps_erased"],
    "properties": {
        "erasure_id": {"type": "string", "description": "The audit record of this erasure."},
        "events_mode": {"enum": ["keep", "delete"]},
        "key_destroyed": {"type": "boolean",
                          "description": "The person had a data key, and it is destroyed."},
        "events": {"type": "integer", "minimum": 0,
                   "description": "The person's events when the erasure began."},
        "events_deleted": {"type": "integer", "minimum": 0},
        "runs_cancelled": {"type": "integer", "minimum": 0,
                           "description": "Runs of their events still active, cancelled."},
        "runs_erased": {"type": "integer", "minimum": 0,
                        "description": "Runs of their events left as tombstones."},
        "steps_erased": {"type": "integer", "minimum": 0,
                         "description": "Step outputs replaced by the erased marker."},
    },
}

PERSON_EVENT: dict[str, Any] = {
    **EVENT_RECORD,
    "required": [*EVENT_RECORD["required"], "runs"],
    "properties": {**EVENT_RECORD["properties"], "runs": {
        "type": "array", "description": "The runs the event started.",
        "items": {"type": "object", "additionalProperties": False,
                  "required": ["id", "function", "status", "created_at", "ended_at"],
                  "properties": {"id": {"type": "string"}, "function": {"type": "string"},
                                 "status": {"type": "string"},
                                 "created_at": {"type": "string", "format": "date-time"},
                                 "ended_at": NULLABLE_TIME}},
    }},
}

SCHEMAS: dict[str, Any] = {"Erasure": ERASURE, "PersonEvent": PERSON_EVENT}

EXTERNAL_ID: dict[str, Any] = {
    "name": "external_id", "in": "path", "required": True,
    "description": "user.external_id of the person's events.",
    "schema": {"type": "string", "minLength": 1, "maxLength": LIMITS.max_id_chars,
               "pattern": "^[^\\u0000]*$"},
}


def paths(api_key: ApiSecurity) -> dict[str, Any]:
    return {
        "/v1/users/{external_id}/events": {"get": {
            "operationId": "exportUser",
            "summary": "Export a person: their events, newest first",
            "description": "Every event whose user.external_id is this one, user decrypted "
                           "({} with user_erased once erased), each with the runs it started; "
                           "a page at a time.",
            "security": api_key,
            "parameters": [EXTERNAL_ID, CURSOR_QUERY, {
                "name": "limit", "in": "query",
                "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}},
                *READ_HEADERS],
            "responses": {"200": json_body(page("PersonEvent"), "A page of their events"),
                          **errors(400, 401, 403)},
        }},
        "/v1/users/{external_id}": {"delete": {
            "operationId": "eraseUser",
            "summary": "Erase a person",
            "description": "Destroys the person's data key: the user object of every event of "
                           "theirs becomes unreadable ({}), in the database and in backups. "
                           "With events=delete their events go too, and the runs those events "
                           "started are cancelled if still active and kept as tombstones "
                           "(outputs replaced by {\"erased\": true}). Idempotent: a person "
                           "never seen gives zero counts. Under tidings serve the API key "
                           "needs the reads-user permission (tidings keys create --kind api "
                           "--reads-user), 403 otherwise.",
            "security": api_key,
            "parameters": [EXTERNAL_ID, {
                "name": "events", "in": "query", "required": False,
                "schema": {"enum": ["keep", "delete"], "default": "keep"},
                "description": "keep: only the key is destroyed; delete: their events too.",
            }, *READ_HEADERS],
            "responses": {"200": data(ref("Erasure"), "What was erased"),
                          **errors(400, 401, 403)},
        }},
    }
