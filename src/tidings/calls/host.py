"""The contract of one call of a function, between the engine and the function's code.

The engine gives each call a ``Host`` (``engine/host.py``); the SDK's step tools
(``sdk/context.py``) and both drivers (``engine/native.py``, ``engine/http_driver.py``) use it
to replay recorded steps, record new ones and ask for pauses. A call ends early by raising
``Interrupt``.
"""

from __future__ import annotations

from typing import Any, Protocol

from tidings.calls.outcomes import Blocker, RetryStep
from tidings.runs.model import StepRow


class Interrupt(BaseException):
    """Ends the current call of a function: it paused, or a step will be retried. A
    ``BaseException``, so that a user's ``except Exception:`` cannot swallow it."""


class Host(Protocol):
    """What the engine provides to a call of a function, and reads back after it."""

    blockers: list[Any]  # the pauses asked for (``block``)
    retry: RetryStep | None  # a step to retry later
    lost: bool  # the run's lease was lost: nothing more of this call is recorded

    @property
    def recorded(self) -> list[StepRow]:
        """Steps recorded before this call, in the order they were recorded."""

    @property
    def attempts(self) -> dict[str, int]:
        """Failed attempts so far of the steps that will be retried."""

    @property
    def attempt(self) -> int:
        """The attempt a call starting now makes (``ctx.attempt``)."""

    def memo(self, step: str) -> tuple[bool, Any]:
        """``(True, memo)`` when the step is recorded."""

    def now(self) -> int: ...

    async def completed(self, step: str, name: str, output: bytes,
                        began: int | None = None, *, kind: str = "run") -> None:
        """Record a finished step (``output`` is the JSON of ``{"data": value}``; ``kind``:
        ``run``, or ``send`` for a ``send_event``…)."""

    async def errored(self, step: str, name: str, error: dict[str, Any],
                      began: int | None = None, *, final: bool = False,
                      kind: str = "run", attempt: int | None = None) -> bool:
        """Record a failed attempt; True when it was the last (the error is then final)."""

    def block(self, blocker: Blocker) -> None:
        """Note a pause; the call ends after the current steps settle."""

    async def send(self, events: list[dict[str, Any]], key: str) -> list[str]:
        """Store events; ``key`` names the step, so a repeated send stores nothing twice."""

    async def flushed(self) -> bool:
        """Write every buffered step now; False when the lease was lost."""

    def flush_soon(self) -> None:
        """Write the buffered steps soon, even if no other step ends meanwhile (before a
        request that may run long)."""
