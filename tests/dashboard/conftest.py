"""Browser fixtures: headless Chromium from Debian's ``chromium`` package (Playwright's own
browser download is not reachable here; ``make test`` installs the package), driving a real
``tidings dev`` process. Screenshots go to ``artifacts/dashboard/`` (not committed)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, UNDER_CI, LiveServer, start_server, stop_server

CHROMIUM = os.environ.get("TIDINGS_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("TIDINGS_ARTIFACTS", ROOT / "artifacts")) / "dashboard"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        message = f"no Chromium at {CHROMIUM}: `apt-get install chromium` (make test does it)"
        if UNDER_CI:
            pytest.fail(message)
        pytest.skip(message)
    return {**browser_type_launch_args, "executable_path": CHROMIUM,
            "args": ["--no-sandbox", "--disable-dev-shm-usage"]}


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[LiveServer]:
    server = start_server(tmp_path, "--db", str(tmp_path / "dash.db"))
    yield server
    stop_server(server)


def shoot(page: Any, name: str) -> Path:
    """A full-page screenshot under ``artifacts/dashboard/``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
