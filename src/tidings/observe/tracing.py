"""Traces (OpenTelemetry), optional: ``pip install 'tidings[otel]'``. Off unless the standard
OTel environment says where spans go (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_TRACES_EXPORTER``, not ``none``), or
``TIDINGS_SPAN_EXPORTER`` names an exporter of one's own (``span_export.configure`` turns it
on); when off, nothing of OpenTelemetry is imported and every call here returns at once.

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

Every span is built finished and handed to the span processor (``span_sink.Sink``), not
started through the SDK's tracer: a span started there costs about 45 µs of CPU here (sampler,
attribute checks, context attach and detach), against some 3 µs this way, and ingest makes two
per request (``bench/README.md``, P10). What the caller does is keep the span's values as a
record with its maker's name (``_makers``; a request that stores events keeps its SERVER and
PRODUCER spans in one); ids derived from a run's id, names, attribute
dicts, contexts and links are made where the spans are exported: in a process of their own
(``span_export``), so that neither they nor the exporter's encoding hold the interpreter
lock the server's event loop needs. Sampling follows ``OTEL_TRACES_SAMPLER``
(``span_sink.Sampler``): a sampled caller's context is followed; a trace that begins here is
kept at the configured ratio of its trace id, so every process decides the same for a run's
trace.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, cast

from tidings.observe.span_sink import Batches, Maker, Record, Sampler, Sink, resource

log = logging.getLogger("tidings.tracing")
SYSTEM = "tidings"
_sink: Sink | None = None  # where finished spans go; None: tracing is off
_batches: Batches | None = None  # their way out, when in batches
_getrandbits = random.getrandbits
_time_ns = time.time_ns
_LOW_64 = (1 << 64) - 1


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the OTel environment asks for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or environ.get("TIDINGS_SPAN_EXPORTER"))


def exporter_named(environ: Mapping[str, str]) -> str:
    """The span exporter the environment names: ``TIDINGS_SPAN_EXPORTER`` as given, else
    ``ConsoleSpanExporter`` (``OTEL_TRACES_EXPORTER=console``), else ``OTLPSpanExporter``."""
    custom = environ.get("TIDINGS_SPAN_EXPORTER", "").strip()
    if custom:
        return custom
    console = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console"
    return "ConsoleSpanExporter" if console else "OTLPSpanExporter"


def exporter_class(environ: Mapping[str, str]) -> Callable[[], Any]:
    """What makes the span exporter the environment names: ``TIDINGS_SPAN_EXPORTER``
    (``module:Class``, made with no arguments), else ``OTEL_TRACES_EXPORTER=console``'s, else
    OTLP over HTTP's (endpoint, headers, timeout: from the ``OTEL_*`` variables). ValueError
    when ``TIDINGS_SPAN_EXPORTER`` names nothing to be found; ImportError without the
    ``otel`` extra."""
    import opentelemetry.sdk.trace  # noqa: F401  (ImportError without the extra)

    custom = environ.get("TIDINGS_SPAN_EXPORTER", "").strip()
    if custom:
        module, _, name = custom.partition(":")
        if not module or not name:
            raise ValueError(f"TIDINGS_SPAN_EXPORTER={custom!r} is not module:Class")
        try:
            found = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"TIDINGS_SPAN_EXPORTER={custom!r} cannot be found: {exc}"
                             ) from exc
        if not callable(found):
            raise ValueError(f"TIDINGS_SPAN_EXPORTER={custom!r} is not a class")
        return cast(Callable[[], Any], found)
    if exporter_named(environ) == "ConsoleSpanExporter":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter


def sink_from(environ: Mapping[str, str]) -> Sink:
    """A sink with the resource and sampler the environment gives, and the makers below."""
    return Sink(resource(environ), Sampler.from_env(environ), _parsed, _makers())


def export_to(exporter: Any, environ: Mapping[str, str] = os.environ) -> None:
    """Send spans to ``exporter`` (an OTel SDK span exporter) in batches (``Batches``), made
    and exported in this process, sampled as ``environ`` says. (A server sends them to a
    process of their own: ``span_export.configure``.)"""
    sink = sink_from(environ)
    send_to(sink, Batches.exporting(exporter, environ, sink.spans))


def send_to(sink: Sink, batches: Batches) -> None:
    """Turn tracing on: spans recorded by ``sink``, on their way out in ``batches``."""
    global _sink, _batches
    sink.add = batches.add
    _sink, _batches = sink, batches


def flush(timeout: float = 5.0) -> None:
    """Hand the spans waiting over now (to the span process, or the exporter), as a server
    stops: uvicorn ends the process by the signal that stopped it, and exit handlers do not
    run then."""
    batches = _batches
    if batches is not None and not batches.flush(timeout):
        log.warning("the spans waiting for export were not handed over in %.0f s", timeout)


def use(processor: Any, environ: Mapping[str, str] = os.environ) -> None:
    """Send spans to ``processor`` (an OTel SDK span processor: tests give one with an
    in-memory exporter), sampled as ``environ`` says. ``None`` turns tracing off."""
    global _sink, _batches
    _batches = None
    if processor is None:
        _sink = None
        return
    sink = sink_from(environ)

    def add(record: Record) -> None:
        for span in sink.spans(record):
            processor.on_end(span)

    sink.add = add
    _sink = sink


def on() -> bool:
    return _sink is not None


def _makers() -> dict[str, Maker]:
    """The makers of the spans below, by the name their records begin with."""
    return {"ingest": _ingest, "server": _server, "producer": _producer, "step": _step,
            "run": _run, "pause": _pause}




# -- contexts ------------------------------------------------------------------------------------


_RUN_IDS = hashlib.sha256(b"tidings-run:")  # copied, then the run's id added: 0.2 µs less


@functools.lru_cache(maxsize=4096)  # a run's steps, calls and end ask for the same ids
def run_ids(run_id: str) -> tuple[int, int]:
    """The trace id and span id of a run's span, the same in every process: the first 16
    and next 8 bytes of the SHA-256 of ``tidings-run:{run_id}``."""
    digest = _RUN_IDS.copy()
    digest.update(run_id.encode())
    both = int.from_bytes(digest.digest()[:24])
    return both >> 64 or 1, both & _LOW_64 or 1


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


def _traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    # The ids' bytes in hex: twice as fast as formatting the ints with ``:032x``.
    return (f"00-{trace_id.to_bytes(16).hex()}-{span_id.to_bytes(8).hex()}-"
            f"{'01' if sampled else '00'}")


# -- ingest spans --------------------------------------------------------------------------------


class Request:
    """The SERVER span of the HTTP request being answered, until it ends (``request_ended``);
    and, once it stores events (``producing``), their PRODUCER span too, whose context
    ``traceparent`` each event keeps. One object for both: a request stores its events once,
    and a second object per request cost more than the few fields it holds. Both spans go
    out as one record when the request ends (``_ingest`` makes the two): a second record per
    request cost the event loop a tuple, an append and their share of the garbage
    collections. ``token`` puts it back out of the context (None: it was never put there,
    ``ingest_began``).

    No ``__init__``: ``ingest_began`` sets the fields itself, which spares the event loop a
    call through ``type.__call__`` per request."""

    __slots__ = ("count", "parent_span_id", "produced_at", "produced_end", "producer_span_id",
                 "sampled", "span_id", "start", "token", "trace_id", "traceparent")
    trace_id: int
    span_id: int
    parent_span_id: int | None
    sampled: bool
    start: int
    token: Token[Request | None] | None
    # Its PRODUCER span's id and context, drawn at once: they do not depend on when it stores
    producer_span_id: int
    traceparent: str
    count: int | None  # None until it stores (``producing``), its times with it
    produced_at: int
    produced_end: int


_request: ContextVar[Request | None] = ContextVar("tidings_request_span", default=None)


def request_began(headers: Sequence[tuple[bytes, bytes]]) -> Request | None:
    """The SERVER span of a request with these (ASGI) headers, a child of its
    ``traceparent``; None when tracing is off. It is the request's (in the context, where
    ``producing`` finds it) until ``request_ended``."""
    if _sink is None:
        return None
    parent = None
    for key, value in headers:
        if key == b"traceparent":
            parent = value
            break
    span = ingest_began(parent)
    if span is not None:
        span.token = _request.set(span)
    return span


def ingest_began(traceparent: bytes | None) -> Request | None:
    """The SERVER span of a request whose ``traceparent`` header is this, for a caller that
    holds it itself (the Event API): not put in the context, which costs a set and a reset
    per request. Its PRODUCER span's id and context ``traceparent`` are drawn at once, as
    they do not depend on when the request stores its events: storing them only notes their
    count and times then (what ``producing`` and ``produced`` do, and
    ``accept.store_events`` does itself, two calls less per request). None when tracing is
    off."""
    sink = _sink
    if sink is None:
        return None
    # ``Request`` without an ``__init__``, and ``_traceparent``'s line written out: two calls
    # less per request on the hot path.
    span = Request()
    parent = None if traceparent is None else _parsed(traceparent.decode("latin-1"))
    if parent is None:
        span.trace_id = trace_id = _getrandbits(128) or 1
        span.parent_span_id = None
        span.sampled = sampled = sink.keeps_all or sink.sampler.root(trace_id)
    else:
        span.trace_id = trace_id = parent[0]
        span.parent_span_id = parent[1]
        span.sampled = sampled = sink.sampler.child(trace_id, parent[2])
    span.span_id = _getrandbits(64) or 1
    span.start = _time_ns()
    span.token = span.count = None
    span.producer_span_id = producer_span_id = _getrandbits(64) or 1
    span.traceparent = (f"00-{trace_id.to_bytes(16).hex()}-"
                        f"{producer_span_id.to_bytes(8).hex()}-{'01' if sampled else '00'}")
    return span


def request_ended(span: Request, route: str, method: str, status: int) -> None:
    """The request was answered with ``status``: its span is recorded, named after its
    route."""
    if span.token is not None:
        _request.reset(span.token)
    sink = _sink
    if sink is None or not span.sampled:
        return
    if span.count is None:
        sink.add(("server", span.trace_id, span.span_id, span.parent_span_id, span.start,
                  _time_ns(), method, route, status))
    else:  # it stored events: its PRODUCER span in the same record
        sink.add(("ingest", span.trace_id, span.span_id, span.parent_span_id, span.start,
                  _time_ns(), method, route, status, span.producer_span_id, span.produced_at,
                  span.produced_end, span.count))


# A SERVER span's name and attributes, and a PRODUCER span's attributes, are the same for
# every span of a route, method and status (of a count of events): made once and shared (a
# ``ReadableSpan`` shows its attributes read only), they save a dict and a name per span
# where spans are made.
_served: dict[tuple[str, str, int], tuple[str, dict[str, Any]]] = {}
_sent: dict[int, dict[str, Any]] = {}
_SHARED_AT_MOST = 1024  # entries each; past that, the cache begins again


def _server(sink: Sink, record: Record) -> tuple[Any, ...]:
    _, trace_id, span_id, parent_span_id, start, end, method, route, status = record
    name, attributes = _served.get((method, route, status)) or _served_as(method, route, status)
    return (sink.make(name, "SERVER", trace_id, span_id, parent_span_id, True, start, end,
                      attributes, "" if status >= 500 else None),)


def _ingest(sink: Sink, record: Record) -> tuple[Any, ...]:
    # The two spans made here field by field (``span_sink.FIELDS``), each by one C call,
    # rather than by ``_producer`` and ``_server`` through ``Sink.make``: an eighth less of
    # the time making a request's spans. The SERVER span's own context is its PRODUCER
    # span's parent: made once for both.
    (_, trace_id, span_id, parent_span_id, start, end, method, route, status,
     producer_span_id, produced_at, produced_end, count) = record
    context, flags, kinds, unset = sink.context, sink.flags, sink.kinds, sink.unset
    server = context(trace_id, span_id, False, flags)
    name, attributes = _served.get((method, route, status)) or _served_as(method, route, status)
    return (sink.span(("send events", context(trace_id, producer_span_id, False, flags), server,
                       kinds["PRODUCER"], _sent.get(count) or _sent_as(count), produced_at,
                       produced_end if produced_end > produced_at else produced_at, unset, ())),
            sink.span((name, server, None if parent_span_id is None
                       else context(trace_id, parent_span_id, True, flags), kinds["SERVER"],
                       attributes, start, end if end > start else start,
                       unset if status < 500 else sink.failed, ())))


def _served_as(method: str, route: str, status: int) -> tuple[str, dict[str, Any]]:
    if len(_served) >= _SHARED_AT_MOST:
        _served.clear()
    found = _served[method, route, status] = (f"{method} {route}", {
        "http.request.method": method, "http.route": route, "http.response.status_code": status})
    return found


class Producer:
    """The PRODUCER span of storing events outside a request's span (under the sender's
    ``traceparent``, or a trace of its own); ``traceparent`` is its context, which each of
    them keeps. Inside a request, the ``Request`` is the PRODUCER span too."""

    __slots__ = ("count", "parent_span_id", "produced_at", "producer_span_id",
                 "remote_parent", "sampled", "trace_id", "traceparent")

    def __init__(self, count: int, trace_id: int, parent_span_id: int | None,
                 remote_parent: bool, sampled: bool) -> None:
        self.count = count
        self.trace_id = trace_id
        self.producer_span_id = span_id = _getrandbits(64) or 1
        self.parent_span_id = parent_span_id
        self.remote_parent = remote_parent
        self.sampled = sampled
        self.produced_at = _time_ns()
        self.traceparent = _traceparent(trace_id, span_id, sampled)


def producing(count: int, sender: str | None = None, *,
              request: Request | None = None) -> Request | Producer | None:
    """The PRODUCER span of storing ``count`` events (``produced`` records it), under the
    request's SERVER span (``request``, or else the one in the context), or else under
    ``sender`` (a ``traceparent`` the events came with); None when tracing is off."""
    sink = _sink
    if sink is None:
        return None
    if request is None:
        request = _request.get()
    if request is not None and request.count is None:
        request.count = count
        # its end too, should ``request_ended`` come first (``produced`` sets it again)
        request.produced_at = request.produced_end = _time_ns()
        return request
    if request is not None:  # a second store in one request: a span of its own
        return Producer(count, request.trace_id, request.span_id, False, request.sampled)
    parent = _parsed(sender)
    if parent is not None:
        return Producer(count, parent[0], parent[1], True,
                        sink.sampler.child(parent[0], parent[2]))
    trace_id = _getrandbits(128) or 1
    return Producer(count, trace_id, None, False, sink.keeps_all or sink.sampler.root(trace_id))


def produced(span: Request | Producer) -> None:
    """The events are stored (or failed to be): a request's PRODUCER span ends now and is
    recorded with its SERVER span (``request_ended``); one of its own is recorded now."""
    if isinstance(span, Request):
        span.produced_end = _time_ns()
        return
    sink = _sink
    if sink is None or not span.sampled:
        return
    sink.add(("producer", span.trace_id, span.producer_span_id, span.parent_span_id,
              span.remote_parent, span.produced_at, _time_ns(), span.count))


def _producer(sink: Sink, record: Record) -> tuple[Any, ...]:
    _, trace_id, span_id, parent_span_id, remote_parent, start, end, count = record
    return (sink.make("send events", "PRODUCER", trace_id, span_id, parent_span_id,
                      remote_parent, start, end, _sent.get(count) or _sent_as(count), None),)


def _sent_as(count: int) -> dict[str, Any]:
    if len(_sent) >= _SHARED_AT_MOST:
        _sent.clear()
    attributes = _sent[count] = {
        "messaging.system": SYSTEM, "messaging.operation.type": "send",
        "messaging.operation.name": "send", "messaging.batch.message_count": count}
    return attributes


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
    if sink is None or not (sink.keeps_all or sink.sampler.root(run_ids(run_id)[0])):
        return
    sink.add(("step", run_id, step, name, op, attempt, started_at, ended_at,
              None if error is None else f"{error.get('name')}: {error.get('message')}"[:500]))


def _step(sink: Sink, record: Record) -> tuple[Any, ...]:
    # Made field by field (``span_sink.FIELDS``), as ``_ingest`` makes its two: a step's span
    # is one of the two every run makes.
    _, run_id, step, name, op, attempt, started_at, ended_at, error = record
    trace_id, run_span_id = run_ids(run_id)
    context, flags = sink.context, sink.flags
    start, end = _ms_ns(started_at), _ms_ns(ended_at)
    return (sink.span((f"step {name}", context(trace_id, _getrandbits(64) or 1, False, flags),
                       context(trace_id, run_span_id, True, flags), sink.kinds["INTERNAL"],
                       {"tidings.step.id": step, "tidings.step.name": name,
                        "tidings.step.op": op, "tidings.step.attempt": attempt,
                        "tidings.run.id": run_id},
                       start, end if end > start else start,
                       sink.unset if error is None else sink.failure(error), ())),)


def run_span(run_id: str, *, function: str, app: str, status: str, started_at: int,
             ended_at: int, attempt: int, event_ids: Sequence[str],
             traceparents: Sequence[str], pauses: Sequence[Pause] = ()) -> None:
    """The CONSUMER span of a run that ended, with the ids ``run_ids`` gives, linked to the
    creation context of its events; and its pauses, under it."""
    sink = _sink
    if sink is None or not (sink.keeps_all or sink.sampler.root(run_ids(run_id)[0])):
        return
    for pause in pauses:
        sink.add(("pause", run_id, pause.step, pause.name, pause.kind, pause.started_at,
                  pause.ended_at))
    sink.add(("run", run_id, function, app, status, started_at, ended_at, attempt,
              _one_or_all(event_ids), _one_or_all(traceparents)))


def _one_or_all(values: Sequence[str]) -> str | tuple[str, ...] | None:
    # A record keeps one value as itself (the common case: one event, one context), so the
    # record holds no tuple the garbage collector would have to let go of first.
    return values[0] if len(values) == 1 else tuple(values) if values else None


def _run(sink: Sink, record: Record) -> tuple[Any, ...]:
    # Made field by field (``span_sink.FIELDS``), as ``_step`` is.
    (_, run_id, function, app, status, started_at, ended_at, attempt, event_ids,
     traceparents) = record  # each one value, or a tuple of them (``_one_or_all``)
    trace_id, span_id = run_ids(run_id)
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM, "messaging.operation.type": "process",
        "messaging.operation.name": "process", "messaging.destination.name": function,
        "tidings.run.id": run_id, "tidings.function": function, "tidings.app": app,
        "tidings.run.status": status, "tidings.run.attempt": attempt}
    if isinstance(event_ids, str):
        attributes["messaging.message.id"] = event_ids
    else:
        attributes["messaging.batch.message_count"] = 0 if event_ids is None else len(event_ids)
    start, end = _ms_ns(started_at), _ms_ns(ended_at)
    return (sink.span((
        f"process {function}", sink.context(trace_id, span_id, False, sink.flags), None,
        sink.kinds["CONSUMER"], attributes, start, end if end > start else start,
        sink.unset if status == "Completed" else sink.failure(status),
        () if traceparents is None else sink.links_to(
            (traceparents,) if isinstance(traceparents, str) else traceparents))),)


def _pause(sink: Sink, record: Record) -> tuple[Any, ...]:
    _, run_id, step, name, kind, started_at, ended_at = record
    trace_id, span_id = run_ids(run_id)
    return (sink.make(f"{kind} {name}", "INTERNAL", trace_id, _getrandbits(64) or 1, span_id,
                      False, _ms_ns(started_at), _ms_ns(ended_at),
                      {"tidings.step.id": step, "tidings.step.name": name,
                       "tidings.step.op": kind, "tidings.run.id": run_id}, None),)


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
    headers["traceparent"] = _traceparent(trace_id, span.span_id, sampled)
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
