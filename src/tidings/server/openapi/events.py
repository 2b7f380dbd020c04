"""The event endpoints in the OpenAPI document: the Event API (Inngest's) and ``/v1/events``."""

from __future__ import annotations

from typing import Any

from tidings.events.meta import MAX_ID_BYTES, MAX_KEY_BYTES, MAX_SESSIONS
from tidings.events.parse import TS_MAX, TS_MIN
from tidings.server.openapi.parts import (
    CURSOR_QUERY,
    ENV_HEADER,
    JSON_OBJECT,
    LIMITS,
    NULLABLE_STRING,
    NULLABLE_TIME,
    READ_HEADERS,
    ULID_PATTERN,
    ApiSecurity,
    errors,
    header,
    json_body,
    page,
    ref,
    time_query,
)

# Text stored in a text column: no NUL (PostgreSQL text cannot hold it), on both backends.
NO_NUL = "^[^\\x00]*$"
# An idempotency key: no NUL, and not starting with U+001F (a stored text so starting is sealed).
SENT_ID = "^([^\\x00\\x1f][^\\x00]*)?$"
EVENT_TIME: dict[str, Any] = {"oneOf": [
    {"type": "integer", "minimum": TS_MIN, "maximum": TS_MAX - 1},
    {"type": "string", "format": "date-time"},
    {"type": "null"},
]}
# Every optional field of an incoming event may also be null, which means "not given".
MAYBE_OBJECT: dict[str, Any] = {"type": ["object", "null"], "additionalProperties": True}
# Keys are at most MAX_KEY_BYTES and ids MAX_ID_BYTES of UTF-8: in characters, a quarter.
SESSION_KEY: dict[str, Any] = {"minLength": 1, "maxLength": MAX_KEY_BYTES // 4}
SESSION_ID: list[dict[str, Any]] = [
    {"type": "string", "minLength": 1, "maxLength": MAX_ID_BYTES // 4}, {"type": "number"}]
META_IN: dict[str, Any] = {
    **MAYBE_OBJECT,
    "description": "Inngest's sessions, which group the runs the event starts. Stored (and "
    f"given to functions) resolved: one sessions object of at most {MAX_SESSIONS}, ids as "
    "strings; other keys are dropped.",
    "properties": {
        "sessions": {"type": ["object", "null"], "maxProperties": MAX_SESSIONS,
                     "propertyNames": SESSION_KEY,
                     "additionalProperties": {"anyOf": [*SESSION_ID, {"type": "null"}]},
                     "description": "Session key to id. A null id cuts the inherited session "
                     "of that key; null cuts them all."},
        "propagated_sessions": {"type": ["object", "null"], "propertyNames": SESSION_KEY,
                                "additionalProperties": {"anyOf": SESSION_ID},
                                "description": "Inherited from the run that sends the event "
                                "(stamped by the SDK); sessions wins for a key in both."},
    },
}
# What is stored: ``meta.sessions`` resolved, or no meta at all.
META_OUT: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["sessions"],
    "properties": {"sessions": {"type": "object", "maxProperties": MAX_SESSIONS,
                                "additionalProperties": {"type": "string"}}},
}

EVENT_IN: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": LIMITS.max_name_chars,
                 "pattern": NO_NUL,
                 "description": "Event name; the prefixes inngest/ and tidings/ are reserved."},
        "data": {**MAYBE_OBJECT, "description": "The payload (Inngest name)."},
        "payload": {**MAYBE_OBJECT, "description": "The payload (Trigger.dev name); give it or "
                    "data, not two different values."},
        "user": {**MAYBE_OBJECT, "description": "Encrypted at rest; external_id identifies the "
                 "user for erasure."},
        "id": {"type": ["string", "null"], "minLength": 1, "maxLength": LIMITS.max_id_chars,
               "pattern": SENT_ID, "description": "Idempotency key: a second event with the same "
               "id in the dedup window is not stored again. Omit it (or null) for none; an "
               "empty id is refused."},
        "ts": {"oneOf": [{"type": "integer", "minimum": TS_MIN, "maximum": TS_MAX - 1},
                         {"enum": [0, None]}],
               "description": "Milliseconds since the epoch; default (or 0) now."},
        "timestamp": {**EVENT_TIME, "description": "Same as ts (Trigger.dev name); give one "
                      "of them, not both."},
        "v": {"type": ["string", "null"], "pattern": NO_NUL},
        "meta": META_IN,
        "source": {"type": ["string", "null"], "minLength": 1,
                   "maxLength": LIMITS.max_name_chars, "pattern": NO_NUL, "default": "tidings"},
        "context": MAYBE_OBJECT,
        "account_id": {"type": ["string", "null"], "pattern": NO_NUL},
        "deliver_at": {**EVENT_TIME, "description": "Deliver to functions at this time."},
        "deliver_after": {"type": ["integer", "null"], "minimum": 0,
                          "description": "Deliver after this many seconds (before 2100)."},
    },
    # ts and timestamp are one field: not both (a ts of 0 or null is none).
    "not": {"required": ["ts", "timestamp"], "properties": {
        "ts": {"type": "integer", "not": {"const": 0}},
        "timestamp": {"type": ["integer", "string"]}}},
}

EVENT_RECORD: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "internal_id", "name", "data", "user", "event_id", "idempotency_key",
                 "ts", "timestamp",
                 "v", "meta", "source", "context", "account_id", "received_at", "deliver_at",
                 "delivered_at", "cancelled_at", "user_erased", "user_masked"],
    "properties": {
        "id": {"type": "string", "pattern": ULID_PATTERN, "description": "Internal ULID."},
        "internal_id": {"type": "string", "pattern": ULID_PATTERN,
                        "description": "The same id, under the name Inngest's API gives it."},
        "name": {"type": "string"},
        "data": JSON_OBJECT,
        "user": {**JSON_OBJECT, "description": "Decrypted; {} when none or erased."},
        "event_id": {"type": "string", "description": "The sender's id, else the internal id."},
        "idempotency_key": NULLABLE_STRING,
        "ts": {"type": "integer"},
        "timestamp": {"type": "string", "format": "date-time"},
        "v": NULLABLE_STRING,
        "meta": {"oneOf": [META_OUT, {"type": "null"}],
                 "description": "Inngest's sessions, resolved; null when none."},
        "source": {"type": "string"},
        "context": {"type": ["object", "null"]},
        "account_id": NULLABLE_STRING,
        "received_at": {"type": "string", "format": "date-time"},
        "deliver_at": NULLABLE_TIME,
        "delivered_at": NULLABLE_TIME,
        "cancelled_at": NULLABLE_TIME,
        "user_erased": {"type": "boolean",
                        "description": "Its person was erased (DELETE /v1/users/{external_id}):"
                                       " user is {}."},
        "user_masked": {"type": "boolean",
                        "description": "Under serve, the API key reading it was not made "
                                       "--reads-user: user is {} here (it is kept)."},
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
        "errors": {"type": "array", "items": ref("FieldError")},
    },
}

EVENT_PAGE = page("EventRecord")
EVENT_PAGE = {**EVENT_PAGE, "required": [*EVENT_PAGE["required"], "retained_since"],
              "properties": {**EVENT_PAGE["properties"], "retained_since": {
                  **NULLABLE_TIME, "description": "Events received before this time are "
                  "deleted by the environment's retention (events_ttl); null when they are "
                  "kept forever."}}}

SEED_HEADER = header(
    "x-inngest-event-id-seed", {"type": "string"},
    "'<millis>,<base64 of 10 bytes>': retries with the same seed get the same ids (anything "
    "else is ignored).",
)
SEND_HEADERS = [ENV_HEADER, SEED_HEADER]

EVENTS_BODY: dict[str, Any] = {
    "required": True,
    "content": {"application/json": {"schema": {"oneOf": [
        ref("EventIn"),
        {"type": "array", "items": ref("EventIn"),
         "maxItems": LIMITS.max_events_per_request},
    ]}}},
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

SCHEMAS: dict[str, Any] = {
    "EventDetail": EVENT_DETAIL,
    "EventIn": EVENT_IN,
    "EventRecord": EVENT_RECORD,
    "IngestReply": INGEST_REPLY,
    "EventPage": EVENT_PAGE,
}


def paths(api_key: ApiSecurity, event_key: ApiSecurity) -> dict[str, Any]:
    """The operations on events."""
    ingest_errors = {str(c): json_body(ref("IngestReply"), "Rejected; nothing stored")
                     for c in (400, 401, 413, 415)}
    return {
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
            "responses": {"200": json_body(ref("IngestReply"), "Stored"), **ingest_errors},
        }},
        "/v1/events": {
            "get": {
                "operationId": "listEvents",
                "summary": "List events, newest first",
                "security": api_key,
                "parameters": [
                    {"name": "name", "in": "query",
                     "description": "An event name, or a prefix ending in `*` (`billing/*`).",
                     "schema": {"type": "string", "pattern": NO_NUL,
                                "maxLength": LIMITS.max_name_chars}},
                    {"name": "if", "in": "query",
                     "description": "A CEL condition over `event` as triggers see it "
                                    "(`event.data.plan == 'pro'`). A page then reads at most "
                                    "2,000 events past its cursor: it may come back short, "
                                    "with a cursor to carry on from.",
                     "schema": {"type": "string", "pattern": NO_NUL}},
                    time_query("since", "Events at or after this time."),
                    time_query("until", "Events before this time."),
                    CURSOR_QUERY,
                    {"name": "limit", "in": "query",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 1000,
                                "default": 50}},
                    *READ_HEADERS,
                ],
                "responses": {"200": json_body(ref("EventPage"), "A page of events"),
                              **errors(400, 401)},
            },
            "post": {
                "operationId": "sendEvents",
                "summary": "Send events and get the stored records back",
                "security": event_key,
                "parameters": SEND_HEADERS,
                "requestBody": EVENTS_BODY,
                "responses": {
                    "200": json_body({"type": "object", "required": ["data"], "properties": {
                        "data": {"type": "array", "items": ref("EventRecord")}}}, "Stored"),
                    **errors(400, 401, 409, 413, 415),
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
            "responses": {"200": json_body({"type": "object", "required": ["data"],
                                            "properties": {"data": ref("EventDetail")}},
                                           "The event"),
                          **errors(400, 401, 404)},
        }},
    }
