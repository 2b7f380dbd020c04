"""The supervisor: a failing loop is started again with capped backoff, its outage logged once
and its recovery once; a loop that dies for good makes the process unhealthy and says so."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings
from tests.faults import Death
from tidings.core import Core
from tidings.errors import DatabaseUnavailable, StorageStopped
from tidings.server import create_app
from tidings.supervision import Outage, Supervisor


async def _until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_backoff_doubles_up_to_its_cap() -> None:
    outage = Outage("loop", first_delay=0.1, max_delay=2.0)
    delays = [outage.failed(RuntimeError("x")) for _ in range(8)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    outage.ok()
    assert outage.failed(RuntimeError("x")) == 0.1


async def test_a_failing_loop_restarts_and_logs_once_per_outage(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tidings.supervision")
    supervisor = Supervisor(first_delay=0.001, max_delay=0.004)
    starts = 0
    failing = True
    worked = asyncio.Event()

    async def body(ok: Callable[[], None]) -> None:
        nonlocal starts
        starts += 1
        while True:
            if failing:
                raise DatabaseUnavailable("the database is away")
            ok()
            worked.set()
            await asyncio.sleep(3600)

    task = supervisor.start("test-loop", body)
    await _until(lambda: starts >= 20)
    assert supervisor.report().failing == {
        "test-loop": "DatabaseUnavailable: the database is away"}
    failing = False
    await asyncio.wait_for(worked.wait(), 10)
    assert supervisor.report().failing == {}
    assert not task.done()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "test-loop failed: DatabaseUnavailable: the database is away" in errors[0].message
    recovered = [r.message for r in caplog.records if "works again" in r.message]
    assert len(recovered) == 1 and recovered[0].startswith("test-loop works again after")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_new_kind_of_failure_is_logged_again(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor(first_delay=0.001, max_delay=0.001)
    errors: list[Exception] = [DatabaseUnavailable("away"), DatabaseUnavailable("away"),
                               TypeError("a bug")]
    done = asyncio.Event()

    async def body(ok: Callable[[], None]) -> None:
        if errors:
            raise errors.pop(0)
        done.set()

    await supervisor.start("test-loop", body)
    assert done.is_set()
    logged = [r.message for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(logged) == 2 and "TypeError: a bug" in logged[1]


@pytest.mark.parametrize("death", [Death("panic"), StorageStopped("the writer died")])
async def test_a_loop_dead_for_good_is_reported_and_stops_the_process(
        death: BaseException, sqlite_url: str, tmp_path: Path) -> None:
    stopped: list[str] = []
    core = await Core.start(make_settings(sqlite_url, tmp_path), on_dead=stopped.append)
    try:
        app = create_app(core.settings, core)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://tidings") as http:
            assert (await http.get("/health")).status_code == 200

            async def body(ok: Callable[[], None]) -> None:
                raise death

            await core.supervisor.start("test-loop", body)
            assert stopped == [f"test-loop stopped for good: {type(death).__name__}: {death}"]
            reply = await http.get("/health")
            assert reply.status_code == 503
            assert reply.json()["dead"] == {"test-loop": f"{type(death).__name__}: {death}"}
    finally:
        await core.close()
