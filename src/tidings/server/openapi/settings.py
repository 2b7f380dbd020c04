"""An environment's settings in the OpenAPI document (``/v1/settings``)."""

from __future__ import annotations

from typing import Any

from tidings.server.openapi.parts import READ_HEADERS, ApiSecurity, data, errors, ref

DURATION = "A duration: 30d, 12h, 90m, 45s, 1w or milliseconds"

SETTINGS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["events_ttl", "runs_ttl", "dedup_window", "encrypt_data"],
    "properties": {
        "events_ttl": {"type": "string", "description": "Events are deleted this long after "
                                                        "they were received (forever: kept)."},
        "runs_ttl": {"type": "string", "description": "Ended runs are deleted, with their steps,"
                                                      " this long after they ended."},
        "dedup_window": {"type": "string", "description": "How long an event id keeps "
                                                          "duplicates out."},
        "encrypt_data": {"type": "boolean", "description": "Whether event data, event ids, "
                                                           "step and run outputs are sealed at "
                                                           "rest."},
    },
}

TTL_IN: dict[str, Any] = {
    "oneOf": [{"type": "string", "maxLength": 64}, {"type": "integer", "minimum": 3_600_000},
              {"type": "null"}],
    "description": f"{DURATION} (1h to 3650d), 'forever', or null for the mode's default "
                   "(dev: forever; serve: 30d).",
}

SETTINGS_IN: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "events_ttl": TTL_IN,
        "runs_ttl": TTL_IN,
        "dedup_window": {
            "oneOf": [{"type": "string", "maxLength": 64}, {"type": "integer", "minimum": 1000},
                      {"type": "null"}],
            "description": f"{DURATION} (1s up to events_ttl), or null for the default (1d).",
        },
        "encrypt_data": {"type": "boolean", "description": "Seal what is written from now on "
                                                           "(true) or store it plain (false)."},
    },
}

SCHEMAS: dict[str, Any] = {"Settings": SETTINGS, "SettingsIn": SETTINGS_IN}


def paths(api_key: ApiSecurity) -> dict[str, Any]:
    return {"/v1/settings": {
        "get": {
            "operationId": "getSettings",
            "summary": "The environment's retention and sealing settings in effect",
            "security": api_key,
            "parameters": READ_HEADERS,
            "responses": {"200": data(ref("Settings"), "In effect"), **errors(400, 401)},
        },
        "post": {
            "operationId": "changeSettings",
            "summary": "Change the environment's retention and sealing settings",
            "description": "Only the settings named change. events_ttl may not be shorter "
                           "than dedup_window (400 naming the setting).",
            "security": api_key,
            "parameters": READ_HEADERS,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": ref("SettingsIn")}}},
            "responses": {"200": data(ref("Settings"), "In effect now"),
                          **errors(400, 401, 413, 415)},
        },
    }}
