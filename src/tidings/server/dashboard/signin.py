"""Signing in and out under ``tidings serve``, and choosing a branch environment."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tidings.errors import RequestRejected
from tidings.ids import now_ms
from tidings.server.dashboard.pages import Pages
from tidings.server.dashboard.session import BRANCH_COOKIE, COOKIE, TTL_MS, secure_cookie


class SignInPages:
    def __init__(self, pages: Pages) -> None:
        self.pages = pages

    def routes(self) -> list[Route]:
        return [
            Route("/signin", self.sign_in, methods=["GET", "POST"]),
            Route("/signout", self.sign_out, methods=["POST"]),
            Route("/env", self.choose_env, methods=["POST"]),
        ]

    async def sign_in(self, request: Request) -> Response:
        after = _local(request.query_params.get("next", "/"))
        if request.method == "GET":
            return self.pages.html(request, "signin.html", error=None, after=after)
        form = await self.pages.form(request, csrf=False)  # no session yet: Origin only
        after = _local(form.get("next", "/"))
        try:
            token, _ = await self.pages.sessions.sign_in(form.get("key", ""), now_ms())
        except RequestRejected as exc:
            return self.pages.html(request, "signin.html", 401, error=exc.message,
                                   after=after)
        response = RedirectResponse(after, status_code=303)
        response.set_cookie(COOKIE, token, max_age=TTL_MS // 1000, httponly=True,
                            secure=secure_cookie(request), samesite="strict", path="/")
        response.delete_cookie(BRANCH_COOKIE, path="/")
        return response

    async def sign_out(self, request: Request) -> Response:
        await self.pages.form(request)
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        response.delete_cookie(BRANCH_COOKIE, path="/")
        return response

    async def choose_env(self, request: Request) -> Response:
        """Look at a branch environment of the viewer's (or back at their own)."""
        form = await self.pages.form(request)
        viewer = await self.pages.viewer(request)
        chosen = form.get("env", "")
        names = {branch.name for branch in viewer.branches}
        if chosen and chosen != viewer.home.name and chosen not in names:
            raise RequestRejected(f"env: {chosen[:100]!r} is not a branch of "
                                  f"{viewer.home.name!r}")
        response = RedirectResponse(_local(form.get("next", "/")), status_code=303)
        if chosen in names:
            response.set_cookie(BRANCH_COOKIE, chosen, httponly=True, samesite="strict",
                                secure=secure_cookie(request), path="/")
        else:
            response.delete_cookie(BRANCH_COOKIE, path="/")
        return response


def _local(path: str) -> str:
    """A path on this site only (never ``//other.host`` or a full URL): where to go next."""
    return path if path.startswith("/") and not path.startswith("//") else "/"


def sign_in_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/signin?" + urlencode({"next": target})
