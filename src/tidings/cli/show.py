"""How runs, steps, pauses and values look in a terminal."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.markup import escape

STATUS_STYLE = {"Queued": "cyan", "Running": "blue", "Sleeping": "magenta",
                "Waiting": "magenta", "Completed": "green", "Failed": "red",
                "Cancelled": "yellow"}



def status_text(run: dict[str, Any]) -> str:
    status = run["status"]
    extra = f" (attempt {run['attempt'] + 1})" if run["attempt"] else ""
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]{extra}"


def pause_text(pause: dict[str, Any]) -> str:
    until, name = clock(pause["until"]), escape(repr(pause["name"]))
    if pause["kind"] == "sleep":
        return f"sleep {name} until {until}"
    if pause["kind"] == "invoke":
        return f"invoked run {pause['invoked_run_id']} ({name}) until {until}"
    condition = f" if {escape(pause['condition'])}" if pause["condition"] else ""
    return f"event {escape(pause['event'] or '')}{condition} ({name}) until {until}"


def error_text(error: Any) -> str:
    if not isinstance(error, dict):
        return short(error, 200) if error is not None else ""
    name, message = escape(str(error.get("name", "Error"))), escape(str(error.get("message", "")))
    return f"[red]{name}[/]: {message}"


def short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return escape(text if len(text) <= width else text[:width - 1] + "…")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def clock(text: str | None) -> str:
    return "" if text is None else parse_iso(text).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def took(start: str | None, end: str | None) -> str:
    if start is None or end is None:
        return ""
    return duration(int((parse_iso(end) - parse_iso(start)).total_seconds() * 1000))


def duration(ms: int) -> str:
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(ms // 1000, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
