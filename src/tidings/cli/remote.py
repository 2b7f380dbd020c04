"""The client commands, for a running server over its HTTP API: send an event, list events
and runs, show a run, replay runs."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import click
import httpx
from rich.markup import escape
from rich.table import Column, Table

from tidings.cli.common import console, print_table, run_async
from tidings.cli.show import (
    clock,
    duration,
    error_text,
    pause_text,
    short,
    status_text,
    took,
)
from tidings.durations import to_ms
from tidings.errors import ConfigError
from tidings.ids import now_ms
from tidings.runs.admin import REPLAYABLE
from tidings.runs.model import STATUSES
from tidings.sdk.client import DEFAULT_BASE_URL, Event, Tidings

URL_HELP = f"Server (default TIDINGS_BASE_URL or {DEFAULT_BASE_URL})."


@click.command()
@click.argument("name")
@click.option("--data", default="{}", help="JSON object.")
@click.option("--user", default=None, help="JSON object (encrypted at rest).")
@click.option("--id", "event_id", default=None, help="Idempotency key.")
@click.option("--ts", default=None, type=int, help="Milliseconds since the epoch.")
@click.option("--url", default=None, help=URL_HELP)
@click.option("--key", default=None, help="Event key (default TIDINGS_EVENT_KEY).")
def send(name: str, data: str, user: str | None, event_id: str | None, ts: int | None,
         url: str | None, key: str | None) -> None:
    """Send one event to a running server."""
    try:
        payload = json.loads(data)
        person = json.loads(user) if user else None
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    client = Tidings("cli", base_url=url, event_key=key)
    event = Event(name=name, data=payload, user=person, id=event_id, ts=ts)
    ids = run_async(lambda: client.send(event))
    click.echo(ids[0])


api_options = [
    click.option("--url", default=None, help=URL_HELP),
    click.option("--api-key", default=None,
                 help="API key (default TIDINGS_API_KEY; dev needs none)."),
]


def _api_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(api_options):
        fn = option(fn)
    return fn


def _api(method: str, path: str, url: str | None, api_key: str | None, *,
         params: Any = None, body: Any = None, ok: tuple[int, ...] = (200,)) -> Any:
    """``data`` of a JSON API answer of a running server; a one-line error otherwise."""
    base = (url or os.environ.get("TIDINGS_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    token = api_key or os.environ.get("TIDINGS_API_KEY")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        reply = httpx.request(method, f"{base}{path}", params=params, json=body,
                              headers=headers, timeout=30)
    except httpx.TransportError as exc:
        raise click.ClickException(f"cannot reach Tidings at {base}: {exc}") from None
    try:
        answer = reply.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or reply.status_code not in ok:
        error = answer.get("error") if isinstance(answer, dict) else None
        raise click.ClickException(f"{base} answered {reply.status_code}: "
                                   f"{error or reply.text[:200]}")
    return answer["data"]


@click.command()
@click.option("--name", default=None)
@click.option("--limit", default=20, show_default=True, type=int)
@_api_options
def events(name: str | None, limit: int, url: str | None, api_key: str | None) -> None:
    """List recent events of a running server."""
    params: dict[str, Any] = {"limit": limit}
    if name:
        params["name"] = name
    table = Table(Column("id", no_wrap=True), "name", Column("time", no_wrap=True), "data")
    for event in _api("GET", "/v1/events", url, api_key, params=params):
        table.add_row(event["id"], escape(event["name"]), event["timestamp"], short(event["data"]))
    print_table(table)


# -- runs and replays ----------------------------------------------------------------------------

@click.group(invoke_without_command=True)
@click.option("--function", "function", default=None, metavar="SLUG",
              help="Only this function's runs.")
@click.option("--status", "statuses", multiple=True, metavar="STATUS",
              type=click.Choice(STATUSES, case_sensitive=False),
              help="Only runs in this status (repeatable).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@_api_options
@click.pass_context
def runs(ctx: click.Context, function: str | None, statuses: tuple[str, ...], limit: int,
         url: str | None, api_key: str | None) -> None:
    """List recent runs of a running server, newest first; ``runs show ID`` shows one."""
    if ctx.invoked_subcommand is not None:
        return
    params: dict[str, Any] = {"limit": limit}
    if function:
        params["function"] = function
    if statuses:
        params["status"] = ",".join(statuses)
    table = Table(Column("id", no_wrap=True), "function", "status",
                  Column("created", no_wrap=True), Column("took", justify="right"),
                  "result")
    for run in _api("GET", "/v1/runs", url, api_key, params=params):
        result = short(run["output"]) if run["status"] == "Completed" else error_text(run["error"])
        table.add_row(run["id"], escape(run["function"]), status_text(run),
                      clock(run["created_at"]), took(run["started_at"], run["ended_at"]),
                      result)
    print_table(table)


@runs.command("show")
@click.argument("run_id")
@_api_options
def runs_show(run_id: str, url: str | None, api_key: str | None) -> None:
    """One run: status, result, the step timeline and what it waits for."""
    run = _api("GET", f"/v1/runs/{run_id}", url, api_key)
    console.print(f"[bold]Run {run['id']}[/]  {escape(run['function'])}")
    event = run["event"] or {}
    facts = [("status", status_text(run)),
             ("event", f"{escape(event.get('name', '?'))}  {run['event_id']}"),
             ("created", clock(run["created_at"])), ("started", clock(run["started_at"])),
             ("ended", clock(run["ended_at"])),
             ("took", took(run["started_at"], run["ended_at"])),
             ("output", short(run["output"], 200) if run["status"] == "Completed" else ""),
             ("error", error_text(run["error"])),
             ("next call", clock(run["due_at"]) if not run["pauses"] else ""),
             ("rerun of", run["rerun_of"] or ""), ("replay", run["replay_id"] or ""),
             ("invoked by", run["parent_run_id"] or "")]
    grid = Table.grid(padding=(0, 2))
    for label, value in facts:
        if value:
            grid.add_row(f"[dim]{label}[/]", value)
    console.print(grid)
    if run["steps"]:
        steps = Table("#", "step", "status", Column("attempts", justify="right"),
                      Column("started", no_wrap=True), Column("ended", no_wrap=True),
                      Column("took", justify="right"), "output", title="Steps",
                      title_justify="left")
        for number, step in enumerate(run["steps"], start=1):
            step_took = "" if step["duration_ms"] is None else duration(step["duration_ms"])
            steps.add_row(str(number), escape(step["name"]), step["status"],
                          str(step["attempts"]),
                          clock(step["started_at"]), clock(step["ended_at"]), step_took,
                          short(step["output"]))
        print_table(steps)
    for pause in run["pauses"]:
        console.print(f"[magenta]waiting[/] {pause_text(pause)}")


@click.command()
@click.option("--function", "function", required=True, metavar="SLUG")
@click.option("--since", required=True, metavar="TIME",
              help="Runs created at or after: ISO-8601 with offset, ms, or an age like 2h.")
@click.option("--until", default=None, metavar="TIME", help="Runs created before (default now).")
@click.option("--status", "statuses", multiple=True, required=True, metavar="STATUS",
              type=click.Choice(REPLAYABLE, case_sensitive=False),
              help="Rerun runs that ended in this status (repeatable).")
@_api_options
def replay(function: str, since: str, until: str | None, statuses: tuple[str, ...],
           url: str | None, api_key: str | None) -> None:
    """Rerun every run of a function created in a time range that ended in these statuses."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    body = {"function": function, "since": _moment(since, "--since"),
            "until": _moment(until, "--until") if until else now_ms(), "statuses": statuses}
    started = _api("POST", "/v1/replays", url, api_key, body=body, ok=(201, 202))
    console.print(f"replay {started['id']}: {started['total']} runs of {function} to rerun")
    state = started
    with Progress(TextColumn("rerunning"), BarColumn(), MofNCompleteColumn(),
                  console=console) as progress:
        bar = progress.add_task("replay", total=state["total"], completed=state["created"])
        while not state["done"]:
            time.sleep(0.2)  # a person watches this: five looks a second are plenty
            state = _api("GET", f"/v1/replays/{started['id']}", url, api_key)
            progress.update(bar, completed=state["created"])
    console.print(f"replay {state['id']} done: {state['created']} of {state['total']} runs "
                  "queued again")


def _moment(text: str, option: str) -> int | str:
    """Milliseconds for ms or an age (``90m`` ago); ISO-8601 text as it is (the server reads
    it and says what is wrong with it)."""
    if text.isdigit():
        return int(text)
    try:
        return now_ms() - to_ms(text)
    except ConfigError:
        if text[:1].isdigit() and "-" in text:
            return text
        raise click.BadParameter(f"{text!r}: an ISO-8601 time, milliseconds or an age like "
                                 "2h", param_hint=option) from None
