"""What every JSON API handler does with a request: answer in JSON, find the caller's
environment, and check query parameters, cursors and range bodies before anything is read.

Every answer is JSON: ``{"data": ...}`` on success, ``{"error": "...", "status": N}`` otherwise.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.requests import Request
from starlette.responses import Response

from tidings.core import Core
from tidings.errors import RequestRejected, Unauthorized
from tidings.json_input import decode_json
from tidings.keys import DEV_ENV, Access, SigningKeys, get_env
from tidings.server.http import encode
from tidings.storage.base import Environment

ULID_RE = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
# ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
MILLIS_RE = re.compile(r"[0-9]{1,15}")
LIMIT_RE = re.compile(r"[0-9]{1,4}")
MAX_MILLIS = (1 << 48) - 1  # the largest time a ULID holds
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
BRANCH_NOT_UTF8 = "x-inngest-env: a branch name must be UTF-8 text"


def json_response(status: int, payload: Any) -> Response:
    return Response(encode(payload), status_code=status, media_type="application/json")


def error_response(status: int, message: str) -> Response:
    return json_response(status, {"error": message, "status": status})


def not_found(what: str, ident: str) -> Response:
    """A 404 naming what was not found (a long id cut short: it came from the caller)."""
    shown = ident if len(ident) <= 100 else ident[:100] + "…"
    return error_response(404, f"{what} {shown!r} not found")


def bearer(request: Request) -> str:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def decode_branch(raw: bytes) -> str:
    """A raw ``X-Inngest-Env`` value, which must be UTF-8."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise RequestRejected(BRANCH_NOT_UTF8) from None


def branch_header(request: Request) -> str | None:
    """``X-Inngest-Env``, which must be UTF-8 (Starlette hands header values over decoded as
    latin-1, so bytes that are not UTF-8 would otherwise name a branch of mojibake)."""
    value = request.headers.get("x-inngest-env")
    if not value:
        return None
    try:
        return value.encode("latin-1").decode()
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise RequestRejected(BRANCH_NOT_UTF8) from None


async def read_env(core: Core, request: Request) -> Environment:
    """The environment a read is for: the API key's (any in dev), or its branch."""
    return (await read_access(core, request)).env


async def read_access(core: Core, request: Request) -> Access:
    """What the request's API key opens: the environment (or branch) and whether it reads
    events' ``user`` decrypted."""
    branch = branch_header(request)
    return await core.gate.access_for(bearer(request) or ("dev" if core.settings.dev else ""),
                                      "api", branch)


async def sdk_env(core: Core, keys: SigningKeys, request: Request) -> str:
    """The environment an SDK (or Connect worker) request is for: dev's, or its signing
    key's; or the branch of it that ``X-Inngest-Env`` names (the SDK's ``env``,
    ``INNGEST_ENV``)."""
    branch = branch_header(request)
    if core.settings.dev:
        return (await core.gate.env_for(DEV_ENV, "api", branch)).id
    token = bearer(request)
    if not token:
        raise Unauthorized("a signing key is required (Authorization: Bearer <signing key "
                           "or its hash>)")
    env_id = await keys.env_for_bearer(token)
    if env_id is None:
        raise Unauthorized("signing key not found")
    if branch is None:
        return env_id
    env = await core.storage.read(lambda tx: get_env(tx, env_id))
    assert env is not None
    return (await core.gate.branch(env, branch)).id


def without_nul(value: str, field: str) -> str:
    """``value``, refused when it holds NUL: no name or slug does (PostgreSQL text cannot hold
    it), so it is not sent to the database."""
    if "\x00" in value:
        raise RequestRejected(f"{field}: must not contain NUL characters")
    return value


def check_params(request: Request, allowed: set[str]) -> None:
    """Refuse query parameters not in ``allowed``, and values that are not UTF-8 or hold NUL
    (Starlette would pass the first on with U+FFFD in place; PostgreSQL cannot take the
    second)."""
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise RequestRejected(f"unknown query parameter(s): {', '.join(unknown)}; "
                              f"allowed: {', '.join(sorted(allowed) or ['none'])}")
    raw = request.scope.get("query_string", b"")
    if not raw:
        return
    for pair in raw.split(b"&"):
        name, _, value = pair.partition(b"=")
        try:
            text = unquote_to_bytes(value.replace(b"+", b" ")).decode()
        except UnicodeDecodeError:
            raise RequestRejected(f"{_name(name)}: not valid UTF-8 (percent-encode UTF-8 "
                                  "bytes)") from None
        if "\x00" in text:
            raise RequestRejected(f"{_name(name)}: must not contain NUL characters")


def _name(raw: bytes) -> str:
    return unquote_to_bytes(raw).decode(errors="replace")[:100]


def cursor_param(request: Request) -> str | None:
    """``cursor``: the id a page of this API ended on, or None for the first page."""
    cursor = request.query_params.get("cursor") or None
    if cursor is not None and not ULID_RE.fullmatch(cursor):
        raise RequestRejected(f"cursor: not a cursor this API returned: {cursor!r}")
    return cursor


def time_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    return parse_time(name, raw)


def parse_time(name: str, raw: str) -> int:
    """Milliseconds since the epoch from ISO-8601 with an offset, or from milliseconds."""
    if MILLIS_RE.fullmatch(raw) and int(raw) <= MAX_MILLIS:
        return int(raw)
    try:
        moment = datetime.fromisoformat(raw.upper().replace("Z", "+00:00"))
    except ValueError:
        raise RequestRejected(f"{name}: expected an ISO-8601 time or milliseconds since the "
                              f"epoch (0 to {MAX_MILLIS}), got {raw!r}") from None
    if moment.tzinfo is None:
        raise RequestRejected(f"{name}: an ISO-8601 time needs a UTC offset (for example Z)")
    return int(moment.timestamp() * 1000)


def limit_param(request: Request) -> int:
    raw = request.query_params.get("limit", str(DEFAULT_LIMIT))
    if not LIMIT_RE.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise RequestRejected(f"limit: expected a whole number from 1 to {MAX_LIMIT}, got {raw!r}")
    return int(raw)


def range_request(body: bytes, fields: tuple[str, ...], optional: tuple[str, ...] = ()
                  ) -> tuple[dict[str, Any], str, int, int]:
    """A body naming a function and a time range (``since`` < ``until``) with exactly
    ``fields`` (and any of ``optional``): the payload, the function's slug and the range in
    ms."""
    payload = decode_json(body)
    if not isinstance(payload, dict):
        raise RequestRejected("the body is a JSON object: {"
                              + ", ".join(f'"{name}"' for name in fields) + "}")
    unknown = sorted(set(payload) - set(fields) - set(optional))
    missing = [name for name in fields if payload.get(name) is None]
    if unknown or missing:
        raise RequestRejected("; ".join(
            ([f"unknown field(s): {', '.join(unknown)}"] if unknown else [])
            + ([f"missing field(s): {', '.join(missing)}"] if missing else [])))
    slug = payload["function"]
    if not isinstance(slug, str) or not slug:
        raise RequestRejected("function: the slug of a function, e.g. my-app-send-welcome")
    since, until = _time_field(payload, "since"), _time_field(payload, "until")
    if until <= since:
        raise RequestRejected("until: must be after since")
    return payload, slug, since, until


def dry_run(payload: dict[str, Any]) -> bool:
    """``dry_run``: true asks how many runs a bulk request would touch, and touches none."""
    value = payload.get("dry_run", False)
    if not isinstance(value, bool):
        raise RequestRejected("dry_run: true or false")
    return value


def _time_field(payload: dict[str, Any], name: str) -> int:
    value = payload[name]
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_MILLIS:
            raise RequestRejected(f"{name}: milliseconds from 0 to {MAX_MILLIS}")
        return value
    if isinstance(value, str):
        return parse_time(name, value)
    raise RequestRejected(f"{name}: an ISO-8601 time or milliseconds since the epoch")
