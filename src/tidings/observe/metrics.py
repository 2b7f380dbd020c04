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

import bisect
import threading
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

OTHER = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # others: other
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
    _Found.clear()


def counting() -> bool:
    return _on


_LONG = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600,
         86400)
_HTTP = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _Sharded:
    """A metric kept per thread, without locks: each thread (the event loop, the SQLite writer
    …) adds to its own table, and a scrape sums the tables. ``prometheus_client``'s own types
    take a lock per update (two per histogram observation): microseconds on every request
    and every run, a noticeable part of the cheapest ones (P1, P3). Exposed through
    ``prometheus_client`` (``collect``) like any other."""

    width: int  # values per series

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        self._local = threading.local()
        self._shards: list[dict[tuple[str, ...], list[float]]] = []
        self._shards_lock = threading.Lock()  # taken once per thread, for its first update
        REGISTRY.register(self)  # type: ignore[arg-type]

    def _shard(self) -> dict[tuple[str, ...], list[float]]:
        shard: dict[tuple[str, ...], list[float]] | None = getattr(self._local, "shard", None)
        if shard is None:
            shard = self._local.shard = {}
            with self._shards_lock:
                self._shards.append(shard)
        return shard

    def series(self, labels: tuple[str, ...]) -> list[float]:
        """This thread's values of the series ``labels`` (label values folded already), made
        on first use: what a ``Children`` entry updates."""
        shard = self._shard()
        values = shard.get(labels)
        if values is None:
            values = shard[labels] = [0.0] * self.width
        return values

    def summed(self, width: int) -> dict[tuple[str, ...], list[float]]:
        total: dict[tuple[str, ...], list[float]] = {}
        for shard in list(self._shards):
            for labels, values in list(shard.items()):
                into = total.setdefault(labels, [0.0] * width)
                for i, value in enumerate(values):
                    into[i] += value
        return total


class FastCounter(_Sharded):
    width = 1

    def inc(self, labels: tuple[str, ...], amount: float = 1) -> None:
        self.series(labels)[0] += amount

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, (value,) in self.summed(1).items():
            family.add_metric(list(labels), value)
        yield family


class FastHistogram(_Sharded):
    def __init__(self, name: str, documentation: str, labels: Sequence[str],
                 buckets: Sequence[float]) -> None:
        self.bounds = [float(b) for b in buckets]  # before registering: it collects
        self.width = len(self.bounds) + 2  # buckets, +Inf, sum
        super().__init__(name, documentation, labels)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, series in self.summed(self.width).items():
            running, buckets = 0.0, []
            for bound, count in zip([*self.bounds, float("inf")], series[:-1], strict=True):
                running += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            family.add_metric(list(labels), buckets, series[-1])
        yield family


events_received = FastCounter(
    "tidings_events_received", "Events received, by door (event_api: POST /e/{key}; "
    "rest_api: POST /v1/events; run: sent from a step) and outcome (accepted; rejected, "
    "overloaded or failed: counted once per request).", ["source", "outcome"])
http_request_duration = FastHistogram(
    "tidings_http_request_duration_seconds", "HTTP requests, by route template, method and "
    "status.", ["route", "method", "status"], _HTTP)
runs_scheduled = FastCounter(
    "tidings_runs_scheduled", "Runs created, by app, function and trigger (the event name, "
    "cron, invoke or rerun).", ["app", "function", "trigger"])
runs_started = FastCounter(
    "tidings_runs_started", "Runs whose first call began.", ["app", "function"])
runs_finished = FastCounter(
    "tidings_runs_finished", "Runs that ended, by status (Completed, Failed, Cancelled).",
    ["app", "function", "status"])
run_duration = FastHistogram(
    "tidings_run_duration_seconds", "From a run's start to its end.",
    ["app", "function", "status"], _LONG)
run_start_latency = FastHistogram(
    "tidings_run_start_latency_seconds", "From a run's creation (or due time) to its first "
    "call.", ["app", "function"], _LONG)
sdk_requests = FastCounter(
    "tidings_sdk_requests", "Requests to SDK apps, by outcome (success: a 2xx answer; error: "
    "any other status; unreachable: no answer).", ["app", "function", "outcome"])
sdk_request_duration = FastHistogram(
    "tidings_sdk_request_duration_seconds", "Requests to SDK apps, until their answer was "
    "read.", ["app", "function", "outcome"], _LONG)
step_retries = FastCounter(
    "tidings_step_retries", "Failed step attempts that will be tried again.",
    ["app", "function"])
app_syncs = FastCounter(
    "tidings_app_syncs", "Syncs of SDK apps, by result (changed, unchanged, failed, "
    "unreachable, refused).", ["app", "result"])
connect_calls = FastCounter(
    "tidings_connect_calls", "Calls to Connect workers that ended, by route (local: made "
    "here down a socket held here; relayed: made here through another process's socket; "
    "forwarded: made by another process down a socket held here; none: no live connection "
    "with room was found) and outcome (replied, failed).", ["route", "outcome"])



class InngestNames:
    """Inngest's series, summed at scrape time from the ``tidings_*`` counters they mirror
    (nothing more is counted for them): ``fn`` is the function's slug; SDK requests end as
    ``success`` or ``errored``."""

    MIRRORS = (  # Inngest's name, its help, the counter it sums, that counter's labels kept
        ("inngest_function_run_scheduled", "Function runs scheduled (Inngest's name).",
         runs_scheduled, (1,)),
        ("inngest_function_run_started", "Function runs started (Inngest's name).",
         runs_started, (1,)),
        ("inngest_function_run_ended", "Function runs ended (Inngest's name).",
         runs_finished, (1, 2)),
        ("inngest_sdk_req_scheduled", "SDK requests scheduled (Inngest's name).",
         sdk_requests, (1,)),
        ("inngest_sdk_req_started", "SDK requests started (Inngest's name).",
         sdk_requests, (1,)),
        ("inngest_sdk_req_ended", "SDK requests ended, by status (success, errored).",
         sdk_requests, (1, 2)),
    )

    def collect(self) -> Iterator[Metric]:
        for name, documentation, source, kept in self.MIRRORS:
            labels = ["fn"] + (["status"] if len(kept) > 1 else [])
            family = CounterMetricFamily(name, documentation, labels=labels)
            summed: dict[tuple[str, ...], float] = {}
            for key, (value,) in source.summed(1).items():
                values = tuple(key[i] for i in kept)
                if source is sdk_requests and len(kept) > 1:
                    values = (values[0], "success" if values[1] == "success" else "errored")
                summed[values] = summed.get(values, 0.0) + value
            for values, value in summed.items():
                family.add_metric(list(values), value)
            yield family


REGISTRY.register(InngestNames())


class _Found(threading.local):
    """The series an update of each kind and label values as given goes to, in this thread
    (``_found.series``): folding the values, making the label tuple and finding each metric's
    table for this thread cost more than the update itself, and runs and requests repeat the
    same few (``started``, ``finished``: about 1 µs each instead of 3). A ``threading.local``
    whose table each thread gets on first use, so that an update finds it with one attribute
    read rather than a call (``POST /e/{key}`` makes two updates, on a path of some 60 µs).
    Label values as given come from users, so a thread keeps at most ``LIMIT`` entries (then
    starts again: ``_kept``); ``configure`` empties them, as the bounds they were folded by
    may change."""

    LIMIT: ClassVar[int] = 4096
    _all: ClassVar[list[dict[tuple[Any, ...], Any]]] = []
    _lock: ClassVar[threading.Lock] = threading.Lock()  # taken once per thread, at its start

    def __init__(self) -> None:
        self.series: dict[tuple[Any, ...], Any] = {}
        with self._lock:
            self._all.append(self.series)

    @classmethod
    def clear(cls) -> None:
        with cls._lock:
            for found in cls._all:
                found.clear()


_found = _Found()


def _kept(key: tuple[Any, ...], series: Any) -> Any:
    """``series`` kept as what an update ``key`` goes to in this thread."""
    found = _found.series
    if len(found) >= _Found.LIMIT:
        found.clear()
    found[key] = series
    return series


def _observe(series: list[float], bounds: list[float], value: float) -> None:
    series[bisect.bisect_left(bounds, value)] += 1
    series[-1] += value


def scheduled(app: str, function: str, trigger: str, count: int = 1) -> None:
    if not _on:
        return
    series = _found.series.get(("scheduled", app, function, trigger))
    if series is None:
        series = _kept(("scheduled", app, function, trigger), runs_scheduled.series(
            (names(app), names(function), event_names(trigger))))
    series[0] += count


def _counted(key: tuple[str, ...], counter: FastCounter, histogram: FastHistogram,
             value: float | None) -> None:
    """One more in ``counter`` and ``value`` (unless None) in ``histogram``, both labelled by
    ``key`` after its kind: the app and function, folded (``names``), then the rest as given
    (a status or an outcome, from a fixed set)."""
    found = _found.series.get(key)
    if found is None:
        labels = (names(key[1]), names(key[2]), *key[3:])
        found = _kept(key, (counter.series(labels), histogram.series(labels)))
    count, series = found
    count[0] += 1
    if value is not None:
        _observe(series, histogram.bounds, value)


def started(app: str, function: str, latency_s: float) -> None:
    if _on:
        _counted(("started", app, function), runs_started, run_start_latency,
                 max(0.0, latency_s))


def finished(app: str, function: str, status: str, duration_s: float | None) -> None:
    if _on:
        _counted(("finished", app, function, status), runs_finished, run_duration,
                 None if duration_s is None else max(0.0, duration_s))


def sdk_request(app: str, function: str, outcome: str, duration_s: float) -> None:
    if _on:
        _counted(("sdk_request", app, function, outcome), sdk_requests,
                 sdk_request_duration, duration_s)


def http_request(route: str, method: str, status: int, took_s: float) -> None:
    """An HTTP request answered (by route template, never the raw path; a method not in
    ``METHODS`` as ``other``)."""
    if not _on:
        return
    series = _found.series.get(("http", route, method, status))
    if series is None:
        series = _kept(("http", route, method, status), http_request_duration.series(
            (route, method if method in METHODS else OTHER, str(status))))
    _observe(series, http_request_duration.bounds, took_s)


def step_retried(app: str, function: str) -> None:
    if not _on:
        return
    step_retries.inc((names(app), names(function)))


def app_synced(app: str | None, result: str) -> None:
    if not _on:
        return
    app_syncs.inc((names(app), result))


def received(source: str, outcome: str, count: int = 1) -> None:
    if not _on:
        return
    series = _found.series.get(("received", source, outcome))
    if series is None:
        series = _kept(("received", source, outcome), events_received.series((source, outcome)))
    series[0] += count


def connect_call(route: str, outcome: str) -> None:
    if not _on:
        return
    connect_calls.inc((route, outcome))
