"""The small vocabulary a driver answers the executor with, whichever driver it is.

During a call a driver reports finished steps to its host (``engine/host.py``) as they happen;
the call then ends with one ``Outcome``: the function returned (``RunDone``), failed
(``RunFailed``), is blocked on sleeps, waits or invocations (``Blocked``), has more to do at once
(``Continue``), or a step must be retried later (``RetryStep``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from tidings.calls.error_records import ErrorJSON

if TYPE_CHECKING:
    from tidings.functions.model import FunctionRow
from tidings.runs.model import Run


@dataclass(frozen=True, slots=True)
class Sleep:
    step: str
    name: str
    until: int


@dataclass(frozen=True, slots=True)
class WaitForEvent:
    step: str
    name: str
    event: str
    condition: str | None
    until: int


@dataclass(frozen=True, slots=True)
class Invoke:
    step: str
    name: str
    function: str
    data: dict[str, Any]
    user: dict[str, Any] | None
    until: int
    meta: dict[str, Any] | None = None  # resolved (``events/meta.py``)


Blocker = Sleep | WaitForEvent | Invoke


@dataclass(frozen=True, slots=True)
class RunDone:
    output: bytes  # the JSON of the function's return value


@dataclass(frozen=True, slots=True)
class RunFailed:
    """The function failed: ``error`` is what the run keeps; ``reason`` what the
    ``function.failed`` event says went wrong, when it is more than the error's name and
    message (``invalid status code: 500``: the app answered so)."""

    error: ErrorJSON
    retriable: bool = True
    retry_at: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Blocked:
    blockers: tuple[Blocker, ...]


@dataclass(frozen=True, slots=True)
class Continue:
    """Steps were recorded and the function has more to do: call it again now (the HTTP
    protocol runs one step per call)."""


@dataclass(frozen=True, slots=True)
class RetryStep:
    step: str
    retry_at: int | None = None
    error: Any = None  # the failed attempt's, shown on the run until the step is tried again


Outcome = RunDone | RunFailed | Blocked | RetryStep | Continue


class Driver(Protocol):
    """How the executor reaches a function's code: in-process or over HTTP."""

    def serves(self, fn: FunctionRow) -> bool: ...

    async def call(self, fn: FunctionRow, host: Any, *, run: Run, event: dict[str, Any],
                   events: list[dict[str, Any]]) -> Outcome | None:
        """Call once; None when the call was abandoned (the lease was lost)."""

    def close(self) -> None: ...

