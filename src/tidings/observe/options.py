"""The logging options of the commands that run a process (``dev``, ``serve``, ``worker``):
``--log-format``, ``--log-level`` and, where an HTTP server runs, ``--access-log``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from tidings.observe.logs import LogFormat, configure

LEVELS = ("debug", "info", "warning", "error", "critical")


def logging_options(default_format: Callable[[], LogFormat], *,
                    access_log: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the options to a command and set logging up from them before it runs;
    ``default_format()`` is the format when neither the option nor ``TIDINGS_LOG_FORMAT`` is
    given. With ``access_log`` the command gets ``access_log`` (a bool) as an argument."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def command(*args: Any, log_format: LogFormat | None, log_level: str,
                    **kwargs: Any) -> Any:
            configure(format=log_format or default_format(), level=log_level)
            return fn(*args, **kwargs)

        command = click.option(
            "--log-format", type=click.Choice(["text", "json"]), default=None,
            envvar="TIDINGS_LOG_FORMAT",
            help="text: one readable line per record; json: one JSON object per line, the "
                 "ids (run_id, event_id, function, app, step, attempt) as keys. Default: "
                 "text under dev, json under serve.")(command)
        command = click.option(
            "--log-level", type=click.Choice(LEVELS, case_sensitive=False), default="info",
            show_default=True, envvar="TIDINGS_LOG_LEVEL", help="The least severe records "
            "logged.")(command)
        if access_log:
            command = click.option(
                "--access-log/--no-access-log", "access_log", default=False,
                show_default=True, envvar="TIDINGS_ACCESS_LOG",
                help="Log every HTTP request (method, path, status, time taken) at INFO; "
                     "event keys in paths are masked.")(command)
        return command

    return decorate
