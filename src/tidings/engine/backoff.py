"""When to retry: Inngest's table (15 s, 30 s, 1 m, … 2 h) plus up to 30 s of jitter, or a
fixed interval (``--retry-interval``), configurable for tests."""

from __future__ import annotations

import random
from dataclasses import dataclass

TABLE_MS = (15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_200_000, 2_400_000,
            3_600_000, 7_200_000)
RETRY_AFTER_MIN_MS = 1_000
RETRY_AFTER_MAX_MS = 24 * 3_600_000


@dataclass(frozen=True, slots=True)
class Backoff:
    table_ms: tuple[int, ...] = TABLE_MS
    jitter_ms: int = 30_000

    @classmethod
    def fixed(cls, interval_ms: int) -> Backoff:
        return cls((interval_ms,), 0)

    def delay(self, failures: int) -> int:
        """The wait after the ``failures``-th failure (1-based)."""
        base = self.table_ms[min(max(failures, 1), len(self.table_ms)) - 1]
        return base + (random.randint(0, self.jitter_ms) if self.jitter_ms else 0)


def clamp_retry_after(at: int, now: int) -> int:
    return min(max(at, now + RETRY_AFTER_MIN_MS), now + RETRY_AFTER_MAX_MS)
