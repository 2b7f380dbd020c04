"""Prometheus metrics of one process, in a registry of their own (``REGISTRY``).

Counters and histograms count what this process did; the gauges of shared state (queue
depth, pending waits) are not here: they are read from the database at scrape time
(``server/metrics_api.py``), so that every process reports the same value.

Label values that come from users — apps, functions, event names — are folded: past a bound
of distinct values per label (``limit_labels``; event names 100 by default, app and function
names 1,000), a new value is counted under ``other``, so a flood of names cannot grow the
series without end. Runs and events are never labels. prometheus_client escapes label values
(quotes, backslashes, newlines) in the exposition format.

Two sets of names: ``tidings_*``, and Inngest's (``inngest_function_run_*``,
``inngest_sdk_req_*``, ``inngest_queue_depth``) with Inngest's labels (``fn`` is the function's
slug), so dashboards made for Inngest keep working.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram

OTHER = "other"
REGISTRY = CollectorRegistry(auto_describe=True)


class Fold:
    """The label values of one kind: the first ``limit`` distinct values are kept, the rest
    counted as ``other``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        if value is None or value == "":
            return OTHER
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self.limit:
                self._seen.add(value)
                return value
        return OTHER


event_names = Fold(100)
names = Fold(1000)  # apps and functions
_on = True


def configure(*, on: bool = True, max_event_names: int = 100, max_names: int = 1000) -> None:
    """Count or not (``--no-metrics``: the counting functions below return at once), and the
    bounds of the folded labels (values already kept stay)."""
    global _on
    _on = on
    event_names.limit = max_event_names
    names.limit = max_names


def counting() -> bool:
    return _on


_LONG = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600,
         86400)
_HTTP = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

events_received = Counter(
    "tidings_events_received_total", "Events received, by door (event_api: POST /e/{key}; "
    "rest_api: POST /v1/events; run: sent from a step) and outcome (accepted; rejected, "
    "overloaded or failed: counted once per request).", ["source", "outcome"],
    registry=REGISTRY)
http_request_duration = Histogram(
    "tidings_http_request_duration_seconds", "HTTP requests, by route template, method and "
    "status.", ["route", "method", "status"], buckets=_HTTP, registry=REGISTRY)
runs_scheduled = Counter(
    "tidings_runs_scheduled_total", "Runs created, by app, function and trigger (the event "
    "name, cron, invoke or rerun).", ["app", "function", "trigger"], registry=REGISTRY)
runs_started = Counter(
    "tidings_runs_started_total", "Runs whose first call began.", ["app", "function"],
    registry=REGISTRY)
runs_finished = Counter(
    "tidings_runs_finished_total", "Runs that ended, by status (Completed, Failed, "
    "Cancelled).", ["app", "function", "status"], registry=REGISTRY)
run_duration = Histogram(
    "tidings_run_duration_seconds", "From a run's start to its end.",
    ["app", "function", "status"], buckets=_LONG, registry=REGISTRY)
run_start_latency = Histogram(
    "tidings_run_start_latency_seconds", "From a run's creation (or due time) to its first "
    "call.", ["app", "function"], buckets=_LONG, registry=REGISTRY)
sdk_requests = Counter(
    "tidings_sdk_requests_total", "Requests to SDK apps, by outcome (success: a 2xx answer; "
    "error: any other status; unreachable: no answer).", ["app", "function", "outcome"],
    registry=REGISTRY)
sdk_request_duration = Histogram(
    "tidings_sdk_request_duration_seconds", "Requests to SDK apps, until their answer was "
    "read.", ["app", "function", "outcome"], buckets=_LONG, registry=REGISTRY)
step_retries = Counter(
    "tidings_step_retries_total", "Failed step attempts that will be tried again.",
    ["app", "function"], registry=REGISTRY)
app_syncs = Counter(
    "tidings_app_syncs_total", "Syncs of SDK apps, by result (changed, unchanged, failed, "
    "unreachable, refused).", ["app", "result"], registry=REGISTRY)

inngest_run_scheduled = Counter(
    "inngest_function_run_scheduled_total", "Function runs scheduled (Inngest's name).",
    ["fn"], registry=REGISTRY)
inngest_run_started = Counter(
    "inngest_function_run_started_total", "Function runs started (Inngest's name).", ["fn"],
    registry=REGISTRY)
inngest_run_ended = Counter(
    "inngest_function_run_ended_total", "Function runs ended (Inngest's name).",
    ["fn", "status"], registry=REGISTRY)
inngest_sdk_scheduled = Counter(
    "inngest_sdk_req_scheduled_total", "SDK requests scheduled (Inngest's name).", ["fn"],
    registry=REGISTRY)
inngest_sdk_started = Counter(
    "inngest_sdk_req_started_total", "SDK requests started (Inngest's name).", ["fn"],
    registry=REGISTRY)
inngest_sdk_ended = Counter(
    "inngest_sdk_req_ended_total", "SDK requests ended, by status (success, errored).",
    ["fn", "status"], registry=REGISTRY)


def scheduled(app: str, function: str, trigger: str, count: int = 1) -> None:
    if not _on:
        return
    fn = names(function)
    runs_scheduled.labels(names(app), fn, event_names(trigger)).inc(count)
    inngest_run_scheduled.labels(fn).inc(count)


def started(app: str, function: str, latency_s: float) -> None:
    if not _on:
        return
    fn = names(function)
    runs_started.labels(names(app), fn).inc()
    run_start_latency.labels(names(app), fn).observe(max(0.0, latency_s))
    inngest_run_started.labels(fn).inc()


def finished(app: str, function: str, status: str, duration_s: float | None) -> None:
    if not _on:
        return
    fn = names(function)
    runs_finished.labels(names(app), fn, status).inc()
    if duration_s is not None:
        run_duration.labels(names(app), fn, status).observe(max(0.0, duration_s))
    inngest_run_ended.labels(fn, status).inc()


def sdk_request(app: str, function: str, outcome: str, duration_s: float) -> None:
    if not _on:
        return
    fn = names(function)
    sdk_requests.labels(names(app), fn, outcome).inc()
    sdk_request_duration.labels(names(app), fn, outcome).observe(duration_s)
    inngest_sdk_scheduled.labels(fn).inc()
    inngest_sdk_started.labels(fn).inc()
    inngest_sdk_ended.labels(fn, "success" if outcome == "success" else "errored").inc()


def step_retried(app: str, function: str) -> None:
    if not _on:
        return
    step_retries.labels(names(app), names(function)).inc()


def app_synced(app: str | None, result: str) -> None:
    if not _on:
        return
    app_syncs.labels(names(app), result).inc()


def received(source: str, outcome: str, count: int = 1) -> None:
    if not _on:
        return
    events_received.labels(source, outcome).inc(count)
