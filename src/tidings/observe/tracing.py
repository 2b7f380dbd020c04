"""Traces (OpenTelemetry), optional: ``pip install 'tidings[otel]'``. Off unless the standard
OTel environment says where spans go (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_TRACES_EXPORTER``, not ``none``); when off,
nothing of OpenTelemetry is imported and every call here returns at once.

The spans follow the OpenTelemetry messaging conventions (``messaging.system=tidings``):

- each HTTP request is a SERVER span, a child of the caller's ``traceparent`` header
  (``observe/http.py``); storing events adds a PRODUCER child ``send events``
  (``messaging.batch.message_count``), and each event keeps that span's context with it
  (``events.traceparent``): its creation context, inside the sender's trace;
- each run is a CONSUMER span ``process {function}``, linked to the creation context of its
  events (``runs/traces.py``). Runs outlive processes, so it is recorded when the run ends —
  completed, failed or cancelled — with its real start time, and its ids are derived from
  the run's id (``run_ids``): every process that drives the run puts its spans under
  it, before the span itself exists;
- each step attempt is an INTERNAL span (``tidings.step.id``, ``tidings.step.op``,
  ``tidings.step.attempt``), a failed one with status ERROR; sleeps, waits and invocations
  are spans from the pause to the resumption, recorded with the run;
- each call to an SDK app is an HTTP CLIENT span whose context goes with the request as
  ``traceparent``, so the app's own spans nest inside the run.

Every span is built finished and handed to the span processor (``_Sink``), not started through
the SDK's tracer: a span started there costs about 45 µs of CPU here (sampler, attribute
checks, context attach and detach), against some 3 µs this way, and ingest makes two per
request (``bench/README.md``, P10). Sampling follows ``OTEL_TRACES_SAMPLER`` (``_Sampler``):
a sampled caller's context is followed; a trace that begins here is kept at the configured
ratio of its trace id, so every process decides the same for a run's trace.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import hashlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

from tidings.version import VERSION

log = logging.getLogger("tidings.tracing")
SYSTEM = "tidings"
_sink: _Sink | None = None
_getrandbits = random.getrandbits
_time_ns = time.time_ns
_LOW_64 = (1 << 64) - 1
DROPS_LOGGED_EVERY_S = 60.0


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the OTel environment asks for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure(environ: Mapping[str, str] = os.environ) -> bool:
    """Turn tracing on when the environment asks for it (once per process, at start); True
    when on. Without the ``otel`` extra installed it says so and stays off."""
    if not wanted(environ):
        return False
    try:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter
    except ImportError:
        log.warning("OTEL_* variables ask for traces, but OpenTelemetry is not installed: "
                    "pip install 'tidings[otel]'; tracing stays off")
        return False
    exporter: Any
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # endpoint, headers, timeout: from the OTEL_* variables
    export_to(exporter, environ)
    log.info("tracing on: spans go to %s", type(exporter).__name__)
    return True


def export_to(exporter: Any, environ: Mapping[str, str] = os.environ) -> None:
    """Send spans to ``exporter`` (an OTel SDK span exporter) in batches (``_Batches``),
    sampled as ``environ`` says."""
    global _sink
    sink = _Sink(_resource(environ), _Sampler.from_env(environ))
    sink.add = _Batches(exporter, environ, sink.span).add
    _sink = sink


def use(processor: Any, environ: Mapping[str, str] = os.environ) -> None:
    """Send spans to ``processor`` (an OTel SDK span processor: tests give one with an
    in-memory exporter), sampled as ``environ`` says. ``None`` turns tracing off."""
    global _sink
    if processor is None:
        _sink = None
        return
    sink = _Sink(_resource(environ), _Sampler.from_env(environ))
    sink.add = lambda record: processor.on_end(sink.span(record))
    _sink = sink


def on() -> bool:
    return _sink is not None


def _resource(environ: Mapping[str, str]) -> Any:
    from opentelemetry.sdk.resources import Resource

    return Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", "tidings")})


def _setting(environ: Mapping[str, str], name: str, default: int) -> int:
    try:
        value = int(environ.get(name, default))
    except ValueError:
        value = 0
    if value <= 0:
        log.warning("%s=%r is not a positive whole number: %d is used", name,
                    environ.get(name), default)
        return default
    return value


class _Batches:
    """Spans on their way to the exporter, in batches, as the SDK's ``BatchSpanProcessor``
    sends them and with its settings (``OTEL_BSP_SCHEDULE_DELAY``, ``_MAX_QUEUE_SIZE``,
    ``_MAX_EXPORT_BATCH_SIZE``, ``_EXPORT_TIMEOUT``): a thread exports a batch once one is
    full or the delay has passed, and what is left when the process exits.

    Adding a span is a deque append, a count and a length check: the SDK's processor also
    takes the process id (a system call) and counts for its own metrics on every span. What
    waits is the span's compact ``Record``; its ``ReadableSpan`` is made as its batch goes
    out. Whole spans waiting for export (over a kilobyte each, up to a batch of 512) made
    every traced request dearer by some 15 µs in the cache misses they cause (``bench/
    README.md``, P10). A full queue drops its oldest span; drops are counted and logged."""

    def __init__(self, exporter: Any, environ: Mapping[str, str],
                 span: Callable[[Record], Any]) -> None:
        self.exporter = exporter
        self.span = span
        self.delay = _setting(environ, "OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        self.batch = _setting(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)
        self.timeout = _setting(environ, "OTEL_BSP_EXPORT_TIMEOUT", 30000) / 1000
        limit = max(self.batch, _setting(environ, "OTEL_BSP_MAX_QUEUE_SIZE", 2048))
        self.queue: collections.deque[Any] = collections.deque(maxlen=limit)
        self.added = 0
        self.sent = 0  # exported or dropped
        self.dropped = 0
        self.unreported = 0  # dropped, not logged yet
        self.reported = -DROPS_LOGGED_EVERY_S
        self.awake = threading.Event()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="tidings-spans", daemon=True)
        self.thread.start()
        atexit.register(self.shutdown)

    def add(self, record: Record) -> None:
        queue = self.queue
        queue.append(record)
        self.added += 1
        if len(queue) >= self.batch and not self.awake.is_set():
            self.awake.set()

    def _run(self) -> None:
        while not self.stopping:
            self.awake.wait(self.delay)
            self.awake.clear()
            self._export()
        self._export()

    def _export(self) -> None:
        queue = self.queue
        while queue:
            batch = []
            with contextlib.suppress(IndexError):
                for _ in range(self.batch):
                    batch.append(self.span(queue.popleft()))
            try:
                self.exporter.export(batch)
            except Exception:
                log.exception("exporting %d spans failed; they are dropped", len(batch))
            self.sent += len(batch)
        lost = self.added - self.sent - len(queue) - self.dropped  # read in this order, the
        if lost > 0:                                                # adds meanwhile never count
            self.dropped += lost
            self.unreported += lost
        now = time.monotonic()
        if self.unreported and (self.stopping or now - self.reported >= DROPS_LOGGED_EVERY_S):
            log.warning("%d spans were dropped: they came faster than %s took them "
                        "(OTEL_BSP_MAX_QUEUE_SIZE=%d)", self.unreported,
                        type(self.exporter).__name__, queue.maxlen)
            self.unreported, self.reported = 0, now

    def shutdown(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.awake.set()
        self.thread.join(self.timeout)
        with contextlib.suppress(Exception):
            self.exporter.shutdown()


class _Sampler:
    """``OTEL_TRACES_SAMPLER`` (and ``_ARG``): whether a trace that begins here is kept
    (``root``), and whether a caller's unsampled context is followed or overridden
    (``parent_based``). The ratio is taken of the trace id's low 64 bits, as the SDK's
    ``TraceIdRatioBased`` does, so it gives every process the same answer."""

    __slots__ = ("bound", "parent_based")

    def __init__(self, ratio: float, parent_based: bool) -> None:
        self.bound = round(max(0.0, min(1.0, ratio)) * (1 << 64))
        self.parent_based = parent_based

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> _Sampler:
        name = environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
        parent_based = name.startswith("parentbased_")
        kind = name.removeprefix("parentbased_")
        if kind == "always_off":
            return cls(0.0, parent_based)
        if kind == "traceidratio":
            try:
                return cls(float(environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0")), parent_based)
            except ValueError:
                log.warning("OTEL_TRACES_SAMPLER_ARG is not a number: every trace is kept")
        elif kind != "always_on":
            log.warning("OTEL_TRACES_SAMPLER=%s is not supported here: every trace is kept",
                        name)
        return cls(1.0, parent_based)

    def root(self, trace_id: int) -> bool:
        return (trace_id & _LOW_64) < self.bound

    def child(self, trace_id: int, parent_sampled: bool) -> bool:
        return parent_sampled if self.parent_based else self.root(trace_id)


Record = tuple[Any, ...]  # a finished span as ``_Sink.emit`` keeps it (``_Sink.span``)


class _Sink:
    """Where spans go: each finished span as a compact ``Record`` to ``add``, made a
    ``ReadableSpan`` by ``span`` when it is handed to the exporter or processor; the constant
    parts (resource, scope, flags, kinds, the unset status) made once."""

    def __init__(self, resource: Any, sampler: _Sampler) -> None:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import Status, StatusCode

        scope = InstrumentationScope("tidings", VERSION)

        class Finished(ReadableSpan):
            """A span recorded whole: ``ReadableSpan`` without its keyword handling."""

            _resource = resource
            _instrumentation_scope = scope
            _instrumentation_info = None
            _events = ()

            def __init__(self, name: str, context: Any, parent: Any, kind: Any,
                         attributes: dict[str, Any], start: int, end: int, status: Any,
                         links: Sequence[Any]) -> None:
                self._name = name
                self._context = context
                self._parent = parent
                self._kind = kind
                self._attributes = attributes
                self._start_time = start
                self._end_time = end
                self._status = status
                self._links = links

        self.add: Callable[[Record], None] = lambda record: None
        self.sampler = sampler
        self.finished = Finished
        self.context = _contexts(trace)
        self.link = trace.Link
        self.flags = trace.TraceFlags(trace.TraceFlags.SAMPLED)
        self.unsampled = trace.TraceFlags(0)
        self.kinds = {kind.name: kind for kind in trace.SpanKind}
        self.unset = Status(StatusCode.UNSET)
        self.status = Status
        self.error = StatusCode.ERROR

    def emit(self, name: str, kind: str, trace_id: int, span_id: int,
             parent_span_id: int | None, remote_parent: bool, start: int, end: int,
             keys: tuple[str, ...] | None, values: Any, error: str | None = None,
             links: Sequence[tuple[int, int, bool]] = ()) -> None:
        """Record a finished span (sampled: the caller decided). Its attributes are
        ``values`` under ``keys`` (or ``values`` itself, a dict, when ``keys`` is None);
        ``error``: its status is ERROR with that description ("" for none); ``links``:
        ``(trace_id, span_id, sampled)`` of the contexts it is linked to."""
        self.add((name, kind, trace_id, span_id, parent_span_id, remote_parent, start,
                  max(end, start), keys, values, error, links))

    def span(self, record: Record) -> Any:
        """The ``ReadableSpan`` of a record."""
        (name, kind, trace_id, span_id, parent_span_id, remote_parent, start, end, keys,
         values, error, links) = record
        context = self.context(trace_id, span_id, False, self.flags)
        parent = None if parent_span_id is None else self.context(
            trace_id, parent_span_id, remote_parent, self.flags)
        status = self.unset if error is None else self.status(self.error, error or None)
        attributes = values if keys is None else dict(zip(keys, values))  # noqa: B905 (one length)
        linked = [self.link(self.context(t, s, True, self.flags if sampled else self.unsampled))
                  for t, s, sampled in links] if links else ()
        return self.finished(name, context, parent, self.kinds[kind], attributes, start, end,
                             status, linked)


def _contexts(trace: Any) -> Callable[[int, int, bool, Any], Any]:
    """A maker of ``SpanContext``s for ids of our own (non-zero, in range): the tuple its
    constructor builds, without the constructor's checks (a third of the cost of making a
    span). Should the API's layout ever differ, the constructor itself."""
    from opentelemetry.trace.span import DEFAULT_TRACE_STATE

    span_context = trace.SpanContext
    flags = trace.TraceFlags(trace.TraceFlags.SAMPLED)

    def quick(trace_id: int, span_id: int, remote: bool, trace_flags: Any) -> Any:
        return tuple.__new__(span_context, (trace_id, span_id, remote, trace_flags,
                                            DEFAULT_TRACE_STATE, True))

    sample = (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, flags)
    built, made = span_context(*sample), quick(*sample)
    same = (tuple(built) == tuple(made) and made.trace_id == built.trace_id
            and made.span_id == built.span_id and made.is_remote and made.is_valid
            and made.trace_flags.sampled and made.trace_state is built.trace_state)
    return quick if same else span_context


_SERVER = ("http.request.method", "http.route", "http.response.status_code")
_PRODUCER = ("messaging.system", "messaging.operation.type", "messaging.operation.name",
             "messaging.batch.message_count")
_STEP = ("tidings.step.id", "tidings.step.name", "tidings.step.op", "tidings.step.attempt",
         "tidings.run.id")
_PAUSE = ("tidings.step.id", "tidings.step.name", "tidings.step.op", "tidings.run.id")


# -- contexts ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)  # a run's steps, calls and end ask for the same ids
def run_ids(run_id: str) -> tuple[int, int]:
    """The trace id and span id of a run's span, the same in every process."""
    digest = hashlib.sha256(f"tidings-run:{run_id}".encode()).digest()
    return int.from_bytes(digest[:16]) or 1, int.from_bytes(digest[16:24]) or 1


def _parsed(traceparent: str | None) -> tuple[int, int, bool] | None:
    """``(trace_id, span_id, sampled)`` of a W3C ``traceparent``; None when absent or bad."""
    if not traceparent:
        return None
    parts = traceparent.strip().split("-")
    if (len(parts) < 4 or len(parts[0]) != 2 or len(parts[1]) != 32 or len(parts[2]) != 16
            or len(parts[3]) < 2 or parts[0].lower() == "ff"):
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(flags & 1)


def valid_traceparent(value: Any) -> str | None:
    """``value`` when it is a well-formed W3C ``traceparent``, else None."""
    return value if isinstance(value, str) and _parsed(value) is not None else None


def _ms_ns(ms: int) -> int:
    return ms * 1_000_000


# -- ingest spans --------------------------------------------------------------------------------


class Request:
    """The SERVER span of the HTTP request being answered, until it ends (``request_ended``).
    ``token`` puts it back out of the context."""

    __slots__ = ("parent_span_id", "sampled", "span_id", "start", "token", "trace_id")

    def __init__(self, trace_id: int, span_id: int, parent_span_id: int | None,
                 sampled: bool) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_span_id = parent_span_id
        self.sampled = sampled
        self.start = _time_ns()
        self.token: Token[Request | None] | None = None


_request: ContextVar[Request | None] = ContextVar("tidings_request_span", default=None)


def request_began(headers: Sequence[tuple[bytes, bytes]]) -> Request | None:
    """The SERVER span of a request with these (ASGI) headers, a child of its
    ``traceparent``; None when tracing is off. It is the request's until
    ``request_ended``."""
    sink = _sink
    if sink is None:
        return None
    parent = None
    for key, value in headers:
        if key == b"traceparent":
            parent = _parsed(value.decode("latin-1"))
            break
    if parent is None:
        trace_id = _getrandbits(128) or 1
        span = Request(trace_id, _getrandbits(64) or 1, None, sink.sampler.root(trace_id))
    else:
        span = Request(parent[0], _getrandbits(64) or 1, parent[1],
                       sink.sampler.child(parent[0], parent[2]))
    span.token = _request.set(span)
    return span


def request_ended(span: Request, route: str, method: str, status: int) -> None:
    """The request was answered with ``status``: its span is recorded, named after its
    route."""
    if span.token is not None:
        _request.reset(span.token)
    sink = _sink
    if sink is None or not span.sampled:
        return
    sink.emit(f"{method} {route}", "SERVER", span.trace_id, span.span_id,
              span.parent_span_id, True, span.start, _time_ns(), _SERVER,
              (method, route, status), "" if status >= 500 else None)


class Producer:
    """The PRODUCER span of storing a request's events; ``traceparent`` is its context,
    which each of them keeps."""

    __slots__ = ("count", "parent_span_id", "remote_parent", "sampled", "span_id", "start",
                 "trace_id", "traceparent")

    def __init__(self, count: int, trace_id: int, parent_span_id: int | None,
                 remote_parent: bool, sampled: bool) -> None:
        self.count = count
        self.trace_id = trace_id
        self.span_id = _getrandbits(64) or 1
        self.parent_span_id = parent_span_id
        self.remote_parent = remote_parent
        self.sampled = sampled
        self.start = _time_ns()
        self.traceparent = (f"00-{trace_id:032x}-{self.span_id:016x}-"
                            f"{'01' if sampled else '00'}")


def producing(count: int, sender: str | None = None) -> Producer | None:
    """The PRODUCER span of storing ``count`` events (``produced`` records it), under the
    request's SERVER span, or else under ``sender`` (a ``traceparent`` the events came
    with); None when tracing is off."""
    sink = _sink
    if sink is None:
        return None
    request = _request.get()
    if request is not None:
        return Producer(count, request.trace_id, request.span_id, False, request.sampled)
    parent = _parsed(sender)
    if parent is not None:
        return Producer(count, parent[0], parent[1], True,
                        sink.sampler.child(parent[0], parent[2]))
    trace_id = _getrandbits(128) or 1
    return Producer(count, trace_id, None, False, sink.sampler.root(trace_id))


def produced(span: Producer) -> None:
    sink = _sink
    if sink is None or not span.sampled:
        return
    sink.emit("send events", "PRODUCER", span.trace_id, span.span_id, span.parent_span_id,
              span.remote_parent, span.start, _time_ns(), _PRODUCER,
              (SYSTEM, "send", "send", span.count))


# -- run spans -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Pause:
    """A sleep, wait or invocation of a run, from when it was recorded to the resumption."""

    step: str
    name: str
    kind: str
    started_at: int
    ended_at: int


def step_span(run_id: str, *, step: str, name: str, op: str, attempt: int, started_at: int,
              ended_at: int, error: Mapping[str, Any] | None = None) -> None:
    """One attempt of a step, under the run's span."""
    sink = _sink
    if sink is None:
        return
    trace_id, run_span_id = run_ids(run_id)
    if not sink.sampler.root(trace_id):
        return
    sink.emit(f"step {name}", "INTERNAL", trace_id, _getrandbits(64) or 1, run_span_id, True,
              _ms_ns(started_at), _ms_ns(ended_at), _STEP, (step, name, op, attempt, run_id),
              None if error is None
              else f"{error.get('name')}: {error.get('message')}"[:500])


def run_span(run_id: str, *, function: str, app: str, status: str, started_at: int,
             ended_at: int, attempt: int, event_ids: Sequence[str],
             traceparents: Sequence[str], pauses: Sequence[Pause] = ()) -> None:
    """The CONSUMER span of a run that ended, with the ids ``run_ids`` gives, linked to the
    creation context of its events; and its pauses, under it."""
    sink = _sink
    if sink is None:
        return
    trace_id, span_id = run_ids(run_id)
    if not sink.sampler.root(trace_id):
        return
    links = [parsed for parsed in map(_parsed, traceparents) if parsed is not None]
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM, "messaging.operation.type": "process",
        "messaging.operation.name": "process", "messaging.destination.name": function,
        "tidings.run.id": run_id, "tidings.function": function, "tidings.app": app,
        "tidings.run.status": status, "tidings.run.attempt": attempt}
    if len(event_ids) == 1:
        attributes["messaging.message.id"] = event_ids[0]
    else:
        attributes["messaging.batch.message_count"] = len(event_ids)
    for pause in pauses:
        sink.emit(f"{pause.kind} {pause.name}", "INTERNAL", trace_id, _getrandbits(64) or 1,
                  span_id, False, _ms_ns(pause.started_at), _ms_ns(pause.ended_at), _PAUSE,
                  (pause.step, pause.name, pause.kind, run_id))
    sink.emit(f"process {function}", "CONSUMER", trace_id, span_id, None, False,
              _ms_ns(started_at), _ms_ns(ended_at), None, attributes,
              None if status == "Completed" else status, links)


class Client:
    """An HTTP CLIENT span of a call to an SDK app, until it is answered (``answered``)."""

    __slots__ = ("attributes", "error", "run_span_id", "span_id", "start", "trace_id")

    def __init__(self, trace_id: int, run_span_id: int, attributes: dict[str, Any]) -> None:
        self.trace_id = trace_id
        self.run_span_id = run_span_id
        self.span_id = _getrandbits(64) or 1
        self.attributes = attributes
        self.start = _time_ns()
        self.error: str | None = None


@contextmanager
def client_span(run_id: str, method: str, url: str, headers: dict[str, str]
                ) -> Iterator[Client | None]:
    """An HTTP CLIENT span for a call to an SDK app under the run's span; its context goes
    into ``headers`` (``traceparent``). Yields the span (None when off)."""
    sink = _sink
    if sink is None:
        yield None
        return
    trace_id, run_span_id = run_ids(run_id)
    sampled = sink.sampler.root(trace_id)
    span = Client(trace_id, run_span_id, {"http.request.method": method, "url.full": url,
                                          "tidings.run.id": run_id})
    headers["traceparent"] = (f"00-{trace_id:032x}-{span.span_id:016x}-"
                              f"{'01' if sampled else '00'}")
    try:
        yield span
    except BaseException as exc:
        span.error = type(exc).__name__
        raise
    finally:
        if sampled:
            sink.emit(method, "CLIENT", trace_id, span.span_id, run_span_id, True,
                      span.start, _time_ns(), None, span.attributes, span.error)


def answered(span: Client | None, status: int | None) -> None:
    """A CLIENT span's answer (None: no answer)."""
    if span is None:
        return
    if status is None:
        span.error = "no answer"
        return
    span.attributes["http.response.status_code"] = status
    if status >= 400:
        span.error = ""
