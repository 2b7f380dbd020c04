"""``GET /health``: whether every long-lived loop of the process runs."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.core import Core
from tidings.server.requests import json_response


class HealthAPI:
    def __init__(self, core: Core) -> None:
        self.core = core

    def routes(self) -> list[Route]:
        return [Route("/health", self.health, methods=["GET"])]

    async def health(self, request: Request) -> Response:
        """200 while every long-lived loop of the process runs (those retrying after a failure
        are listed under ``failing``); 503 once one is dead for good (the process then exits,
        see ``supervision.py``)."""
        report = self.core.supervisor.report()
        if not report.healthy:
            dead = "; ".join(f"{name}: {error}" for name, error in report.dead.items())
            return json_response(503, {"status": 503, "message": f"stopped for good: {dead}",
                                       "dead": report.dead, "failing": report.failing})
        if report.failing:
            return json_response(200, {"status": 200, "message": "OK, retrying after failures",
                                       "failing": report.failing})
        return json_response(200, {"status": 200, "message": "OK"})
