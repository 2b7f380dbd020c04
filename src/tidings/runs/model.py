"""Run values, built from rows explicitly (``loads`` and ``dumps`` are the JSON of their
columns, as for functions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from tidings.functions.model import loads
from tidings.sealing import RUN_AAD, STEP_AAD, opened

QUEUED, RUNNING, SLEEPING, WAITING = "Queued", "Running", "Sleeping", "Waiting"
COMPLETED, FAILED, CANCELLED = "Completed", "Failed", "Cancelled"
STATUSES = (QUEUED, RUNNING, SLEEPING, WAITING, COMPLETED, FAILED, CANCELLED)
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})
HTTP_QUEUE = "http"  # the queue of the functions of Inngest SDK apps


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    id: str
    env_id: str
    function_id: str
    queue: str
    event_id: str
    event_ids: list[str] | None
    status: str
    attempt: int
    due_at: int | None
    lease_owner: str | None
    lease_until: int | None
    lease_token: int
    created_at: int
    started_at: int | None
    ended_at: int | None
    progress_at: int
    output: Any
    error: Any
    parent_run_id: str | None
    parent_step: str | None
    rerun_of: str | None
    replay_id: str | None

    @classmethod
    def from_row(cls, r: tuple[Any, ...]) -> Run:
        return cls(
            id=r[0], env_id=r[1], function_id=r[2], queue=r[3], event_id=r[4],
            event_ids=loads(r[5]), status=r[6], attempt=r[7], due_at=r[8], lease_owner=r[9],
            lease_until=r[10], lease_token=r[11], created_at=r[12], started_at=r[13],
            ended_at=r[14], progress_at=r[15], output=loads(opened(r[16], RUN_AAD)),
            error=loads(opened(r[17], RUN_AAD)),
            parent_run_id=r[18], parent_step=r[19], rerun_of=r[20], replay_id=r[21],
        )


STEP_KINDS = ("run", "sleep", "wait", "invoke", "send", "ai")


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRow:
    step: str
    name: str
    position: int
    status: str  # completed | failed | errored (will retry)
    output: Any
    attempts: int
    started_at: int | None
    ended_at: int | None
    kind: str = "run"  # one of STEP_KINDS

    @classmethod
    def from_row(cls, r: tuple[Any, ...]) -> StepRow:
        return cls(step=r[0], name=r[1], position=r[2], status=r[3],
                   output=loads(opened(r[4], STEP_AAD)),
                   attempts=r[5], started_at=r[6], ended_at=r[7], kind=r[8])


@dataclass(frozen=True, slots=True, kw_only=True)
class FailedAttempt:
    """One failed attempt of a step (its number from 1) and the error it ended with."""

    attempt: int
    started_at: int | None
    ended_at: int
    error: Any


class QueuedRun(NamedTuple):
    """A run just queued, and the queue whose executors run it."""

    queue: str
    run_id: str


class StepRecord(NamedTuple):
    """A step that finished in a call, as the call buffers it until it is written."""

    step: str
    name: str
    position: int
    output: str  # the JSON of {"data": value}
    started_at: int
    ended_at: int
    kind: str = "run"
