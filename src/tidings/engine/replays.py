"""Replays under way in this process. Each reruns ``BATCH`` runs per transaction until none
are left; the runs left are in the database (``replay_sources``), so a process that starts
continues the replays that a stopped one left unfinished."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial

from tidings.functions.model import FunctionRow
from tidings.ids import now_ms
from tidings.runs import admin
from tidings.storage.base import Storage
from tidings.supervision import Supervisor

log = logging.getLogger("tidings.replays")

BATCH = 500


class Replays:
    def __init__(self, storage: Storage, wake: Callable[[str], None], *,
                 supervisor: Supervisor) -> None:
        self._storage = storage
        self._wake = wake
        self._supervisor = supervisor
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def carry_on(self, replay_id: str, fn: FunctionRow) -> None:
        """Rerun the rest of the replay's runs, in the background."""
        if replay_id in self._tasks:
            return
        task = self._supervisor.start(f"tidings-replay-{replay_id}",
                                      partial(self._run, replay_id, fn))
        self._tasks[replay_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(replay_id, None))

    async def resume(self) -> int:
        """Carry on every unfinished replay; how many there were."""
        found = await self._storage.write(admin.unfinished_replays)
        for replay_id, fn in found:
            log.info("continuing replay %s of %s", replay_id, fn.slug)
            self.carry_on(replay_id, fn)
        return len(found)

    async def stop(self) -> None:
        """Stop between batches; what is left stays for the next process."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, replay_id: str, fn: FunctionRow, ok: Callable[[], None]) -> None:
        """Rerun the replay's runs a batch at a time until none are left; after a failure its
        supervisor starts it again, and it goes on where the database says it stopped."""
        more = True
        while more:
            more = await self._storage.write(partial(
                admin.continue_replay, replay_id=replay_id, fn=fn, now=now_ms(), batch=BATCH))
            ok()
            self._wake(fn.queue)
