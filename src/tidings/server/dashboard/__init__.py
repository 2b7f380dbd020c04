"""The dashboard at ``/``: server-rendered pages (Jinja2, htmx and its SSE extension, a little
plain JavaScript), for people, beside the JSON API, for programs. Every page reads and acts
through the internals the JSON API uses; nothing is decided in a template.

``Dashboard(core).routes()`` is what ``server/app.py`` mounts. They are not JSON endpoints: they
answer HTML (a 404 page for what does not exist, the API's own message next to the field it
names for bad input), and they are not in the OpenAPI document.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from tidings.apps.sync import AppSync
from tidings.connect.hub import Hub
from tidings.core import Core
from tidings.errors import RequestRejected
from tidings.server.dashboard.catalog import CatalogPages
from tidings.server.dashboard.events import EventPages
from tidings.server.dashboard.live import Feed
from tidings.server.dashboard.pages import NotFoundPage, Pages
from tidings.server.dashboard.runs import RunPages
from tidings.server.dashboard.session import SignInRequired
from tidings.server.dashboard.signin import SignInPages, sign_in_url
from tidings.server.run_levers import RunLevers

log = logging.getLogger("tidings.dashboard")
Endpoint = Callable[[Request], Awaitable[Response]]


class Dashboard:
    def __init__(self, core: Core, levers: RunLevers, sync: AppSync, hub: Hub) -> None:
        self.feed = Feed(core.storage, core.supervisor)
        self.pages = Pages(core, self.feed, levers)
        self._groups: list[EventPages | RunPages | CatalogPages | SignInPages] = [
            EventPages(self.pages), RunPages(self.pages), CatalogPages(self.pages, sync, hub),
            SignInPages(self.pages)]

    async def close(self) -> None:
        """Stop hearing other processes (the live pages' listener)."""
        await self.feed.close()

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = [
            Route("/static/{path:path}", self.pages.assets.serve, methods=["GET"])]
        for group in self._groups:
            for route in group.routes():
                routes.append(Route(route.path, self._html_errors(route.endpoint),
                                    methods=list(route.methods or ()), name=route.name))
        return routes

    def _html_errors(self, endpoint: Endpoint) -> Endpoint:
        """Failures as pages: a 404 page naming what was not found, the message of a refused
        request, and (logged with the path) a 500 page."""

        @functools.wraps(endpoint)
        async def page(request: Request) -> Response:
            try:
                return await endpoint(request)
            except SignInRequired:
                if request.url.path.startswith("/live/"):
                    return Response("sign in first", status_code=401, media_type="text/plain")
                return RedirectResponse(sign_in_url(request), status_code=303)
            except NotFoundPage as exc:
                return self.pages.error(request, 404, str(exc))
            except RequestRejected as exc:
                return self.pages.error(request, exc.status, exc.message)
            except Exception:
                log.exception("dashboard page %s failed", request.url.path)
                return self.pages.error(request, 500, "internal error (logged)")

        return page
