"""A run's timeline: one bar per step attempt placed by time, the wait in the queue apart from
execution, sleeps, waits and invokes as spans that end when the run resumed.

What is measured and what is inferred: attempts carry their own start and end (failed ones from
``step_attempts``, the last from ``steps``). A pause records when it ended (its step's
``started_at`` is the call that
resumed it), not when it began;
a run reaches a sleep or wait right after the step before it ended (in the same call), so its
span starts there, or where the run started when it is the first step. The queue wait is from
the run's creation to its first start. Steps a rerun took over from the run it reruns ran
there, before this run existed: they are drawn apart, "reused", where this run started.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from markupsafe import Markup

from tidings.runs.model import TERMINAL
from tidings.server.dashboard.render import duration
from tidings.server.run_levers import RunDetail

PAUSES = ("sleep", "wait", "invoke")


@dataclass(frozen=True, slots=True, kw_only=True)
class Bar:
    lane: str  # the step's name (or "queue")
    kind: str  # queue | run | sleep | wait | invoke | send | ai | pending
    state: str  # completed | failed | errored | waiting | queued | reused
    start: int
    end: int
    open: bool  # still going: the bar runs to the edge
    attempt: int | None = None
    error: Any = None
    left: float = 0.0  # percent of the axis
    width: float = 0.0
    label: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeline:
    start: int
    end: int
    bars: list[Bar]

    @property
    def span_ms(self) -> int:
        return self.end - self.start

    @property
    def lanes(self) -> list[tuple[str, list[Bar]]]:
        """The bars by lane (a step's attempts share one), in the order lanes first appear."""
        lanes: dict[str, list[Bar]] = {}
        for bar in self.bars:
            lanes.setdefault(bar.lane, []).append(bar)
        return list(lanes.items())


def timeline(detail: RunDetail, now: int) -> Timeline:
    run = detail.run
    bars: list[Bar] = []
    start = run.created_at
    queued_until = run.started_at if run.started_at is not None else now
    bars.append(Bar(lane="queue", kind="queue", state="queued", start=start,
                    end=queued_until, open=run.started_at is None and run.status not in TERMINAL,
                    label="in the queue"))
    previous_end = run.started_at or start
    reused = detail.reused
    for step in detail.steps:
        if step.step in reused:
            bars.append(Bar(lane=step.name, kind=step.kind, state="reused", start=previous_end,
                            end=previous_end, open=False,
                            label=f"reused from run {run.rerun_of}"))
            continue
        for failed in detail.failed.get(step.step, []):
            begin = failed.started_at if failed.started_at is not None else failed.ended_at
            bars.append(Bar(lane=step.name, kind=step.kind, state="failed", start=begin,
                            end=failed.ended_at, open=False, attempt=failed.attempt,
                            error=failed.error, label=f"attempt {failed.attempt} failed"))
        if step.kind in PAUSES:
            # ``started_at`` of a pause is the call that resumed it, not when it began.
            begin = previous_end
            end = step.ended_at if step.ended_at is not None else begin
            bars.append(Bar(lane=step.name, kind=step.kind, state=step.status, start=begin,
                            end=end, open=False, label=_pause_label(step.kind, step.status)))
        elif step.status == "completed" and step.started_at is not None:
            end = step.ended_at if step.ended_at is not None else step.started_at
            attempt = step.attempts + 1 if detail.failed.get(step.step) else None
            bars.append(Bar(lane=step.name, kind=step.kind, state="completed",
                            start=step.started_at, end=end, open=False, attempt=attempt,
                            label="completed" + (f" on attempt {attempt}" if attempt else "")))
        if step.ended_at is not None:
            previous_end = max(previous_end, step.ended_at)
    if run.status not in TERMINAL:
        for pause in detail.pauses:
            bars.append(Bar(lane=pause.name, kind=pause.kind, state="waiting",
                            start=previous_end, end=max(now, previous_end), open=True,
                            label=_open_label(pause.kind)))
    end = run.ended_at if run.ended_at is not None else now
    end = max([end, *(bar.end for bar in bars)])
    return _placed(Timeline(start=start, end=end, bars=bars))


def _placed(line: Timeline) -> Timeline:
    span = max(line.span_ms, 1)
    placed = []
    for bar in line.bars:
        left = (bar.start - line.start) / span * 100
        width = max((bar.end - bar.start) / span * 100, 0.4)  # a 0 ms step stays visible
        left = min(left, 99.6)
        placed.append(replace(bar, left=round(left, 3), width=round(min(width, 100 - left), 3)))
    return Timeline(start=line.start, end=line.end, bars=placed)


def lanes_html(line: Timeline) -> Markup:
    """The lanes of the timeline as HTML, drawn here rather than in the template: a run of
    1,000 steps has 1,000 lanes, and a Jinja loop over them costs several times this."""
    out = []
    for lane, bars in line.lanes:
        out.append(str(Markup('<div class="lane"><span class="lane-name" title="{0}">{0}</span>'
                              '<span class="track">').format(lane)))
        for bar in bars:
            classes = f"bar k-{bar.kind} b-{bar.state}" + (" open" if bar.open else "") + (
                " narrow" if bar.width < 12 else "") + (" late" if bar.left > 75 else "")
            title = bar.label if bar.state == "reused" else (
                f"{bar.label} · {duration(bar.end - bar.start)}")
            if isinstance(bar.error, dict) and bar.error.get("message"):
                title += f": {bar.error['message']}"
            out.append(str(Markup('<span class="{}" data-left="{}" data-width="{}" title="{}">'
                                  '<span class="bar-label">{}</span></span>').format(
                classes, bar.left, bar.width, title, bar.label)))
        out.append("</span></div>")
    return Markup("".join(out))


def _pause_label(kind: str, status: str) -> str:
    done = {"sleep": "slept", "wait": "waited", "invoke": "invoked"}[kind]
    return done if status == "completed" else f"{done}: {status}"


def _open_label(kind: str) -> str:
    return {"sleep": "sleeping", "wait": "waiting for an event",
            "invoke": "waiting for the invoked run"}.get(kind, "waiting")
