"""A database outage under a running engine (real loops, not drain mode): every loop keeps
going, the outage is logged once per loop and its end once, and every run completes once the
database is back. The SQLite writer thread dying instead stops the engine for good, loudly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

import tidings
from tests.conftest import make_settings
from tests.faults import FaultySQLite, FlakyStorage
from tidings.core import Core
from tidings.engine.backoff import Backoff
from tidings.engine.executor import EngineSettings
from tidings.engine.runtime import Runtime, native_queue
from tidings.errors import StorageStopped
from tidings.events.parse import parse_events
from tidings.ids import now_ms
from tidings.runs.model import COMPLETED
from tidings.storage import storage_for
from tidings.storage.tx import Tx

FAST = EngineSettings(lease_ms=1000, heartbeat_ms=300, idle_poll_ms=50,
                      backoff=Backoff.fixed(100))


def _client() -> tidings.Tidings:
    client = tidings.Tidings(app_id="app")

    @client.function(id="steps", trigger=tidings.TriggerEvent(event="go"))
    async def steps(ctx: tidings.Context) -> Any:
        first = await ctx.step.run("one", lambda: 1)
        return first + await ctx.step.run("two", lambda: 2)

    return client


async def _until(check: Callable[[], Any], seconds: float = 30.0, why: Any = None) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {why and why()}"
        await asyncio.sleep(0.05)


async def _send(core: Core, env_id: str, count: int) -> list[str]:
    events = [{"name": "go", "data": {"n": n}} for n in range(count)]
    parsed = parse_events(msgspec.json.encode(events), core.settings.limits, now_ms())
    return await core.ingest.append(env_id, parsed, received_at=now_ms())


@pytest.fixture
async def flaky(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[Core, FlakyStorage]]:
    storage = FlakyStorage(storage_for(db_url))
    core = await Core.start(make_settings(db_url, tmp_path), storage=storage)  # type: ignore[arg-type]
    yield core, storage
    await core.close()


async def test_every_loop_survives_an_outage_and_runs_complete_after_it(
        flaky: tuple[Core, FlakyStorage], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    core, storage = flaky
    runtime = Runtime(core, [_client()], settings=FAST)
    await runtime.start()
    try:
        assert runtime.env is not None
        env_id = runtime.env.id

        async def runs() -> list[tuple[str, str]]:
            rows = await core.storage.read(lambda tx: tx.all("runs_of_env", (env_id,)))
            return [(row[0], row[6]) for row in rows]

        async def all_completed(count: int) -> bool:
            found = await runs()
            return len(found) == count and all(s == COMPLETED for _, s in found)

        await _send(core, env_id, 5)
        await _until(lambda: all_completed(5))

        storage.failing = True
        sent = await _send(core, env_id, 20)  # stored; their routing and runs wait
        executor = f"tidings-executor[{native_queue('app')}]"

        async def loops_failing() -> bool:
            failing = core.supervisor.report().failing
            return {executor, "tidings-sweeper"} <= set(failing)

        await _until(loops_failing)
        failures = storage.failures
        await _until(lambda: _more(storage, failures + 20))  # the loops keep trying
        storage.failing = False

        await _until(lambda: all_completed(25))
        assert len(sent) == 20

        async def recovered() -> bool:
            return not core.supervisor.report().failing

        await _until(recovered, why=core.supervisor.report)
        assert all(not task.done() for task in runtime.executors[native_queue("app")]._tasks)
    finally:
        await runtime.stop()
    failed = [r.message for r in caplog.records
              if r.levelno >= logging.ERROR and r.name == "tidings.supervision"]
    assert sum(m.startswith(f"{executor} failed: ") for m in failed) == 1, failed
    assert sum(m.startswith("tidings-sweeper failed: ") for m in failed) == 1, failed
    again = [r.message for r in caplog.records if "works again" in r.message]
    assert sum(m.startswith(f"{executor} works again") for m in again) == 1, again


async def _more(storage: FlakyStorage, count: int) -> bool:
    return storage.failures >= count


async def test_the_sqlite_writer_dying_stops_the_engine_loudly(
        sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    switch = FaultySQLite(tmp_path / "faults")
    switch.install(monkeypatch.setattr)
    stopped: list[str] = []
    core = await Core.start(make_settings(sqlite_url, tmp_path), on_dead=stopped.append)
    runtime = Runtime(core, [_client()], settings=FAST)
    await runtime.start()
    try:
        switch.switch.write_text("die")

        async def dead() -> bool:
            return bool(core.supervisor.report().dead)

        await _until(dead)
        assert stopped and "stopped for good: StorageStopped: the SQLite writer thread " \
            "stopped" in stopped[0]
        def nothing(tx: Tx) -> None:
            return None

        with pytest.raises(StorageStopped):
            await core.storage.write(nothing)
    finally:
        switch.switch.unlink()
        with contextlib.suppress(StorageStopped):
            await runtime.stop(grace=0)
        await core.close()


async def test_a_run_whose_hand_back_failed_in_an_outage_is_due_again_when_it_ends(
        flaky: tuple[Core, FlakyStorage]) -> None:
    """A call cut off by an outage hands its run back; when the database cannot take even
    that, the run is freed as soon as the database answers again, not when its lease
    expires (a minute here: the test's deadline is ten seconds)."""
    core, storage = flaky
    started, go = asyncio.Event(), asyncio.Event()
    client = tidings.Tidings(app_id="app")

    @client.function(id="held", trigger=tidings.TriggerEvent(event="go"))
    async def held(ctx: tidings.Context) -> Any:
        async def step() -> int:
            started.set()
            await go.wait()
            return 1

        return await ctx.step.run("one", step)

    settings = EngineSettings(lease_ms=60_000, heartbeat_ms=30_000, idle_poll_ms=60_000,
                              backoff=Backoff.fixed(100))
    runtime = Runtime(core, [client], settings=settings)
    await runtime.start()
    try:
        assert runtime.env is not None
        env_id = runtime.env.id
        await _send(core, env_id, 1)
        await asyncio.wait_for(started.wait(), 30)
        executor = runtime.executors[native_queue("app")]
        storage.failing = True
        go.set()  # the step's result cannot be recorded, nor the run handed back

        async def call_ended() -> bool:
            return not executor._inflight

        await _until(call_ended)
        storage.failing = False

        async def completed() -> bool:
            rows = await core.storage.read(lambda tx: tx.all("runs_of_env", (env_id,)))
            return [row[6] for row in rows] == [COMPLETED]

        await _until(completed, seconds=10)
    finally:
        await runtime.stop()
