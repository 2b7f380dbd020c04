"""Waking the executors of this process: whoever queues runs or resumes one here (the router,
the runs API, replays, an executor settling a step) calls ``Wakers.wake`` for the queue, so the
executor looks now instead of at its next poll. Executors of other processes hear of it
through ``NOTIFY`` (PostgreSQL) or their own poll."""

from __future__ import annotations

from collections.abc import Callable

ALL = "*"  # the queue name that wakes every executor


class Wakers:
    """The wake-up call of each executor running in this process, by queue."""

    def __init__(self) -> None:
        self._by_queue: dict[str, list[Callable[[], None]]] = {}

    def add(self, queue: str, wake: Callable[[], None]) -> None:
        self._by_queue.setdefault(queue, []).append(wake)

    def remove(self, queue: str, wake: Callable[[], None]) -> None:
        wakers = self._by_queue.get(queue, [])
        if wake in wakers:
            wakers.remove(wake)
        if not wakers:
            self._by_queue.pop(queue, None)

    def wake(self, queue: str) -> None:
        """Wake the executors of ``queue``; ``"*"`` wakes every one."""
        if queue == ALL:
            for wakers in list(self._by_queue.values()):
                for wake in wakers:
                    wake()
            return
        for wake in self._by_queue.get(queue, ()):
            wake()
