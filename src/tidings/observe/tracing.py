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
  events. Runs outlive processes, so it is recorded when the run ends, with its real start
  time, and its ids are derived from the run's id (``run_context``): every process that
  drives the run puts its spans under it, before the span itself exists;
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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from tidings.version import VERSION

log = logging.getLogger("tidings.tracing")
SYSTEM = "tidings"
_tracer: Any = None
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
    global _tracer
    if processor is None:
        _tracer = None
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get(
        "OTEL_SERVICE_NAME", "tidings")}), id_generator=_ids())
    provider.add_span_processor(processor)
    _tracer = provider.get_tracer("tidings", VERSION)
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


@contextmanager
def server_span(headers: Mapping[str, str], method: str) -> Iterator[Any]:
    """A SERVER span for an HTTP request, the child of its ``traceparent``; None when off.
    The caller names it after the route and sets its status once answered."""
    if _tracer is None:
        yield None
        return
    from opentelemetry import trace
    from opentelemetry.propagate import extract

    parent = extract(dict(headers))
    with _tracer.start_as_current_span(method, context=parent, kind=trace.SpanKind.SERVER,
                                       attributes={"http.request.method": method},
                                       record_exception=False,
                                       set_status_on_exception=True) as span:
        yield span


def finish_server_span(span: Any, route: str, method: str, status: int) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.update_name(f"{method} {route}")
    span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


@contextmanager
def producing(count: int) -> Iterator[str | None]:
    """The PRODUCER span of storing ``count`` events, in the current context (the request's
    SERVER span); yields the traceparent each event keeps (None when off)."""
    if _tracer is None:
        yield None
        return
    from opentelemetry import trace

    attributes = {"messaging.system": SYSTEM, "messaging.operation.type": "send",
                  "messaging.operation.name": "send", "messaging.batch.message_count": count}
    with _tracer.start_as_current_span("send events", kind=trace.SpanKind.PRODUCER,
                                       attributes=attributes) as span:
        yield traceparent_of(span)


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
