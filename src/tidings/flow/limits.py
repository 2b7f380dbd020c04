"""The arithmetic of throttles and rate limits, apart from where their state is kept.

A **throttle** is a GCRA (generic cell rate algorithm): runs are spaced ``period / limit``
apart, and ``burst`` of them may start back to back. The state is one number, the theoretical
arrival time (``tat``) of the next run.

A **rate limit** is a fixed window: the first run of a key opens a window of ``period``; at most
``limit`` runs start in it; the first event after it ends opens the next one. Idempotency is a
rate limit of one per 24 hours.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    state: tuple[int, int]  # what to store (the same when not allowed)
    retry_at: int  # when a run held back may try again


def gcra(tat: int, now: int, *, limit: int, period_ms: int, burst: int) -> Decision:
    interval = max(1, period_ms // limit)
    tolerance = interval * (burst - 1)
    tat = max(tat, now)
    if tat - now > tolerance:
        return Decision(False, (tat, 0), tat - tolerance)
    return Decision(True, (tat + interval, 0), now)


def window(start: int, count: int, now: int, *, limit: int, period_ms: int) -> Decision:
    if now >= start + period_ms or count == 0:
        return Decision(True, (now, 1), now)
    if count < limit:
        return Decision(True, (start, count + 1), now)
    return Decision(False, (start, count), start + period_ms)
