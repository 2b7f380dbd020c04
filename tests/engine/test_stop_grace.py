"""A worker stopping: a call still running when the grace ends is abandoned, and its run's
lease is left to lapse rather than handed back, because cancelling the call does not stop its
code (here a synchronous step in its thread) and a worker taking the run at once would run the
step beside it."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import tidings
from tidings.core import Core
from tidings.engine.runtime import Runtime
from tidings.events.parse import parse_events
from tidings.ids import now_ms
from tidings.keys import ensure_env
from tidings.runs.model import Run
from tidings.storage.tx import Tx


async def test_a_call_cut_off_at_the_grace_keeps_its_lease(core: Core) -> None:
    entered, release = threading.Event(), threading.Event()
    app = tidings.Tidings(app_id="cutoff")

    def slow() -> str:
        entered.set()
        release.wait(60)
        return "done"

    @app.function(id="f", trigger=tidings.TriggerEvent(event="cutoff/go"))
    def f(ctx: tidings.Context) -> Any:
        return ctx.step.run("slow", slow)

    runtime = Runtime(core, [app], env="dev")
    await runtime.start()
    try:
        env = await core.storage.write(lambda tx: ensure_env(tx, "dev"))
        events = parse_events(b'{"name": "cutoff/go"}', core.settings.limits, now_ms())
        await core.ingest.append(env.id, events)
        assert await asyncio.to_thread(entered.wait, 30), "the step never started"
        await runtime.stop(grace=0.1)

        def runs(tx: Tx) -> list[Run]:
            return [Run.from_row(r) for r in tx.all("runs_of_env", (env.id,))]

        (run,) = await core.storage.read(runs)
        assert run.lease_owner is not None, "the lease was handed back while the step ran"
        assert run.lease_until is not None and run.lease_until > now_ms()
    finally:
        release.set()
