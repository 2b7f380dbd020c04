"""What Inngest SDK apps call, and the levers over them, in the OpenAPI document: registering
(``/fn/register``), the large state of a run (``/v0/runs/{id}/…``), the apps (``/v1/apps``), and
the dev server's description of itself (``/dev``).
"""

from __future__ import annotations

from typing import Any

from tidings.apps.records import FAILED, SYNCED, UNREACHABLE
from tidings.server.openapi.events import META_OUT
from tidings.server.openapi.parts import (
    ANY_JSON,
    NULLABLE_STRING,
    NULLABLE_TIME,
    READ_HEADERS,
    ApiSecurity,
    data,
    errors,
    header,
    in_path,
    json_body,
    ref,
)

APP_STATUSES = [SYNCED, UNREACHABLE, FAILED]
HTTP_URL: dict[str, Any] = {"type": "string", "pattern": "^https?://"}

TRIGGER: dict[str, Any] = {"oneOf": [
    {"type": "object", "required": ["event"], "properties": {
        "event": {"type": "string", "minLength": 1},
        "expression": {"type": "string", "description": "A CEL condition on event."}}},
    {"type": "object", "required": ["cron"], "properties": {
        "cron": {"type": "string", "description": "Five fields, optionally TZ=… first."}}},
]}

FUNCTION_CONFIG: dict[str, Any] = {
    "type": "object",
    "required": ["id", "triggers", "steps"],
    "additionalProperties": True,
    "description": "As the SDKs send it; keys match whatever their case and underscores. Flow "
                   "control (concurrency, throttle, rateLimit, debounce, batchEvents, priority, "
                   "cancel, singleton, timeouts, idempotency) is checked and kept.",
    "properties": {
        "id": {"type": "string", "minLength": 1,
               "description": "Composite: <app id>-<function id>."},
        "name": {"type": "string"},
        "triggers": {"type": "array", "minItems": 1, "items": TRIGGER},
        "steps": {"type": "object", "minProperties": 1, "maxProperties": 1,
                  "additionalProperties": {"type": "object", "required": ["runtime"],
                                           "properties": {
                      "id": {"type": "string"},
                      "name": {"type": "string"},
                      "runtime": {"type": "object", "required": ["url"], "properties": {
                          "type": {"type": "string"}, "url": HTTP_URL}},
                      "retries": {"type": "object", "properties": {
                          "attempts": {"type": "integer", "minimum": 0,
                                       "description": "Retries (default 4, at most 20)."}}},
                  }}},
    },
}

REGISTER_IN: dict[str, Any] = {
    "type": "object",
    "required": ["appname", "url", "functions"],
    "additionalProperties": True,
    "properties": {
        "appname": {"type": "string", "minLength": 1,
                    "description": "The app id (appName from inngest-js)."},
        "url": HTTP_URL,
        "functions": {"type": "array", "items": ref("FunctionConfig")},
        "framework": {"type": "string"},
        "sdk": {"type": "string", "description": "e.g. py:v0.5.19"},
        "deploy_type": {"type": "string"},
        "v": {"type": "string"},
    },
}

REGISTERED: dict[str, Any] = {
    "type": "object",
    "required": ["ok", "modified"],
    "properties": {
        "ok": {"const": True},
        "modified": {"type": "boolean",
                     "description": "False when the registration is what was stored already."},
    },
}

SDK_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data", "id", "name", "ts", "user"],
    "properties": {
        "data": {"type": "object"},
        "id": {"type": "string"},
        "name": {"type": "string", "description": "Internal events under their Inngest names."},
        "ts": {"type": "integer"},
        "user": {"type": "object"},
        "v": {"type": "string"},
        "meta": {**META_OUT, "description": "Inngest's sessions; only when there are some."},
    },
}

APP: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["url", "app_id", "sdk", "framework", "status", "error", "functions",
                 "synced_at", "checked_at", "connections"],
    "properties": {
        "url": {"type": "string"},
        "app_id": NULLABLE_STRING,
        "sdk": NULLABLE_STRING,
        "framework": NULLABLE_STRING,
        "status": {"enum": APP_STATUSES},
        "error": {**NULLABLE_STRING, "description": "Why the last sync did not succeed."},
        "functions": {"type": "integer", "minimum": 0},
        "synced_at": NULLABLE_TIME,
        "checked_at": {"type": "string", "format": "date-time"},
        "connections": {"type": "array", "items": ref("Connection"),
                        "description": "The app's Connect workers, connected to any process "
                                       "(empty for an app served over HTTP)."},
    },
}

CONNECTION: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["connection_id", "instance_id", "sdk", "apps", "connected_at", "status",
                 "in_flight", "capacity"],
    "properties": {
        "connection_id": {"type": "string"},
        "instance_id": {"type": "string"},
        "apps": {"type": "array", "items": {"type": "string"},
                 "description": "The apps the worker serves on this connection."},
        "sdk": {"type": "string", "description": "language:vversion, e.g. py:v0.5.19"},
        "connected_at": {"type": "string", "format": "date-time"},
        "status": {"enum": ["ready", "draining"],
                   "description": "draining: the worker paused, it gets no new calls"},
        "in_flight": {"type": "integer", "minimum": 0,
                      "description": "Calls its instance holds, across its connections."},
        "capacity": {"type": ["integer", "null"], "minimum": 1,
                     "description": "Its max_worker_concurrency; null: no limit."},
    },
}

SYNC_RESULT: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["url", "status", "error", "modified", "app_id"],
    "properties": {
        "url": {"type": "string"},
        "status": {"enum": APP_STATUSES},
        "error": NULLABLE_STRING,
        "modified": {"type": "boolean"},
        "app_id": {**NULLABLE_STRING, "description": "Given when the app answered in band."},
    },
}

DEV_FUNCTION: dict[str, Any] = {
    "type": "object",
    "required": ["id", "name", "slug", "triggers", "steps"],
    "additionalProperties": True,
    "description": "As Inngest's dev server lists a function; with the flow control it "
                   "registered.",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "slug": {"type": "string"},
        "triggers": {"type": "array", "items": TRIGGER},
        "steps": {"type": "array", "description": "None for a native function.", "items": {
            "type": "object", "required": ["id", "name", "uri"], "properties": {
                "id": {"type": "string"}, "name": {"type": "string"}, "uri": HTTP_URL,
                "retries": {"type": "integer", "description": "Only when registered."}}}},
    },
}

DEV_INFO: dict[str, Any] = {
    "type": "object",
    "required": ["version", "authed", "startOpts", "functions", "handlers",
                 "isSingleNodeService", "isMissingSigningKey", "isMissingEventKeys",
                 "features"],
    "properties": {
        "version": {"type": "string"},
        "authed": {"type": "boolean"},
        "startOpts": {"type": "object"},
        "functions": {"type": "array", "items": ref("DevFunction")},
        "handlers": {"type": "array", "items": {"type": "object"},
                     "description": "The synced apps and their functions' ids."},
        "isSingleNodeService": {"type": "boolean"},
        "isMissingSigningKey": {"type": "boolean"},
        "isMissingEventKeys": {"type": "boolean"},
        "features": {"type": "object"},
    },
}

SCHEMAS: dict[str, Any] = {
    "FunctionConfig": FUNCTION_CONFIG,
    "RegisterIn": REGISTER_IN,
    "Registered": REGISTERED,
    "SdkEvent": SDK_EVENT,
    "App": APP,
    "Connection": CONNECTION,
    "SyncResult": SYNC_RESULT,
    "DevFunction": DEV_FUNCTION,
    "DevInfo": DEV_INFO,
}

SDK_ENV_HEADER = header(
    "x-inngest-env", READ_HEADERS[0]["schema"],
    "The SDK's env: a branch of the signing key's environment, created on first use.")


def paths(api_key: ApiSecurity, signing_key: ApiSecurity) -> dict[str, Any]:
    """The operations of SDK apps and on them."""
    one_run = [in_path("run_id"), SDK_ENV_HEADER]
    return {
        "/fn/register": {"post": {
            "operationId": "registerApp",
            "summary": "An SDK app registers its functions (out-of-band sync)",
            "description": "Functions the app no longer lists are archived.",
            "security": signing_key,
            "parameters": [
                SDK_ENV_HEADER,
                header("x-inngest-expected-server-kind", {"type": "string"},
                       "dev or cloud; 400 when this server is of the other kind."),
            ],
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": ref("RegisterIn")}}},
            "responses": {"200": json_body(ref("Registered"), "Registered"),
                          **errors(400, 401, 413, 415)},
        }},
        "/v0/runs/{run_id}/batch": {"get": {
            "operationId": "getRunEvents",
            "summary": "The events of a run, for a call too large to carry them (use_api)",
            "security": signing_key,
            "parameters": one_run,
            "responses": {"200": json_body({"type": "array", "items": ref("SdkEvent")},
                                           "The run's events"),
                          **errors(400, 401, 404)},
        }},
        "/v0/runs/{run_id}/actions": {"get": {
            "operationId": "getRunSteps",
            "summary": "The memoized steps of a run, by step id (use_api)",
            "security": signing_key,
            "parameters": one_run,
            "responses": {"200": json_body({"type": "object", "additionalProperties": ANY_JSON},
                                           "The run's memoized steps"),
                          **errors(400, 401, 404)},
        }},
        "/v1/apps": {"get": {
            "operationId": "listApps",
            "summary": "The SDK apps of the environment and how their last sync went",
            "security": api_key,
            "parameters": READ_HEADERS,
            "responses": {"200": data({"type": "array", "items": ref("App")}, "Its apps"),
                          **errors(400, 401)},
        }},
        "/dev": {"get": {
            "operationId": "devInfo",
            "summary": "The dev server's functions, their triggers and step URLs, as the "
                       "Inngest Dev Server answers (tidings dev only: 404 elsewhere)",
            "security": api_key,
            "parameters": READ_HEADERS,
            "responses": {"200": json_body(ref("DevInfo"), "The dev server"),
                          **errors(400, 401, 404)},
        }},
        "/v1/apps/sync": {"post": {
            "operationId": "syncApp",
            "summary": "Ask the app at a URL to sync (a PUT; in band outside dev)",
            "security": api_key,
            "parameters": READ_HEADERS,
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["url"], "additionalProperties": False,
                "properties": {"url": {**HTTP_URL, "description": "Where the app serves."}},
            }}}},
            "responses": {
                "200": data(ref("SyncResult"), "Synced"),
                "422": json_body({"type": "object", "required": ["error", "status", "data"],
                                  "properties": {"error": {"type": "string"},
                                                 "status": {"const": 422},
                                                 "data": ref("SyncResult")}},
                                 "The app did not answer, or its answer was refused"),
                **errors(400, 401, 413, 415),
            },
        }},
    }
