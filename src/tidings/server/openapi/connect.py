"""Connect's HTTP side in the OpenAPI document: a worker starting a connection, and a reply it
flushes over HTTP. Both take and give protobuf (``tidings/connect/wire.proto``); errors are
JSON as everywhere."""

from __future__ import annotations

from typing import Any

from tidings.server.openapi.parts import READ_HEADERS, ApiSecurity, data, errors, in_path, ref
from tidings.server.openapi.sdk import SDK_ENV_HEADER as _ENV

PROTOBUF = "application/protobuf"


def _protobuf(message: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROTOBUF: {"schema": {
        "type": "string", "format": "binary",
        "description": f"A protobuf {message} (tidings/connect/wire.proto)."}}}}


def paths(api_key: ApiSecurity, signing_key: ApiSecurity) -> dict[str, Any]:
    return {
        "/v0/connect/envs/{env_id}/conns": {"get": {
            "operationId": "connectConnections",
            "summary": "The Connect workers connected to an environment (to any process)",
            "description": "env_id: the environment's id or name (in dev also "
                           "00000000-0000-4000-b000-000000000000, the Inngest Dev Server's).",
            "security": api_key,
            "parameters": [in_path("env_id"), *READ_HEADERS],
            "responses": {"200": data({"type": "array", "items": ref("Connection")},
                                      "Its workers"),
                          **errors(400, 401, 404)},
        }},
        "/v0/connect/start": {"post": {
            "operationId": "connectStart",
            "summary": "A Connect worker starts a connection",
            "description": "Answers a new connection id, the gateway's WebSocket URL and a "
                           "session token for the worker's WORKER_CONNECT (5 minutes).",
            "security": signing_key,
            "parameters": [_ENV],
            "requestBody": {"required": False, **_protobuf("StartRequest", "Gateways to avoid")},
            "responses": {"200": _protobuf("StartResponse", "Where to connect"),
                          **errors(400, 401, 413, 503)},
        }},
        "/v0/connect/flush": {"post": {
            "operationId": "connectFlush",
            "summary": "A Connect worker's reply that its socket could not deliver",
            "security": signing_key,
            "parameters": [_ENV],
            "requestBody": {"required": True, **_protobuf("SDKResponse", "The reply")},
            "responses": {"200": _protobuf("FlushResponse", "Taken"),
                          **errors(400, 401, 404, 413)},
        }},
    }
