"""Background deletes that leave the writer to ingest.

An erasure with its events and retention's housekeeping delete a chunk per transaction, chunk
after chunk, for as long as there is something to delete (100,000 events of one person, millions
of expired ones). Short transactions keep any one wait short, but back to back they would still
take the writer (and, on SQLite, the server's core) for the whole sweep, and ingest would slow
by as much. So after each chunk the sweep sleeps long enough that it takes at most ``share`` of
the process's CPU: a chunk whose statements took ``c`` of CPU (counted on the thread that ran
them) costs the process about ``cost * c`` in all (its commit's page writes, the checkpoint
copying them, ingest's threads descheduled on the shared core: ``cost`` 3, measured beside
ingest, bench/README.md), and is followed by ``cost * c * (1 - share) / share``. The sweep's
CPU, not its wall time, is what ingest loses on a loaded core: a chunk's wall time under load
is mostly its turn at the writer and the fsync, so pacing by it let housekeeping take up to
18 % of P1. ``share`` is 7 %, under the goal's 10 % with room for the
noise. The sweep always ends; beside P1 at full speed it deletes ~7,000 expired events a second.

On PostgreSQL the statements run in the database server, not on the thread: their CPU there is
not the process's, and the thread's own is only the client's share. So the pause is also at
least what leaves the sweep ``wall_share`` (10 %) of the time the chunk's write took its caller
(its wait for a connection, the statements, the commit): whichever pause is longer holds. On
SQLite that wall-time pause is the shorter one under load (above), and the CPU pause holds.

The pause is only for others: when no other write was waiting for the database as the chunk
began nor is as it ends (``Storage.backlog()``), nothing is yielded to and the next chunk
follows at once, so a sweep on an idle server runs at full speed (an erasure answered over
HTTP is not made ten times slower for nobody). Ingest at full speed keeps writes waiting, and
keeps its share.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tidings.storage.base import Storage
from tidings.storage.tx import Tx

T = TypeVar("T")
SHARE = 0.07  # of the process's CPU; ingest's goal is within 10 % while a sweep runs
COST = 3.0  # the process's CPU for a chunk, per CPU second of its own statements
WALL_SHARE = 0.1  # of the time: what the database spends elsewhere (PostgreSQL's server)


@dataclass(frozen=True, slots=True, kw_only=True)
class Pacer:
    """Writes ``fn`` and then, if other writes wanted the database meanwhile, sleeps so that
    these writes take at most ``share`` of the process's CPU and ``wall_share`` of the time;
    ``share`` 1.0 never sleeps."""

    share: float = SHARE
    cost: float = COST
    wall_share: float = WALL_SHARE
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    cpu: Callable[[], float] = time.thread_time
    clock: Callable[[], float] = time.perf_counter

    async def write(self, storage: Storage, fn: Callable[[Tx], T]) -> T:
        waiting = storage.backlog()
        spent = [0.0]

        def timed(tx: Tx) -> T:
            began = self.cpu()
            try:
                return fn(tx)
            finally:
                spent[0] = self.cpu() - began

        began = self.clock()
        result = await storage.write(timed)
        if self.share < 1.0 and (waiting or storage.backlog()):
            took = self.clock() - began
            await self.sleep(max(spent[0] * self.cost * (1.0 - self.share) / self.share,
                                 took * (1.0 - self.wall_share) / self.wall_share))
        return result


PACED = Pacer()  # background sweeps: at most 7 % of the process's CPU, 10 % of the time
UNPACED = Pacer(share=1.0)
