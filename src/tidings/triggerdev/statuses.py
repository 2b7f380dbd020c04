"""The statuses a v2 run publishes (``io.createStatus`` and the status's ``update``): each has a
key, a label, a state (``loading``, ``success`` or ``failure``) and data, and keeps its earlier
values in ``history``, oldest first, as v2 did. They are read back with the run
(``GET /api/v2/runs/{id}``, ``…/statuses``) and in an invoked run's notification.

A status's ``data`` and ``history`` are sealed when the run's environment seals its data
(``encrypt_data``, ``sealing.py``), each under its own associated data (the column, the run and
the key), and opened where they are read; rows stored in clear read as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from tidings.errors import RequestRejected
from tidings.events.env_settings import sealed_json
from tidings.sealing import opened, status_aad
from tidings.storage.tx import Tx

STATES = ("loading", "success", "failure")
FIELDS = {"label", "state", "data"}
MAX_LABEL = 512


@dataclass(frozen=True, slots=True)
class Update:
    """A status update as the SDK sends it: each field None when not given."""

    label: str | None
    state: str | None
    data: dict[str, Any] | None


def parse_update(body: dict[str, Any]) -> Update:
    """``StatusUpdateSchema``; a 400 naming the field that is wrong."""
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise RequestRejected(f"unknown field(s): {', '.join(unknown)}; expected label, state, "
                              "data")
    label, state, data = body.get("label"), body.get("state"), body.get("data")
    if label is not None and (not isinstance(label, str) or "\x00" in label
                              or len(label) > MAX_LABEL):
        raise RequestRejected(f"label: text of at most {MAX_LABEL} characters, without NUL")
    if state is not None and state not in STATES:
        raise RequestRejected(f"state: one of {', '.join(STATES)}")
    if data is not None and not isinstance(data, dict):
        raise RequestRejected("data: an object")
    return Update(label, state, data)


def _record(key: str, label: str, state: str | None, data: Any,
            history: list[Any]) -> dict[str, Any]:
    """``JobRunStatusRecordSchema``."""
    record: dict[str, Any] = {"key": key, "label": label, "history": history}
    if state is not None:
        record["state"] = state
    if data is not None:
        record["data"] = data
    return record


def _value(label: str, state: str | None, data: Any) -> dict[str, Any]:
    value: dict[str, Any] = {"label": label}
    if state is not None:
        value["state"] = state
    if data is not None:
        value["data"] = data
    return value


def update(tx: Tx, run_id: str, key: str, change: Update, now: int, *,
           env_id: str) -> dict[str, Any]:
    """Create the status or update it (its value before joins its history); the record.
    ``env_id``: the run's environment (its data is sealed for it)."""
    row = tx.one("trigger_status_get", (run_id, key))
    if row is None:
        label, state, data, history = change.label or key, change.state, change.data, []
    else:
        old_label, old_state, old_data, old_history = row
        old_data = _loads(opened(old_data, status_aad("data", run_id, key)))
        history = [*_loads(opened(old_history, status_aad("history", run_id, key))),
                   _value(old_label, old_state, old_data)]
        label = change.label if change.label is not None else old_label
        state = change.state if change.state is not None else old_state
        data = change.data if change.data is not None else old_data
    text = _dumps(data)
    sealed = None if text is None else sealed_json(tx, env_id, text,
                                                   status_aad("data", run_id, key))
    sealed_history = sealed_json(tx, env_id, msgspec.json.encode(history).decode(),
                                 status_aad("history", run_id, key))
    tx.run("trigger_status_put", (run_id, key, label, state, sealed, sealed_history, now))
    return _record(key, label, state, data, history)


def of_run(tx: Tx, run_id: str) -> list[dict[str, Any]]:
    """The run's statuses, in the order they were created."""
    return [_record(key, label, state, _loads(opened(data, status_aad("data", run_id, key))),
                    _loads(opened(history, status_aad("history", run_id, key))))
            for key, label, state, data, history in tx.all("trigger_statuses_of_run", (run_id,))]


def _loads(text: Any) -> Any:
    return None if text is None else msgspec.json.decode(text)


def _dumps(value: Any) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()
