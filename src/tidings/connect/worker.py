"""One live connection of a Connect worker, as the hub and the relay see it."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass(slots=True, eq=False)
class Worker:
    """One live connection of a worker."""

    connection_id: str
    env_id: str
    instance_id: str
    functions: dict[str, frozenset[str]]  # app name -> its function slugs
    sdk: str
    send: Callable[[bytes], Awaitable[None]]
    max_concurrency: int | None = None  # per instance; None: no limit
    connected_at: int = 0  # ms
    draining: bool = False
    last_beat: float = field(default_factory=time.monotonic)
    closed: bool = False
