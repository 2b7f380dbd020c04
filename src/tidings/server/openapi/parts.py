"""What every part of the OpenAPI document uses: shared schemas and the builders of
parameters and answers."""

from __future__ import annotations

from typing import Any

from tidings.keys import MAX_BRANCH_CHARS
from tidings.settings import Limits

LIMITS = Limits()
ULID_PATTERN = "^[0-9A-HJKMNP-TV-Z]{26}$"
MAX_MILLIS = (1 << 48) - 1
ApiSecurity = list[dict[str, list[str]]]


def ref(name: str) -> dict[str, Any]:
    """A reference to a schema of ``components``."""
    return {"$ref": f"#/components/schemas/{name}"}


JSON_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}
NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}
NULLABLE_TIME: dict[str, Any] = {"type": ["string", "null"], "format": "date-time"}
NULLABLE_ID: dict[str, Any] = {"type": ["string", "null"], "pattern": ULID_PATTERN}
ANY_JSON: dict[str, Any] = {"description": "Any JSON value, or null."}

FIELD_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["index", "field", "message"],
    "properties": {
        "index": {"type": "integer", "minimum": 0, "description": "Position in the request."},
        "field": {"type": "string", "description": "Empty when the event as a whole is bad."},
        "message": {"type": "string"},
    },
}

ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error", "status"],
    "properties": {
        "error": {"type": "string"},
        "status": {"type": "integer"},
        "errors": {"type": "array", "items": ref("FieldError"),
                   "description": "One entry per invalid field, when events failed validation."},
    },
}

TIME_IN: dict[str, Any] = {"anyOf": [
    {"type": "integer", "minimum": 0, "maximum": MAX_MILLIS},
    {"type": "string", "format": "date-time"},
]}


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An answer (or request body) of JSON in ``schema``."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def errors(*codes: int) -> dict[str, Any]:
    """The ``{"error", "status"}`` answers of these statuses."""
    return {str(code): json_body(ref("Error"), "Error") for code in codes}


def header(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An optional request header."""
    return {"name": name, "in": "header", "required": False, "schema": schema,
            "description": description}


ENV_HEADER = header(
    "x-inngest-env",
    {"type": "string", "maxLength": MAX_BRANCH_CHARS, "pattern": "^[^/]*$"},
    "A branch environment of the key's environment, created on first use.",
)
READ_HEADERS = [ENV_HEADER]


def time_query(name: str, description: str) -> dict[str, Any]:
    """A query parameter holding a time: milliseconds or ISO-8601 (empty: none)."""
    return {"name": name, "in": "query", "description": description,
            "schema": {"anyOf": [*TIME_IN["anyOf"], {"type": "string", "maxLength": 0}]}}


# The cursor of the previous page; empty is none.
CURSOR_QUERY: dict[str, Any] = {"name": "cursor", "in": "query", "schema": {
    "type": "string", "pattern": "^(" + ULID_PATTERN.strip("^$") + ")?$"}}


def in_path(name: str) -> dict[str, Any]:
    """A path parameter (an id)."""
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1}}


def data(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An answer ``{"data": <schema>}``."""
    return json_body({"type": "object", "required": ["data"], "properties": {"data": schema}},
                     description)


def page(item: str) -> dict[str, Any]:
    """A page of a list endpoint: ``data`` holds ``item``s, ``cursor`` leads to the next."""
    return {
        "type": "object",
        "required": ["data", "cursor"],
        "properties": {
            "data": {"type": "array", "items": ref(item)},
            "cursor": {"type": ["string", "null"],
                       "description": "Pass as cursor for the next (older) page; null at the "
                                      "end."},
        },
    }
