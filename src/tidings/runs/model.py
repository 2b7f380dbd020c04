"""Run values, built from rows explicitly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec

from tidings.flow.config import FlowControl, flow_of

QUEUED, RUNNING, SLEEPING, WAITING = "Queued", "Running", "Sleeping", "Waiting"
COMPLETED, FAILED, CANCELLED = "Completed", "Failed", "Cancelled"
STATUSES = (QUEUED, RUNNING, SLEEPING, WAITING, COMPLETED, FAILED, CANCELLED)
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})
HTTP_QUEUE = "http"  # the queue of the functions of Inngest SDK apps


def loads(value: str | bytes | None) -> Any:
    return None if value is None else msgspec.json.decode(value)


def dumps(value: Any) -> str:
    return msgspec.json.encode(value).decode()


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionRow:
    id: str
    env_id: str
    app_id: str
    slug: str
    name: str
    queue: str
    url: str | None
    config: dict[str, Any]
    archived_at: int | None
    flow: FlowControl | None = None  # None: no flow control, and nothing to pay for it

    @classmethod
    def from_row(cls, r: tuple[Any, ...]) -> FunctionRow:
        config = loads(r[7])
        return cls(id=r[0], env_id=r[1], app_id=r[2], slug=r[3], name=r[4], queue=r[5], url=r[6],
                   config=config, archived_at=r[8], flow=flow_of(config))

    @property
    def retries(self) -> int:
        return int(self.config.get("retries", 4))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "slug": self.slug, "name": self.name, "app_id": self.app_id,
                "queue": self.queue, "url": self.url, "config": self.config,
                "archived": self.archived_at is not None}


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
            ended_at=r[14], progress_at=r[15], output=loads(r[16]), error=loads(r[17]),
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
        return cls(step=r[0], name=r[1], position=r[2], status=r[3], output=loads(r[4]),
                   attempts=r[5], started_at=r[6], ended_at=r[7], kind=r[8])


@dataclass(frozen=True, slots=True, kw_only=True)
class FailedAttempt:
    """One failed attempt of a step (its number from 1) and the error it ended with."""

    attempt: int
    started_at: int | None
    ended_at: int
    error: Any


class StepRecord(NamedTuple):
    """A step that finished in a call, as the call buffers it until it is written."""

    step: str
    name: str
    position: int
    output: str  # the JSON of {"data": value}
    started_at: int
    ended_at: int
    kind: str = "run"
