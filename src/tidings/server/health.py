"""``/health`` and ``/ready``: what a process supervisor (a Kubernetes probe, a load balancer)
asks of a Tidings process, answered with a status and a short JSON body.

*Live* (``/health``): the process answers and every one of its long-lived loops runs (those
retrying after a failure are listed as ``failing``). A loop dead for good makes it 503: the
process then exits on its own too (``supervision.py``), and a supervisor that restarts on a
failed liveness probe does the same.

*Ready* (``/ready``): it can do its work now — the database answers a read, its schema is at
the version this release expects, and a write transaction runs a statement and commits (on
SQLite through the single writer thread, which proves that thread alive), each within
``READY_TIMEOUT`` seconds. A database
outage makes it 503 without the process being unhealthy: take it out of the load balancer,
do not restart it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.core import Core
from tidings.server.requests import json_response
from tidings.storage.migrations import schema_version
from tidings.storage.sql import migration_files
from tidings.supervision import describe

READY_TIMEOUT = 2.0
T = TypeVar("T")
_LEFT: set[asyncio.Future[Any]] = set()  # calls timed out, still ending (kept from the GC)


def live(core: Core) -> tuple[int, dict[str, Any]]:
    """Status and body of ``/health``."""
    report = core.supervisor.report()
    if not report.healthy:
        dead = "; ".join(f"{name}: {error}" for name, error in report.dead.items())
        return 503, {"status": 503, "message": f"stopped for good: {dead}",
                     "dead": report.dead, "failing": report.failing}
    if report.failing:
        return 200, {"status": 200, "message": "OK, retrying after failures",
                     "failing": report.failing}
    return 200, {"status": 200, "message": "OK"}


async def ready(core: Core) -> tuple[int, dict[str, Any]]:
    """Status and body of ``/ready``: each check named with ``ok`` or what failed."""
    storage = core.storage
    checks: dict[str, str] = {}
    try:
        version = await _within(storage.read(schema_version))
        checks["database"] = "ok"
        expected = max((v for v, _, _ in migration_files(storage.dialect)), default=0)
        checks["migrations"] = ("ok" if version == expected else
                                f"the schema is at version {version}, this release expects "
                                f"{expected}: run `tidings migrate`")
    except Exception as exc:
        checks["database"] = _failed(exc)
        checks["migrations"] = "unknown: the database did not answer"
    try:
        await _within(storage.write(lambda tx: tx.run("ready_probe")))
        checks["writer"] = "ok"
    except Exception as exc:
        checks["writer"] = _failed(exc)
    report = core.supervisor.report()
    if report.dead:
        checks["loops"] = "stopped for good: " + "; ".join(
            f"{name}: {error}" for name, error in report.dead.items())
    failed = {name: text for name, text in checks.items() if text != "ok"}
    if failed:
        return 503, {"status": 503, "message": "not ready: " + ", ".join(failed),
                     "checks": checks}
    return 200, {"status": 200, "message": "ready", "checks": checks}


class HealthAPI:
    """``/health`` and ``/ready``; lenient with query parameters, as Inngest's is."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def routes(self) -> list[Route]:
        return [Route("/health", self.health, methods=["GET"]),
                Route("/ready", self.ready, methods=["GET"])]

    async def health(self, request: Request) -> Response:
        return json_response(*live(self.core))

    async def ready(self, request: Request) -> Response:
        return json_response(*await ready(self.core))


async def _within(call: Coroutine[Any, Any, T]) -> T:
    """``call``'s result, or ``TimeoutError`` after ``READY_TIMEOUT`` seconds. A call that
    takes longer is cancelled and left to end on its own: a database call in a thread ends only
    once its statement has (``storage/threads.py``), which the answer does not wait for."""
    task = asyncio.ensure_future(call)
    done, _ = await asyncio.wait({task}, timeout=READY_TIMEOUT)
    if not done:
        task.cancel()
        _LEFT.add(task)
        task.add_done_callback(_LEFT.discard)
        raise TimeoutError
    return task.result()


def _failed(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {READY_TIMEOUT:g} s"
    return describe(exc)
