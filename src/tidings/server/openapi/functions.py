"""The functions of an environment in the OpenAPI document (``/v1/functions``)."""

from __future__ import annotations

from typing import Any

from tidings.server.openapi.parts import (
    ANY_JSON,
    NULLABLE_STRING,
    READ_HEADERS,
    ApiSecurity,
    data,
    errors,
    in_path,
    ref,
)

FUNCTION: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "slug", "name", "app_id", "kind", "url", "triggers", "retries", "flow",
                 "archived", "created_at", "updated_at", "synced_at"],
    "properties": {
        "id": {"type": "string", "description": "Tidings' id of the function."},
        "slug": {"type": "string", "description": "<app id>-<function id>: what runs and "
                                                  "invokes name it by."},
        "name": {"type": "string"},
        "app_id": {"type": "string"},
        "kind": {"enum": ["sdk", "trigger", "native"],
                 "description": "Served by an Inngest SDK app over HTTP, a Job of a "
                                "Trigger.dev v2 app, or a native function of a Tidings "
                                "client."},
        "url": {**NULLABLE_STRING, "description": "The step URL Tidings calls (sdk)."},
        "triggers": {"type": "array", "items": {"type": "object"},
                     "description": "{event, expression?} or {cron}, as registered."},
        "retries": {"type": "integer", "minimum": 0,
                    "description": "Retries of each step, and of each stretch between steps."},
        "flow": {"type": "object", "additionalProperties": ANY_JSON,
                 "description": "Flow control as registered: concurrency, throttle, "
                                "rateLimit, debounce, batchEvents, priority, cancel, "
                                "singleton, timeouts, idempotency."},
        "archived": {"type": "boolean", "description": "Its app no longer has it."},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time",
                       "description": "When its definition last changed."},
        "synced_at": {"type": "string", "format": "date-time",
                      "description": "When its app last synced (a native function: when "
                                     "its process registered it)."},
    },
}

SCHEMAS: dict[str, Any] = {"Function": FUNCTION}


def paths(api_key: ApiSecurity) -> dict[str, Any]:
    return {
        "/v1/functions": {"get": {
            "operationId": "listFunctions",
            "summary": "The live functions of the environment, by slug",
            "security": api_key,
            "parameters": READ_HEADERS,
            "responses": {"200": data({"type": "array", "items": ref("Function")},
                                      "Its functions"),
                          **errors(400, 401)},
        }},
        "/v1/functions/{slug}": {"get": {
            "operationId": "getFunction",
            "summary": "One function by its slug, archived or not",
            "security": api_key,
            "parameters": [in_path("slug"), *READ_HEADERS],
            "responses": {"200": data(ref("Function"), "The function"),
                          **errors(400, 401, 404)},
        }},
        "/v1/functions/{slug}/invoke": {"post": {
            "operationId": "invokeFunction",
            "summary": "Start a run of the function now with a payload, whatever its triggers",
            "description": "Its event is a delivered tidings/function.invoked (a Trigger.dev "
                           "job's: a payload of its first trigger, without user); 409 for an "
                           "archived function.",
            "security": api_key,
            "parameters": [in_path("slug"), *READ_HEADERS],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False,
                "properties": {"data": {"type": ["object", "null"]},
                               "user": {"type": ["object", "null"]}}}}}},
            "responses": {"201": data(ref("Run"), "The new run"),
                          **errors(400, 401, 404, 409, 413, 415)},
        }},
    }
