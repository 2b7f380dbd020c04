"""The people behind events, under ``/v1/users``: export a person (``privacy/export.py``),
erase a person (``privacy/erase.py``).

A person is named by the ``external_id`` of their events' ``user`` objects, in the environment
of the API key (or its ``x-inngest-env`` branch). Under ``serve`` both need an API key with the
reads-user permission, as the dashboard's erase button needs a session with it: whoever may
erase a person may read them; ``dev`` is open.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.core import Core
from tidings.errors import RequestRejected
from tidings.privacy.erase import EVENTS_MODES, EventsMode, erase
from tidings.privacy.export import export_page
from tidings.runs.local import ALL
from tidings.server.requests import (
    ULID_RE,
    bearer,
    check_params,
    json_response,
    limit_param,
    read_access,
)

# The dashboard's erase button asks the same of its session (dashboard/events.py).
_NEEDS_READS_USER = ("{what} needs an API key with the reads-user permission (tidings keys "
                     "create --kind api --reads-user)")


class PersonConvertor(Convertor[str]):
    """An ``external_id`` in a path: any text, slashes too, but not ending in ``/events``
    (that path is the person's export, where a DELETE is a 405, not an erasure of someone
    whose id ends so; ``tidings users erase`` erases them). Line breaks are text too."""

    regex = r"(?![\s\S]*/events\Z)[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class PersonPathConvertor(PersonConvertor):
    """An ``external_id`` before ``/events``: any text, slashes and line breaks too."""

    regex = r"[\s\S]*"


register_url_convertor("person", PersonConvertor())
register_url_convertor("person_path", PersonPathConvertor())


def external_id_param(request: Request, max_chars: int) -> str:
    """The ``external_id`` of the path: not empty, at most ``max_chars``, no NUL."""
    external_id: str = request.path_params["external_id"]
    raw = request.scope.get("raw_path")
    if raw is not None:
        try:
            unquote_to_bytes(raw).decode()
        except UnicodeDecodeError:
            # The server decoded it with U+FFFD in place: that would erase someone else.
            raise RequestRejected("external_id: not valid UTF-8 (percent-encode UTF-8 "
                                  "bytes)") from None
    if not external_id:
        raise RequestRejected("external_id: must not be empty")
    if len(external_id) > max_chars:
        raise RequestRejected(f"external_id: at most {max_chars} characters")
    if "\x00" in external_id:
        raise RequestRejected("external_id: must not contain NUL characters")
    return external_id


def events_mode_param(request: Request) -> EventsMode:
    raw = request.query_params.get("events", "keep")
    for mode in EVENTS_MODES:
        if raw == mode:
            return mode
    raise RequestRejected(f"events: expected keep or delete, got {raw[:100]!r}")


def actor(request: Request, dev: bool) -> str:
    """Who asked, for the audit record: the API key's prefix (as ``tidings keys list`` shows
    it), never the key."""
    key = bearer(request)
    if dev and not key:
        return "api:dev"
    return "api:" + key[:10]


class UsersAPI:
    def __init__(self, core: Core) -> None:
        self.core = core

    def routes(self) -> list[Route]:
        return [Route("/v1/users/{external_id:person_path}/events", self.export, methods=["GET"]),
                Route("/v1/users/{external_id:person}", self.erase, methods=["DELETE"])]

    async def export(self, request: Request) -> Response:
        """A page of the person's events, newest first, decrypted, with their runs."""
        check_params(request, {"cursor", "limit"})
        access = await read_access(self.core, request)
        external_id = external_id_param(request, self.core.settings.limits.max_id_chars)
        limit = limit_param(request)
        cursor = request.query_params.get("cursor") or None
        if cursor is not None and not ULID_RE.fullmatch(cursor):
            raise RequestRejected(f"cursor: not a cursor this API returned: {cursor[:100]!r}")
        if not access.reads_user:
            raise RequestRejected(_NEEDS_READS_USER.format(what="exporting a person's events"),
                                  status=403)
        env = access.env
        page = await export_page(self.core.storage, self.core.vault, env.id, external_id,
                                 cursor=cursor, limit=limit)
        return json_response(200, {"data": page.events, "cursor": page.cursor})

    async def erase(self, request: Request) -> Response:
        check_params(request, {"events"})
        access = await read_access(self.core, request)
        external_id = external_id_param(request, self.core.settings.limits.max_id_chars)
        mode = events_mode_param(request)
        if not access.reads_user:
            raise RequestRejected(_NEEDS_READS_USER.format(what="erasing a person"),
                                  status=403)
        done = await erase(self.core.storage, self.core.vault, access.env.id, external_id,
                           events=mode, actor=actor(request, self.core.settings.dev))
        if done.runs_cancelled:
            self.core.wakers.wake(ALL)  # cancelled runs may have freed slots or parents
        return json_response(200, {"data": done.to_json()})
