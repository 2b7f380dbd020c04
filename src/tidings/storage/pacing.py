"""Background deletes that leave the writer to ingest.

An erasure with its events and retention's housekeeping delete a chunk per transaction, chunk
after chunk, for as long as there is something to delete (100,000 events of one person, millions
of expired ones). Short transactions keep any one wait short, but back to back they would still
take the writer (and, on SQLite, the server's core) for the whole sweep, and ingest would slow
by as much. So after each chunk the sweep sleeps long enough that its writes take at most
``share`` of the time: a chunk that took ``t`` (its write as the caller waited for it: its turn at
the writer, its statements, the commit it shares) is followed by ``t * (1 - share) / share``.
Under load a write waits longer, so the pause grows with the load; the sweep takes ``1 / share``
times as long as it would alone, and always ends.

The pause is only for others: when no other write was waiting for the database as the chunk
began nor is as it ends (``Storage.backlog()``), nothing is yielded to and the next chunk
follows at once, so a sweep on an idle server runs at full speed (an erasure answered over
HTTP is not made ten times slower for nobody). Ingest at full speed keeps writes waiting, and
gets its nine tenths.
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
SHARE = 0.1  # ingest's goal is within 10 % while a sweep runs


@dataclass(frozen=True, slots=True, kw_only=True)
class Pacer:
    """Writes ``fn`` and then, if other writes wanted the database meanwhile, sleeps so that
    these writes take at most ``share`` of the time; 1.0 never sleeps."""

    share: float = SHARE
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clock: Callable[[], float] = time.perf_counter

    async def write(self, storage: Storage, fn: Callable[[Tx], T]) -> T:
        waiting = storage.backlog()
        began = self.clock()
        result = await storage.write(fn)
        if self.share < 1.0 and (waiting or storage.backlog()):
            await self.sleep((self.clock() - began) * (1.0 - self.share) / self.share)
        return result


PACED = Pacer()  # background sweeps: at most a tenth of the writer's time
UNPACED = Pacer(share=1.0)
