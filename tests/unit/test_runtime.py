"""Which queues a process's runtime executes: a server calls SDK apps (queue ``http``, and the
Jobs of Trigger.dev v2 apps on queue ``trigger``) unless started with ``--no-http``; a runtime
without native apps registers nothing of its own."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import make_settings
from tidings.runs.model import HTTP_QUEUE
from tidings.server import create_app
from tidings.triggerdev.wire import TRIGGER_QUEUE


async def test_a_server_calls_sdk_apps_unless_told_not_to(sqlite_url: str,
                                                          tmp_path: Path) -> None:
    for http in (True, False):
        app = create_app(make_settings(sqlite_url, tmp_path), http=http)
        async with app.running():
            assert app.runtime is not None
            assert list(app.runtime.executors) == ([HTTP_QUEUE, TRIGGER_QUEUE] if http else [])
            assert app.runtime.env is None
