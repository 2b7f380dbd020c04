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
  the run's id (``run_context``): every process that drives the run puts its spans under
  it, before the span itself exists;
- each step attempt is an INTERNAL span (``tidings.step.id``, ``tidings.step.op``,
  ``tidings.step.attempt``), a failed one with status ERROR; sleeps, waits and invocations
  are spans from the pause to the resumption, recorded with the run;
- each call to an SDK app is an HTTP CLIENT span whose context goes with the request as
  ``traceparent``, so the app's own spans nest inside the run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from tidings.version import VERSION

log = logging.getLogger("tidings.tracing")
SYSTEM = "tidings"
_tracer: Any = None
_direct: _Direct | None = None  # the ingest spans' way to the processor (``_Quick``)
_chosen: ContextVar[tuple[int, int] | None] = ContextVar("tidings_span_ids", default=None)


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
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
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
    use(BatchSpanProcessor(exporter))
    log.info("tracing on: spans go to %s", type(exporter).__name__)
    return True


def use(processor: Any) -> Any:
    """Send spans to ``processor`` (an OTel SDK span processor; tests give one with an
    in-memory exporter); the tracer provider is returned. ``None`` turns tracing off."""
    global _tracer, _direct
    if processor is None:
        _tracer = _direct = None
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME",
                                                               "tidings")})
    provider = TracerProvider(resource=resource, id_generator=_ids())
    provider.add_span_processor(processor)
    _tracer = provider.get_tracer("tidings", VERSION)
    _direct = _Direct(processor, resource)
    return provider


def on() -> bool:
    return _tracer is not None


def _ids() -> Any:
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class Ids(RandomIdGenerator):
        """Random ids, except for the span ``chosen`` names (a run's span)."""

        def generate_span_id(self) -> int:
            chosen = _chosen.get()
            return chosen[1] if chosen is not None else super().generate_span_id()

        def generate_trace_id(self) -> int:
            chosen = _chosen.get()
            return chosen[0] if chosen is not None else super().generate_trace_id()

    return Ids()


# -- contexts ------------------------------------------------------------------------------------


def run_ids(run_id: str) -> tuple[int, int]:
    """The trace id and span id of a run's span, the same in every process."""
    digest = hashlib.sha256(f"tidings-run:{run_id}".encode()).digest()
    return int.from_bytes(digest[:16]) or 1, int.from_bytes(digest[16:24]) or 1


def run_context(run_id: str) -> Any:
    """The OTel context whose parent is the run's span (a remote parent: it is recorded when
    the run ends)."""
    from opentelemetry import trace

    trace_id, span_id = run_ids(run_id)
    parent = trace.SpanContext(trace_id, span_id, is_remote=True,
                               trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


def traceparent_of(span: Any) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _link(traceparent: str) -> Any:
    from opentelemetry import trace

    try:
        _, trace_id, span_id, flags = traceparent.split("-")
        context = trace.SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True,
                                    trace_flags=trace.TraceFlags(int(flags, 16)))
    except ValueError:
        return None
    return trace.Link(context) if context.is_valid else None


def _ns(ms: int) -> int:
    return ms * 1_000_000


# -- spans ---------------------------------------------------------------------------------------


class _Direct:
    """Where the ingest spans go. They are built finished and handed to the span processor,
    not started through the SDK's tracer: that costs about 45 µs of CPU per span here
    (sampler, attribute checks, context attach and detach), two spans on every ingest
    request, against some 3 µs this way (``bench/README.md``, P10). They are recorded when
    the caller's context is sampled, or when there is none."""

    def __init__(self, processor: Any, resource: Any) -> None:
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.processor = processor
        self.resource = resource
        self.scope = InstrumentationScope("tidings", VERSION)


@dataclass(slots=True)
class _Quick:
    """A span of the ingest path (``server_span``, ``producing``) until it is recorded."""

    name: str
    kind: str
    trace_id: int
    span_id: int
    parent_span_id: int | None  # in the same trace
    sampled: bool
    start: int
    attributes: dict[str, Any]
    status_error: bool = False

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{'01' if self.sampled else '00'}"

    def record(self, remote_parent: bool) -> None:
        direct = _direct
        if direct is None or not self.sampled:
            return
        from opentelemetry import trace
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import Status, StatusCode

        flags = trace.TraceFlags(trace.TraceFlags.SAMPLED)
        context = trace.SpanContext(self.trace_id, self.span_id, is_remote=False,
                                    trace_flags=flags)
        parent = None if self.parent_span_id is None else trace.SpanContext(
            self.trace_id, self.parent_span_id, is_remote=remote_parent, trace_flags=flags)
        direct.processor.on_end(ReadableSpan(
            self.name, context, parent, resource=direct.resource,
            attributes=self.attributes, kind=getattr(trace.SpanKind, self.kind),
            status=Status(StatusCode.ERROR) if self.status_error else Status(StatusCode.UNSET),
            start_time=self.start, end_time=time.time_ns(),
            instrumentation_scope=direct.scope))


_request: ContextVar[_Quick | None] = ContextVar("tidings_request_span", default=None)


def _parsed(traceparent: str | None) -> tuple[int, int, bool] | None:
    """``(trace_id, span_id, sampled)`` of a W3C ``traceparent``; None when absent or bad."""
    if not traceparent:
        return None
    parts = traceparent.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or parts[0] == "ff":
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(flags & 1)


@contextmanager
def server_span(headers: Mapping[str, str], method: str) -> Iterator[Any]:
    """A SERVER span for an HTTP request, the child of its ``traceparent``; None when off.
    The caller names it after the route and sets its status once answered
    (``finish_server_span``)."""
    if _tracer is None:
        yield None
        return
    parent = _parsed(headers.get("traceparent"))
    trace_id = parent[0] if parent else random.getrandbits(128) or 1
    span = _Quick(name=method, kind="SERVER", trace_id=trace_id,
                  span_id=random.getrandbits(64) or 1,
                  parent_span_id=parent[1] if parent else None,
                  sampled=parent[2] if parent else True, start=time.time_ns(),
                  attributes={"http.request.method": method})
    token = _request.set(span)
    try:
        yield span
    finally:
        _request.reset(token)
        span.record(remote_parent=True)


def finish_server_span(span: Any, route: str, method: str, status: int) -> None:
    span.name = f"{method} {route}"
    span.attributes["http.route"] = route
    span.attributes["http.response.status_code"] = status
    span.status_error = status >= 500


@contextmanager
def producing(count: int) -> Iterator[str | None]:
    """The PRODUCER span of storing ``count`` events, under the request's SERVER span;
    yields the traceparent each event keeps (None when off)."""
    if _tracer is None:
        yield None
        return
    request = _request.get()
    span = _Quick(name="send events", kind="PRODUCER",
                  trace_id=request.trace_id if request else random.getrandbits(128) or 1,
                  span_id=random.getrandbits(64) or 1,
                  parent_span_id=request.span_id if request else None,
                  sampled=request.sampled if request else True, start=time.time_ns(),
                  attributes={"messaging.system": SYSTEM, "messaging.operation.type": "send",
                              "messaging.operation.name": "send",
                              "messaging.batch.message_count": count})
    try:
        yield span.traceparent
    finally:
        span.record(remote_parent=False)


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
    if _tracer is None:
        return
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    span = _tracer.start_span(f"step {name}", context=run_context(run_id),
                              kind=trace.SpanKind.INTERNAL, start_time=_ns(started_at),
                              attributes={"tidings.step.id": step, "tidings.step.name": name,
                                          "tidings.step.op": op,
                                          "tidings.step.attempt": attempt,
                                          "tidings.run.id": run_id})
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, f"{error.get('name')}: "
                                                 f"{error.get('message')}"[:500]))
    span.end(end_time=_ns(max(ended_at, started_at)))


def run_span(run_id: str, *, function: str, app: str, status: str, started_at: int,
             ended_at: int, attempt: int, event_ids: Sequence[str],
             traceparents: Sequence[str], pauses: Sequence[Pause] = ()) -> None:
    """The CONSUMER span of a run that ended, with the ids ``run_ids`` gives, linked to the
    creation context of its events; and its pauses, under it."""
    if _tracer is None:
        return
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace import Status, StatusCode

    links = [link for link in map(_link, traceparents) if link is not None]
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM, "messaging.operation.type": "process",
        "messaging.operation.name": "process", "messaging.destination.name": function,
        "tidings.run.id": run_id, "tidings.function": function, "tidings.app": app,
        "tidings.run.status": status, "tidings.run.attempt": attempt}
    if len(event_ids) == 1:
        attributes["messaging.message.id"] = event_ids[0]
    else:
        attributes["messaging.batch.message_count"] = len(event_ids)
    token = _chosen.set(run_ids(run_id))
    try:
        span = _tracer.start_span(f"process {function}", context=Context(),
                                  kind=trace.SpanKind.CONSUMER, links=links,
                                  start_time=_ns(started_at), attributes=attributes)
    finally:
        _chosen.reset(token)
    if status != "Completed":
        span.set_status(Status(StatusCode.ERROR, status))
    for pause in pauses:
        child = _tracer.start_span(f"{pause.kind} {pause.name}", context=run_context(run_id),
                                   kind=trace.SpanKind.INTERNAL,
                                   start_time=_ns(pause.started_at),
                                   attributes={"tidings.step.id": pause.step,
                                               "tidings.step.name": pause.name,
                                               "tidings.step.op": pause.kind,
                                               "tidings.run.id": run_id})
        child.end(end_time=_ns(max(pause.ended_at, pause.started_at)))
    span.end(end_time=_ns(max(ended_at, started_at)))


@contextmanager
def client_span(run_id: str, method: str, url: str, headers: dict[str, str]
                ) -> Iterator[Any]:
    """An HTTP CLIENT span for a call to an SDK app under the run's span; its context goes
    into ``headers`` (``traceparent``). Yields the span (None when off)."""
    if _tracer is None:
        yield None
        return
    from opentelemetry import trace
    from opentelemetry.propagate import inject

    with _tracer.start_as_current_span(method, context=run_context(run_id),
                                       kind=trace.SpanKind.CLIENT,
                                       attributes={"http.request.method": method,
                                                   "url.full": url,
                                                   "tidings.run.id": run_id}) as span:
        inject(headers)
        yield span


def answered(span: Any, status: int | None) -> None:
    """A CLIENT span's answer (None: no answer)."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    if status is None:
        span.set_status(Status(StatusCode.ERROR, "no answer"))
        return
    span.set_attribute("http.response.status_code", status)
    if status >= 400:
        span.set_status(Status(StatusCode.ERROR))
