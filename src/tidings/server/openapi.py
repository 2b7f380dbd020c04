"""The OpenAPI document of the JSON endpoints, served at ``/openapi.json``."""

from __future__ import annotations

from functools import cache
from typing import Any

JSON_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}
NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}
NULLABLE_TIME: dict[str, Any] = {"type": ["string", "null"], "format": "date-time"}

EVENT_IN: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 256,
                 "description": "Event name; the prefixes inngest/ and tidings/ are reserved."},
        "data": {**JSON_OBJECT, "description": "The payload (Inngest name)."},
        "payload": {**JSON_OBJECT, "description": "The payload (Trigger.dev name)."},
        "user": {**JSON_OBJECT, "description": "Encrypted at rest; external_id identifies the "
                 "user for erasure."},
        "id": {"type": "string", "description": "Idempotency key: a second event with the same "
               "id in the dedup window is not stored again."},
        "ts": {"type": "integer", "minimum": 315532800000, "maximum": 4102444799999,
               "description": "Milliseconds since the epoch; default now."},
        "timestamp": {"oneOf": [{"type": "integer"}, {"type": "string", "format": "date-time"}]},
        "v": {"type": "string"},
        "source": {"type": "string", "minLength": 1, "maxLength": 256, "default": "tidings"},
        "context": JSON_OBJECT,
        "account_id": {"type": "string"},
        "deliver_at": {"oneOf": [{"type": "integer"}, {"type": "string", "format": "date-time"}]},
        "deliver_after": {"type": "integer", "minimum": 0, "description": "Seconds."},
    },
}

EVENT_RECORD: dict[str, Any] = {
    "type": "object",
    "required": ["id", "name", "data", "user", "ts", "source", "received_at"],
    "properties": {
        "id": {"type": "string", "description": "Internal ULID."},
        "name": {"type": "string"},
        "data": JSON_OBJECT,
        "user": JSON_OBJECT,
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

ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error", "status"],
    "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
}

INGEST_REPLY: dict[str, Any] = {
    "type": "object",
    "required": ["ids", "status"],
    "properties": {
        "ids": {"type": "array", "items": {"type": "string"}},
        "status": {"type": "integer"},
        "error": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _json(ERROR, "Error") for code in codes}


EVENTS_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {
        "oneOf": [EVENT_IN, {"type": "array", "items": EVENT_IN, "maxItems": 5000}]}}},
}


@cache
def document() -> dict[str, Any]:
    ingest_errors = {str(c): _json(INGEST_REPLY, "Rejected; nothing stored")
                     for c in (400, 401, 413, 415)}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tidings", "version": "1"},
        "paths": {
            "/e/{key}": {
                "post": {
                    "summary": "Send events (Inngest-compatible Event API)",
                    "parameters": [
                        {"name": "key", "in": "path", "required": True,
                         "schema": {"type": "string"}},
                        {"name": "x-inngest-event-id-seed", "in": "header", "required": False,
                         "schema": {"type": "string"}},
                    ],
                    "requestBody": EVENTS_BODY,
                    "responses": {"200": _json(INGEST_REPLY, "Stored"), **ingest_errors},
                }
            },
            "/v1/events": {
                "get": {
                    "summary": "List events, newest first",
                    "parameters": [
                        {"name": "name", "in": "query", "schema": {"type": "string"}},
                        {"name": "since", "in": "query", "schema": {"type": "string"}},
                        {"name": "until", "in": "query", "schema": {"type": "string"}},
                        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                        {"name": "limit", "in": "query",
                         "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                    ],
                    "responses": {
                        "200": _json({
                            "type": "object",
                            "required": ["data", "cursor"],
                            "properties": {
                                "data": {"type": "array", "items": EVENT_RECORD},
                                "cursor": NULLABLE_STRING,
                            },
                        }, "A page of events"),
                        **_errors(400, 401),
                    },
                },
                "post": {
                    "summary": "Send events and get the stored records back",
                    "parameters": [{"name": "authorization", "in": "header",
                                    "schema": {"type": "string"}}],
                    "requestBody": EVENTS_BODY,
                    "responses": {
                        "200": _json({"type": "object", "required": ["data"], "properties": {
                            "data": {"type": "array", "items": EVENT_RECORD}}}, "Stored"),
                        **_errors(400, 401, 413, 415),
                    },
                },
            },
            "/v1/events/{event_id}": {
                "get": {
                    "summary": "One event, with user decrypted",
                    "parameters": [{"name": "event_id", "in": "path", "required": True,
                                    "schema": {"type": "string"}}],
                    "responses": {
                        "200": _json({"type": "object", "required": ["data"],
                                      "properties": {"data": EVENT_RECORD}}, "The event"),
                        **_errors(400, 401, 404),
                    },
                }
            },
            "/health": {
                "get": {"summary": "Health", "responses": {"200": _json(
                    {"type": "object"}, "OK")}}
            },
        },
    }
