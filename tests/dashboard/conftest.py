"""Browser fixtures: headless Chromium from Debian's ``chromium`` package (Playwright's own
browser download is not reachable here; ``make test`` installs the package), driving a real
``tidings dev`` process. Screenshots go to ``artifacts/dashboard/`` (not committed).

Playwright's async API with fixtures of our own, one browser per test: the pytest-playwright
plugin's sync fixtures keep an event loop running in the main thread for the whole session
(every pytest-asyncio test after the first browser test then fails with "Runner.run() cannot
be called from a running event loop"), and its asyncio variant needs session-scoped fixture
loops, which the rest of the suite does not use."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, async_playwright, expect

from tests.conftest import ROOT, UNDER_CI, LiveServer, start_server, stop_server

# Assertions poll until this deadline: generous, because CI machines are small and busy; a
# page that is right passes as soon as it is.
expect.set_options(timeout=15_000)

CHROMIUM = os.environ.get("TIDINGS_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("TIDINGS_ARTIFACTS", ROOT / "artifacts")) / "dashboard"


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 (once per test, before any I/O)
        message = f"no Chromium at {CHROMIUM}: `apt-get install chromium` (make test does it)"
        if UNDER_CI:
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            yield await context.new_page()
        finally:
            await browser.close()


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[LiveServer]:
    """``tidings dev`` running the functions of ``shop_app`` (retries 50 ms apart)."""
    server = start_server(tmp_path, "--db", str(tmp_path / "dash.db"), "-a",
                          "tests.dashboard.shop_app:client", "--retry-interval", "0.05",
                          env={"PYTHONPATH": str(ROOT)})
    yield server
    stop_server(server)


async def shoot(page: Any, name: str) -> Path:
    """A full-page screenshot under ``artifacts/dashboard/``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
