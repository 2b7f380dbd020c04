"""The v2 client's bodies and answers: ``{event, options}`` / ``{events, options}`` in, the
records its zod schemas parse (``ApiEventLogSchema``, ``GetEventSchema``, ``GetRunSchema``) out.

A v2 event becomes a Tidings event by renaming (``payload`` is ``data``, ``timestamp`` is
``ts``, ``options.deliverAt``/``deliverAfter``/``accountId`` are ``deliver_at``/
``deliver_after``/``account_id``) and is then checked by the one event parser
(``events/parse.py``), whose errors come back named as the client wrote them
(``event.payload: ...``, ``events[2].name: ...``, ``options.deliverAt: ...``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from tidings.errors import EventsInvalid, PayloadTooLarge, RequestRejected
from tidings.events.model import NewEvent, StoredEvent, iso
from tidings.events.parse import parse_events
from tidings.json_input import decode_json
from tidings.runs.model import (
    CANCELLED,
    COMPLETED,
    FAILED,
    QUEUED,
    RUNNING,
    SLEEPING,
    WAITING,
    Run,
    StepRow,
)
from tidings.settings import Limits

TRIGGER_QUEUE = "trigger"  # the queue of the Jobs of v2 apps (``engine/trigger_driver.py``)
LAZY_LOADED_CACHED_TASKS = "2023-09-29"  # the API version Tidings speaks to v2 apps
INVALID_PAYLOAD = "InvalidPayload"  # the error name of a run whose payload failed the schema
EVENT_FIELDS = ("name", "payload", "context", "id", "timestamp", "source", "payloadType")
OPTION_FIELDS = {"deliverAt": "deliver_at", "deliverAfter": "deliver_after",
                 "accountId": "account_id"}
# Tidings' field -> how the v2 client names it (the rest are named alike).
V2_NAMES = {"data": "payload", "ts": "timestamp"}
OPTION_NAMES = {tidings: v2 for v2, tidings in OPTION_FIELDS.items()}
# A v2 run's status for each of Tidings' (v2 had no separate sleeping and waiting).
RUN_STATUS = {QUEUED: "QUEUED", RUNNING: "EXECUTING", SLEEPING: "WAITING_TO_CONTINUE",
              WAITING: "WAITING_TO_CONTINUE", COMPLETED: "SUCCESS", FAILED: "FAILURE",
              CANCELLED: "CANCELED"}
TASK_STATUS = {"completed": "COMPLETED", "failed": "ERRORED", "errored": "ERRORED"}


@dataclass(frozen=True, slots=True)
class Sent:
    """A send request: its events, and whether it was ``sendEvents`` (a list answered)."""

    events: list[NewEvent]
    bulk: bool


def parse_send(body: bytes, limits: Limits, now: int, *, bulk: bool) -> Sent:
    """``{"event": {...}, "options": {...}}`` (or ``{"events": [...], ...}`` when ``bulk``)."""
    value = decode_json(body, "the body", max_depth=limits.max_depth + 2)
    many = "events" if bulk else "event"
    if not isinstance(value, dict):
        raise RequestRejected(f"the body must be a JSON object: {{\"{many}\": ..., "
                              "\"options\": {...}}")
    unknown = sorted(set(value) - {many, "options"})
    if unknown:
        raise RequestRejected(f"the body: unknown field(s): {', '.join(unknown)}; "
                              f"expected {many} and options")
    options = value.get("options")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise RequestRejected("options: must be an object (deliverAt, deliverAfter, accountId)")
    unknown = sorted(set(options) - set(OPTION_FIELDS))
    if unknown:
        raise RequestRejected(f"options: unknown field(s): {', '.join(unknown)}; expected "
                              f"{', '.join(OPTION_FIELDS)}")
    if bulk:
        raw = value.get("events")
        if not isinstance(raw, list):
            raise RequestRejected("events: required, a list of events")
        if len(raw) > limits.max_events_per_request:
            raise PayloadTooLarge(f"events: a request may hold at most "
                                  f"{limits.max_events_per_request} events, got {len(raw)}")
    else:
        raw = [value.get("event")]
        if not isinstance(raw[0], dict):
            raise RequestRejected("event: required, an object with at least a name")
    wires = [_wire(index, event, options, bulk) for index, event in enumerate(raw)]
    try:
        events = parse_events(msgspec.json.encode(wires), limits, now) if wires else []
    except EventsInvalid as exc:
        raise RequestRejected(_renamed(exc, bulk)) from None
    return Sent(events, bulk)


def _wire(index: int, event: Any, options: dict[str, Any], bulk: bool) -> dict[str, Any]:
    where = f"events[{index}]" if bulk else "event"
    if not isinstance(event, dict):
        raise RequestRejected(f"{where}: must be an object with at least a name")
    unknown = sorted(set(event) - set(EVENT_FIELDS))
    if unknown:
        raise RequestRejected(f"{where}: unknown field(s): {', '.join(unknown)}; expected "
                              f"{', '.join(EVENT_FIELDS)}")
    kind = event.get("payloadType")
    if kind not in (None, "JSON"):
        raise RequestRejected(f"{where}.payloadType: only \"JSON\" is taken (HTTP request "
                              "events are not supported)")
    for field in ("payload", "context"):
        item = event.get(field)
        if item is not None and not isinstance(item, dict):
            raise RequestRejected(f"{where}.{field}: must be a JSON object (Tidings keeps "
                                  f"{field}s as objects), got {type(item).__name__}")
    wire = {k: v for k, v in event.items() if k != "payloadType" and v is not None}
    for v2, ours in OPTION_FIELDS.items():
        if options.get(v2) is not None:
            wire[ours] = options[v2]
    return wire


def _renamed(exc: EventsInvalid, bulk: bool) -> str:
    """The parser's errors, with fields named as the v2 client names them (an option's error
    once, not once per event)."""
    said: list[str] = []
    for error in exc.errors:
        if error.field in OPTION_NAMES:
            text = f"options.{OPTION_NAMES[error.field]}: {error.message}"
        else:
            where = f"events[{error.index}]" if bulk else "event"
            field = V2_NAMES.get(error.field, error.field)
            text = f"{where}.{field}: {error.message}" if field else f"{where}: {error.message}"
        if text not in said:
            said.append(text)
    return "; ".join(said)


# -- answers -----------------------------------------------------------------------------------

def event_id(event: StoredEvent) -> str:
    """The id the v2 client knows an event by: the one it sent, else Tidings' own."""
    return event.key if event.key is not None else event.id


def event_log(event: StoredEvent) -> dict[str, Any]:
    """``ApiEventLogSchema``: the record ``sendEvent``, ``cancelEvent`` and a run receive."""
    return {
        "id": event_id(event),
        "name": event.name,
        "payload": event.data,
        "context": event.context,
        "timestamp": iso(event.ts),
        "deliverAt": iso(event.deliver_at),
        "deliveredAt": iso(event.delivered_at),
        "cancelledAt": iso(event.cancelled_at),
    }


def run_status(run: Run) -> str:
    """A run's status as v2 names it."""
    if run.status == FAILED and isinstance(run.error, dict) and run.error.get(
            "name") == INVALID_PAYLOAD:
        return "INVALID_PAYLOAD"
    return RUN_STATUS[run.status]


def event_with_runs(event: StoredEvent, runs: list[Run]) -> dict[str, Any]:
    """``GetEventSchema``: the event and the runs it started."""
    changed = max(t for t in (event.received_at, event.delivered_at, event.cancelled_at)
                  if t is not None)
    return {
        "id": event_id(event),
        "name": event.name,
        "createdAt": iso(event.received_at),
        "updatedAt": iso(changed),
        "runs": [{"id": run.id, "status": run_status(run),
                  "startedAt": iso(run.started_at), "completedAt": iso(run.ended_at)}
                 for run in runs],
    }


def run_summary(run: Run) -> dict[str, Any]:
    """``RunSchema``: a run as ``getRuns`` lists it."""
    return {"id": run.id, "status": run_status(run), "startedAt": iso(run.started_at),
            "updatedAt": iso(run.ended_at or run.progress_at),
            "completedAt": iso(run.ended_at)}


def run_record(run: Run, steps: list[StepRow],
               statuses: list[dict[str, Any]]) -> dict[str, Any]:
    """``GetRunSchema``: a run, its tasks (Tidings' steps) and its statuses."""
    return {
        "id": run.id,
        "status": run_status(run),
        "startedAt": iso(run.started_at),
        "updatedAt": iso(run.ended_at or run.progress_at),
        "completedAt": iso(run.ended_at),
        "output": run.output if run.status == COMPLETED else None,
        "tasks": [{"id": step.step, "displayKey": step.name, "status":
                   TASK_STATUS.get(step.status, "RUNNING"), "name": step.name, "icon": None,
                   "startedAt": iso(step.started_at), "completedAt": iso(step.ended_at)}
                  for step in steps],
        "statuses": statuses,
    }


def run_statuses(run: Run, statuses: list[dict[str, Any]]) -> dict[str, Any]:
    """``GetRunStatusesSchema``."""
    return {"run": {"id": run.id, "status": run_status(run),
                    "output": run.output if run.status == COMPLETED else None},
            "statuses": statuses}
