"""What every page of the dashboard shares: the templates, the assets, the live feed, the
environment the viewer looks at, and the checks every action passes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from tidings.core import Core
from tidings.errors import RequestRejected
from tidings.keys import DEV_ENV
from tidings.server.dashboard.assets import Assets
from tidings.server.dashboard.live import Feed
from tidings.server.dashboard.render import environment
from tidings.server.http import read_body
from tidings.server.run_levers import RunLevers
from tidings.storage.base import Environment

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    # Inline scripts are not used: everything runs from the hashed files under /static/.
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self'; script-src 'self'; frame-ancestors 'none'",
}


class NotFoundPage(Exception):
    """Answered with the 404 page, naming what was not found."""

    def __init__(self, what: str, ident: str) -> None:
        super().__init__(f"{what} {ident[:100]!r} not found")
        self.what = what
        self.ident = ident[:100]


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who looks, at what: the environment every read and action of the request is for."""

    env: Environment


class Pages:
    """The shared parts, handed to each group of pages."""

    def __init__(self, core: Core, feed: Feed, levers: RunLevers) -> None:
        self.core = core
        self.feed = feed
        self.levers = levers
        self.assets = Assets()
        self.templates = environment()
        self.dev = core.settings.dev

    async def viewer(self, request: Request) -> Viewer:
        """The viewer of a request. ``tidings dev`` is open (it listens on loopback); under
        ``serve`` the dashboard needs a sign-in, which this version does not offer yet, so it
        refuses rather than show production data to anyone."""
        if not self.dev:
            raise RequestRejected("the dashboard is served by `tidings dev` only in this "
                                  "version; under `tidings serve` use the JSON API", status=404)
        return Viewer(env=await self.core.gate.env_for(DEV_ENV, "api"))

    def check_action(self, request: Request) -> None:
        """A form posted from this dashboard: its ``Origin`` (or ``Referer``) is this host, so
        another site open in the browser cannot post to it."""
        origin = request.headers.get("origin") or request.headers.get("referer") or ""
        host = request.headers.get("host", "")
        if not origin or urlsplit(origin).netloc != host:
            raise RequestRejected("this action is taken from the dashboard's own pages only "
                                  "(the request's Origin is another site)", status=403)

    async def form(self, request: Request) -> dict[str, str]:
        """The fields of a posted form (``application/x-www-form-urlencoded``, UTF-8), read
        within the body limit every request has."""
        self.check_action(request)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise RequestRejected("content-type: a form of the dashboard is sent as "
                                  "application/x-www-form-urlencoded", status=415)
        body = await read_body(request.scope, request.receive,
                               self.core.settings.limits.max_body_bytes)
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            raise RequestRejected("the form is not valid UTF-8") from None
        return dict(pairs)

    def html(self, request: Request, template: str, code: int = 200,
             **context: Any) -> Response:
        body = self.templates.get_template(template).render(
            request=request, dev=self.dev, asset=self.assets.url, path=request.url.path,
            **context)
        return HTMLResponse(body, status_code=code,
                            headers={**SECURITY_HEADERS, "cache-control": "no-store"})

    def error(self, request: Request, status: int, message: str) -> Response:
        return self.html(request, "error.html", status, status=status, message=message)
