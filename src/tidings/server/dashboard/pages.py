"""What every page of the dashboard shares: the templates, the assets, the live feed, the
environment the viewer looks at, and the checks every action passes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from tidings.core import Core
from tidings.errors import RequestRejected
from tidings.server.dashboard.assets import Assets
from tidings.server.dashboard.live import Feed
from tidings.server.dashboard.render import environment
from tidings.server.dashboard.session import BRANCH_COOKIE, Session, Sessions
from tidings.server.dashboard.timeline import lanes_html
from tidings.server.http import read_body
from tidings.server.run_levers import RunLevers
from tidings.storage.base import Environment
from tidings.storage.tx import Tx

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
    """Who looks, at what: the environment every read and action of the request is for (a
    branch, when one is chosen), the environment their key opens, and their CSRF token."""

    env: Environment
    home: Environment
    branches: list[Environment]
    csrf: str
    session: Session


class Pages:
    """The shared parts, handed to each group of pages."""

    def __init__(self, core: Core, feed: Feed, levers: RunLevers) -> None:
        self.core = core
        self.feed = feed
        self.levers = levers
        self.sessions = Sessions(core)
        self.assets = Assets()
        self.templates = environment()
        self.templates.globals["lanes"] = lanes_html  # a run's timeline, drawn in Python
        self.dev = core.settings.dev

    async def viewer(self, request: Request) -> Viewer:
        """The viewer of a request (``SignInRequired`` under ``serve`` without a session), kept
        for the page it renders."""
        session = await self.sessions.current(request)
        home = session.env
        branches = await self.core.storage.read(partial(branches_of, env_id=home.id))
        chosen = request.cookies.get(BRANCH_COOKIE, "")
        env = next((branch for branch in branches if branch.name == chosen), home)
        viewer = Viewer(env=env, home=home, branches=branches, session=session,
                        csrf=await self.sessions.csrf(session))
        request.state.viewer = viewer
        return viewer

    def check_origin(self, request: Request) -> None:
        """A form posted from this dashboard: its ``Origin`` (or ``Referer``) is this host, so
        another site open in the browser cannot post to it."""
        origin = request.headers.get("origin") or request.headers.get("referer") or ""
        host = request.headers.get("host", "")
        if not origin or urlsplit(origin).netloc != host:
            raise RequestRejected("this action is taken from the dashboard's own pages only "
                                  "(the request's Origin is another site)", status=403)

    async def form(self, request: Request, *, csrf: bool = True) -> dict[str, str]:
        """The fields of a form posted by an action of this dashboard (same origin, and its
        CSRF token unless ``csrf`` is false: the sign-in form, which has no session yet), read
        within the body limit every request has."""
        self.check_origin(request)
        body = await read_body(request.scope, request.receive,
                               self.core.settings.limits.max_body_bytes)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if body and kind != "application/x-www-form-urlencoded":
            raise RequestRejected("content-type: a form of the dashboard is sent as "
                                  "application/x-www-form-urlencoded", status=415)
        try:
            fields = dict(parse_qsl(body.decode(), keep_blank_values=True, errors="strict"))
        except UnicodeDecodeError:
            raise RequestRejected("the form is not valid UTF-8") from None
        if csrf:
            viewer = await self.viewer(request)
            await self.sessions.check_csrf(viewer.session, fields.get("_csrf", ""))
        return fields

    def html(self, request: Request, template: str, code: int = 200,
             **context: Any) -> Response:
        body = self.templates.get_template(template).render(
            request=request, dev=self.dev, asset=self.assets.url, path=request.url.path,
            viewer=getattr(request.state, "viewer", None), **context)
        return HTMLResponse(body, status_code=code,
                            headers={**SECURITY_HEADERS, "cache-control": "no-store"})

    def part(self, html: Markup) -> Response:
        """A part of a page, for htmx to put in place."""
        return HTMLResponse(str(html), headers={**SECURITY_HEADERS, "cache-control": "no-store"})

    def error(self, request: Request, status: int, message: str) -> Response:
        return self.html(request, "error.html", status, status=status, message=message)


def branches_of(tx: Tx, env_id: str) -> list[Environment]:
    return [Environment(id=r[0], name=r[1], parent_id=r[2], created_at=r[3])
            for r in tx.all("branches_of", (env_id,))]
