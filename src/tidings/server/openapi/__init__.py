"""The OpenAPI document of the JSON endpoints, served at ``/openapi.json``.

``tests/acceptance/test_schemathesis.py`` fuzzes the server against it, so every answer the
server can give (status, headers, body) is written down here: the events in ``events``, runs
and replays in ``runs``, the functions in ``functions``, what Inngest SDK apps call in ``sdk``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from tidings.server.openapi import connect, events, functions, runs, sdk, triggerdev
from tidings.server.openapi.parts import ERROR, FIELD_ERROR, ApiSecurity, errors, json_body

# Loop name -> its last error (``supervision.py``).
LOOPS = {"type": "object", "additionalProperties": {"type": "string"}}


def _ready(status: int) -> dict[str, Any]:
    """The body of ``/ready``: each check (database, migrations, writer, loops) with ``ok`` or
    what failed."""
    return {"type": "object", "required": ["status", "message", "checks"],
            "properties": {"status": {"const": status}, "message": {"type": "string"},
                           "checks": {"type": "object",
                                      "additionalProperties": {"type": "string"}}}}


@cache
def document(dev: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once per mode). ``tidings dev`` asks for no credentials
    at all, so its document names none (``"security": []``); ``serve`` requires them."""
    api_key: ApiSecurity = [] if dev else [{"apiKey": []}]
    event_key: ApiSecurity = [] if dev else [{"eventKey": []}]
    signing_key: ApiSecurity = [] if dev else [{"signingKey": []}]
    trigger_key: ApiSecurity = [] if dev else [{"triggerKey": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tidings", "version": "1",
                 "description": "Events in, durable functions out. Every answer is JSON."},
        "paths": {
            **events.paths(api_key, event_key),
            **runs.paths(api_key),
            **functions.paths(api_key),
            **sdk.paths(api_key, signing_key),
            **connect.paths(api_key, signing_key),
            **triggerdev.paths(trigger_key),
            "/health": {"get": {
                "operationId": "health",
                "summary": "Health",
                "description": "200 while every long-lived loop of the process runs (those "
                               "retrying after a failure listed in failing); 503 once one is "
                               "dead for good (the process then exits).",
                "responses": {
                    "200": json_body({
                        "type": "object", "required": ["status", "message"],
                        "properties": {"status": {"const": 200}, "message": {"type": "string"},
                                       "failing": LOOPS},
                    }, "Every loop runs"),
                    "503": json_body({
                        "type": "object", "required": ["status", "message", "dead"],
                        "properties": {"status": {"const": 503}, "message": {"type": "string"},
                                       "dead": LOOPS, "failing": LOOPS},
                    }, "A loop is dead for good"),
                },
            }},
            "/ready": {"get": {
                "operationId": "ready",
                "summary": "Readiness",
                "description": "200 when the process can do its work now: the database "
                               "answers a read, its schema is at the version this release "
                               "expects, and a write commits (each within 2 s); 503 naming "
                               "the checks that failed otherwise. Not a liveness check: a "
                               "database outage makes it 503 without the process being "
                               "unhealthy.",
                "responses": {
                    "200": json_body(_ready(200), "Ready"),
                    "503": json_body(_ready(503), "Not ready"),
                },
            }},
            "/metrics": {"get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "description": "The Prometheus text format: this process's counters and "
                               "histograms (tidings_*, and Inngest's inngest_function_run_*, "
                               "inngest_sdk_req_*), then gauges of shared state read from "
                               "the database (tidings_queue_depth, inngest_queue_depth, "
                               "tidings_waits_pending, …). Outside dev it needs an API key "
                               "unless the server runs with --metrics-public; absent (404) "
                               "with --no-metrics. Query parameters are ignored.",
                "security": api_key,
                "responses": {
                    "200": {"description": "The exposition",
                            "content": {"text/plain": {"schema": {"type": "string"}}}},
                    **errors(401),
                },
            }},
            "/openapi.json": {"get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": json_body({"type": "object",
                                                "required": ["openapi", "paths"]},
                                               "OpenAPI 3.1")},
            }},
        },
        "components": {
            "schemas": {"FieldError": FIELD_ERROR, "Error": ERROR, **events.SCHEMAS,
                        **runs.SCHEMAS, **functions.SCHEMAS, **sdk.SCHEMAS,
                        **triggerdev.SCHEMAS},
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer",
                           "description": "An API key (tda_...); tidings dev needs none."},
                "eventKey": {"type": "http", "scheme": "bearer",
                             "description": "An event key (tdk_...); any in tidings dev."},
                "triggerKey": {"type": "http", "scheme": "bearer",
                               "description": "A Trigger.dev v2 key (tr_<env>_...: tidings keys "
                                              "create --kind trigger); tidings dev needs none "
                                              "and takes any tr_dev_... key."},
                "signingKey": {"type": "http", "scheme": "bearer",
                               "description": "The environment's signing key, plain or "
                                              "hashed, with or without its signkey-…- "
                                              "prefix; tidings dev needs none."},
            },
        },
    }
