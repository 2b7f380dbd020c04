"""Events routed in the transaction that stores them (SQLite): a merged group commit that is
undone and run again request by request starts each event's runs once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

import tidings
from tests.conftest import make_settings
from tidings.core import Core
from tidings.engine import runtime as runtime_module
from tidings.engine.runtime import Runtime, native_queue
from tidings.events.model import NewEvent
from tidings.events.parse import parse_events
from tidings.ids import now_ms
from tidings.router.route import route_new
from tidings.runs.model import COMPLETED, Run


async def test_a_merged_append_undone_and_redone_alone_starts_its_run_once(
        sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two requests' appends are merged into one savepoint; the first routes (its run is
    inserted and leased to the local executor), the second's routing fails, so the writer
    undoes both and runs each again alone. The first's run from the undone attempt is void:
    only the redone attempt's run is handed to the executor, and the function is called once,
    in the run that is stored."""
    core = await Core.start(make_settings(sqlite_url, tmp_path))
    client = tidings.Tidings(app_id="app")
    called: list[str] = []

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"))
    async def f(ctx: tidings.Context) -> Any:
        called.append(ctx.run_id)
        return "done"

    routings: list[list[str]] = []  # the ids of each routing's events

    def spy(tx: Any, registry: Any, rows: Any, *args: Any, **kwargs: Any) -> Any:
        routings.append([row.id for row in rows])
        return route_new(tx, registry, rows, *args, **kwargs)

    monkeypatch.setattr(runtime_module, "route_new", spy)
    runtime = Runtime(core, [client])
    await runtime.start()
    try:
        assert runtime.env is not None
        env_id = runtime.env.id
        now = now_ms()
        good = parse_events(msgspec.json.encode({"name": "go", "data": {"n": 1}}),
                            core.settings.limits, now)
        # Stored data that cannot be decoded: routing it fails once a function listens, after
        # the first request's events were routed in the same savepoint.
        bad = [NewEvent(name="go", data=b"{not json", user={}, key=None, ts=now)]
        stored, failed = await asyncio.gather(core.ingest.append(env_id, good),
                                              core.ingest.append(env_id, bad),
                                              return_exceptions=True)
        assert isinstance(failed, Exception)
        assert isinstance(stored, list)
        (event_id,) = stored
        # The merged attempt routed the good event, then it was routed again alone.
        assert routings.count([event_id]) == 2

        executor = runtime.executors[native_queue("app")]
        deadline = time.monotonic() + 30
        runs: list[Run] = []
        while time.monotonic() < deadline:
            rows = await core.storage.read(lambda tx: tx.all("runs_of_env", (env_id,)))
            runs = [Run.from_row(row) for row in rows]
            if (runs and all(run.status == COMPLETED for run in runs)
                    and not executor._inflight):
                break
            await asyncio.sleep(0.02)
        (run,) = runs
        assert run.status == COMPLETED and run.event_id == event_id
        assert called == [run.id]
        assert executor._reserved == 0
    finally:
        await runtime.stop(grace=5)
        await core.close()
