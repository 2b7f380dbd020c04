"""Helpers for tests that drive the app in-process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tidings.core import Core
from tidings.server import create_app
from tidings.settings import Settings


@contextlib.asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Core]]:
    core = await Core.start(settings)
    try:
        transport = httpx.ASGITransport(app=create_app(settings, core))
        async with httpx.AsyncClient(transport=transport, base_url="http://tidings") as http:
            yield http, core
    finally:
        await core.close()


async def all_events(http: httpx.AsyncClient, **headers: str) -> list[dict[str, Any]]:
    reply = await http.get("/v1/events", params={"limit": 1000}, headers=headers)
    assert reply.status_code == 200, reply.text
    data: list[dict[str, Any]] = reply.json()["data"]
    return data
