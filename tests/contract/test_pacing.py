"""Paced sweeps (``storage/pacing.py``: erasure and retention's chunks) yield the database only
to writes that want it: alone they run chunk after chunk, behind other writes they pause."""

from __future__ import annotations

import asyncio
import threading

from tidings.storage import Storage
from tidings.storage.migrations import schema_version
from tidings.storage.pacing import Pacer
from tidings.storage.tx import Tx


class Pauses:
    """The pacer's sleep, recorded (and not slept: the test asks only whether it paused)."""

    def __init__(self) -> None:
        self.taken: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.taken.append(seconds)


async def test_a_chunk_with_no_other_write_waiting_is_followed_at_once(storage: Storage) -> None:
    pauses = Pauses()
    pacer = Pacer(sleep=pauses)

    for _ in range(3):
        assert await pacer.write(storage, schema_version) > 0

    assert pauses.taken == []  # before, nine times each chunk's time, for nobody


async def pause_behind_another_write(storage: Storage, cpu: tuple[float, float],
                                     clock: tuple[float, float]) -> list[float]:
    """The pauses of one chunk written while another write holds the database, its thread's
    CPU clock and the wall clock reading ``cpu`` and ``clock`` around it (7 % of the CPU at
    3 times the statements' cost, 10 % of the time)."""
    pauses = Pauses()
    cpus, clocks = iter(cpu), iter(clock)
    pacer = Pacer(share=0.07, cost=3.0, wall_share=0.1, sleep=pauses,
                  cpu=lambda: next(cpus), clock=lambda: next(clocks))
    started, release = threading.Event(), threading.Event()

    def held(tx: Tx) -> int:
        started.set()
        assert release.wait(30)
        return schema_version(tx)

    other = asyncio.create_task(storage.write(held))
    assert await asyncio.to_thread(started.wait, 30)
    chunk = asyncio.create_task(pacer.write(storage, schema_version))
    await asyncio.sleep(0)  # the chunk has asked for the database behind the held write
    release.set()
    assert await chunk > 0
    await other
    return pauses.taken


async def test_a_chunk_behind_another_write_pauses_by_its_cpu_time(storage: Storage) -> None:
    """Its statements took 2 ms of CPU on their thread, which costs the process 3 times that:
    the pause leaves it 7 % of the CPU (its 1 ms write leaving it 10 % of the time would be
    shorter)."""
    taken = await pause_behind_another_write(storage, (10.0, 10.002), (5.0, 5.001))

    assert len(taken) == 1
    assert abs(taken[0] - 0.002 * 3 * 0.93 / 0.07) < 1e-9


async def test_a_chunk_run_by_the_database_server_pauses_by_its_time(storage: Storage) -> None:
    """PostgreSQL runs the statements in its own process: the thread spent 0.1 ms of CPU on a
    write that took 50 ms. The pause leaves the sweep 10 % of the time, not 7 % of a CPU
    cost it did not see (before, it paused 4 ms and a sweep took the database for 92 %)."""
    taken = await pause_behind_another_write(storage, (10.0, 10.0001), (5.0, 5.05))

    assert len(taken) == 1
    assert abs(taken[0] - 0.05 * 0.9 / 0.1) < 1e-9
