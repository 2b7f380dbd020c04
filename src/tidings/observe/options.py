"""The options of the commands that run a process (``dev``, ``serve``, ``worker``) about what
it tells: logs (``--log-format``, ``--log-level``, ``--access-log``) and metrics
(``--no-metrics``, ``--metrics-public``, ``--metrics-port``, the label bounds)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from tidings.observe import metrics, span_export
from tidings.observe.logs import LogFormat, configure
from tidings.settings import Observe

LEVELS = ("debug", "info", "warning", "error", "critical")


def observe_options(default_format: Callable[[], LogFormat], *, http: bool = True,
                    tokens: bool = True, port: bool = False
                    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the options to a command, set logging and metrics up from them before it runs, and
    hand the command ``observe`` (``settings.Observe``). ``default_format()`` is the log
    format when neither the option nor ``TIDINGS_LOG_FORMAT`` says; ``http``: the command
    serves HTTP (``--access-log``); ``tokens``: ``/metrics`` asks for a token unless
    ``--metrics-public``; ``port``: ``--metrics-port``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def command(*args: Any, log_format: LogFormat | None, log_level: str,
                    metrics_on: bool, max_event_names: int, max_names: int,
                    **kwargs: Any) -> Any:
            configure(format=log_format or default_format(), level=log_level)
            metrics.configure(on=metrics_on, max_event_names=max_event_names,
                              max_names=max_names)
            span_export.configure()  # on when the OTEL_* variables say where spans go
            observe = Observe(access_log=kwargs.pop("access_log", False), metrics=metrics_on,
                              metrics_public=kwargs.pop("metrics_public", False),
                              metrics_port=kwargs.pop("metrics_port", None),
                              max_event_names=max_event_names, max_names=max_names)
            return fn(*args, observe=observe, **kwargs)

        options = [
            click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
                         envvar="TIDINGS_LOG_FORMAT",
                         help="text: one readable line per record; json: one JSON object per "
                              "line, the ids (run_id, event_id, function, app, step, attempt) "
                              "as keys. Default: text under dev, json under serve."),
            click.option("--log-level", type=click.Choice(LEVELS, case_sensitive=False),
                         default="info", show_default=True, envvar="TIDINGS_LOG_LEVEL",
                         help="The least severe records logged."),
            click.option("--metrics/--no-metrics", "metrics_on", default=True,
                         show_default=True, envvar="TIDINGS_METRICS",
                         help="Count for Prometheus and serve GET /metrics."),
            click.option("--metrics-max-event-names", "max_event_names",
                         type=click.IntRange(1), default=100, show_default=True,
                         envvar="TIDINGS_METRICS_MAX_EVENT_NAMES",
                         help="Distinct event names used as label values; more are counted "
                              "as 'other'."),
            click.option("--metrics-max-names", "max_names", type=click.IntRange(1),
                         default=1000, show_default=True, envvar="TIDINGS_METRICS_MAX_NAMES",
                         help="Distinct app and function names used as label values; more "
                              "are counted as 'other'."),
        ]
        if http:
            options.append(click.option(
                "--access-log/--no-access-log", "access_log", default=False, show_default=True,
                envvar="TIDINGS_ACCESS_LOG", help="Log every HTTP request (method, path, "
                "status, time taken) at INFO; event keys in paths are masked."))
        if tokens:
            options.append(click.option(
                "--metrics-public", is_flag=True, envvar="TIDINGS_METRICS_PUBLIC",
                help="Serve GET /metrics without a token (by default it needs an API key as "
                     "bearer token outside dev)."))
        if port:
            options.append(click.option(
                "--metrics-port", type=click.IntRange(1, 65535), default=None,
                envvar="TIDINGS_METRICS_PORT", metavar="PORT",
                help="Serve GET /metrics, /health and /ready on this port."))
        for option in reversed(options):
            command = option(command)
        return command

    return decorate
