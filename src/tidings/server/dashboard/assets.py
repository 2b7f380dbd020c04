"""The dashboard's static files, read from the installed package (``importlib.resources``: they
ship inside the wheel, no build step) and served under names that hold a hash of their content
(``dashboard.3f9a0c1b2d.css``), so they can be cached for a year and still change at once
when Tidings is upgraded."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable

from starlette.requests import Request
from starlette.responses import Response

PREFIX = "/static/"
LONG_CACHE = "public, max-age=31536000, immutable"
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8"}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


class Assets:
    """Every file under ``static/`` (READMEs aside), by hashed URL."""

    def __init__(self) -> None:
        self.urls: dict[str, str] = {}  # "dashboard.css" -> "/static/dashboard.<hash>.css"
        self._served: dict[str, Asset] = {}
        self._load(resources.files("tidings.server.dashboard") / "static", "")

    def _load(self, folder: Traversable, under: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                self._load(entry, f"{under}{entry.name}/")
                continue
            stem, dot, suffix = entry.name.rpartition(".")
            if suffix == "md" or not dot:
                continue
            body = entry.read_bytes()
            digest = hashlib.sha256(body).hexdigest()[:12]
            hashed = f"{under}{stem}.{digest}.{suffix}"
            self.urls[f"{under}{entry.name}"] = PREFIX + hashed
            self._served[hashed] = Asset(body, TYPES.get(f".{suffix}", "application/octet-stream"),
                                         f'"{digest}"')

    def url(self, name: str) -> str:
        return self.urls[name]

    async def serve(self, request: Request) -> Response:
        asset = self._served.get(request.path_params["path"])
        if asset is None:
            return Response("not found", status_code=404, media_type="text/plain")
        headers = {"cache-control": LONG_CACHE, "etag": asset.etag,
                   "x-content-type-options": "nosniff"}
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)
