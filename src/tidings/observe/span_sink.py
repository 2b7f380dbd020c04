"""How finished spans reach OpenTelemetry (``tracing.py`` makes them): each kept as a compact
record (``Sink.emit``), made a ``ReadableSpan`` only when it is handed over (``Sink.spans``),
sampled by ``OTEL_TRACES_SAMPLER`` (``Sampler``) and sent in batches by a thread of our own
(``Batches``, with the SDK's ``OTEL_BSP_*`` settings) to the span process that makes and
exports them (``span_export``), or exported from the thread itself (``Exporting``).
OpenTelemetry itself is imported only once a sink is made (tracing on)."""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import itertools
import logging
import operator
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from tidings.version import VERSION

log = logging.getLogger("tidings.tracing")
_LOW_64 = (1 << 64) - 1
DROPS_LOGGED_EVERY_S = 60.0


def resource(environ: Mapping[str, str]) -> Any:
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


def export_batch_size(environ: Mapping[str, str]) -> int:
    """Spans in an export's batch at the most (``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``)."""
    return _setting(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)


class Batches:
    """Spans on their way out, in batches, as the SDK's ``BatchSpanProcessor`` sends them and
    with its settings (``OTEL_BSP_SCHEDULE_DELAY``, ``_MAX_QUEUE_SIZE``,
    ``_MAX_EXPORT_BATCH_SIZE``, ``_EXPORT_TIMEOUT``): a thread hands ``ship`` the records of a
    batch once one is full or the delay has passed, and what is left when the process exits,
    then calls ``close``. ``ship`` makes them spans and exports them here (``exporting``), or
    sends them to the process that does (``span_export.SpanProcess``).

    ``add`` is the queue's own ``append``: adding a span runs no Python code on the caller's
    thread (a method that also counted, checked the length and woke the thread cost some 26
    opcodes a span). The thread looks at the queue instead, as often as spans come: about
    when a batch will be there at the rate it saw last, every ``LOOK_S`` at the most (so a
    queue of 2,048 holds 20,000 spans a second between two looks) and ``LOOK_S[0]`` at the
    least; idle, ten times a second. A full queue drops its oldest span; not counted (that
    would take Python code on every add), but seen: the thread finds the queue full and says
    so, as the SDK's processor does.

    What waits is the span's compact ``Record`` (a request's SERVER and PRODUCER spans share
    one: the queue's limit counts records); its ``ReadableSpan`` is made as its batch goes
    out. Whole spans waiting for export (over a kilobyte each, up to a batch of 512)
    made every traced request dearer by some 15 µs in the cache misses they cause (``bench/
    README.md``, P10)."""

    LOOK_S = (0.005, 0.1)

    def __init__(self, environ: Mapping[str, str], ship: Callable[[list[Record]], None],
                 close: Callable[[float], None], taker: str) -> None:
        self.ship, self.close, self.taker = ship, close, taker
        self.delay = _setting(environ, "OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        self.batch = export_batch_size(environ)
        self.timeout = _setting(environ, "OTEL_BSP_EXPORT_TIMEOUT", 30000) / 1000
        limit = max(self.batch, _setting(environ, "OTEL_BSP_MAX_QUEUE_SIZE", 2048))
        self.queue: collections.deque[Any] = collections.deque(maxlen=limit)
        self.add: Callable[[Record], None] = self.queue.append
        self.full = 0  # times the queue was found full, not logged yet
        self.reported = -DROPS_LOGGED_EVERY_S
        self.awake = threading.Event()  # set to stop, or to flush now
        self.flushes: collections.deque[threading.Event] = collections.deque()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="tidings-spans", daemon=True)
        self.thread.start()
        atexit.register(self.shutdown)

    @classmethod
    def exporting(cls, exporter: Any, environ: Mapping[str, str],
                  spans: Callable[[Record], tuple[Any, ...]]) -> Batches:
        """Batches made into spans by ``spans`` and handed to ``exporter`` in this process."""
        made = Exporting(exporter, spans, export_batch_size(environ))
        return cls(environ, made, made.close, type(exporter).__name__)

    def _run(self) -> None:
        queue, batch = self.queue, self.batch
        shortest, longest = self.LOOK_S[0], min(self.LOOK_S[1], self.delay)
        looked = time.monotonic()
        due, left, wait = looked + self.delay, 0, longest
        while not self.stopping:
            if self.awake.wait(wait) and not self.stopping:
                self.awake.clear()
            now, waiting = time.monotonic(), len(queue)
            rate = (waiting - left) / max(now - looked, 1e-6)  # spans a second since
            if waiting >= batch or now >= due or self.flushes:
                # the flushes asked for before this export: their spans are in it
                flushed = [self.flushes.popleft() for _ in range(len(self.flushes))]
                self._export()
                due = now + self.delay
                for done in flushed:
                    done.set()
            looked, left = now, len(queue)
            wait = longest if rate <= 0 else max(shortest, min(longest, (batch - left) / rate))
        self._export()

    def _export(self) -> None:
        queue, size = self.queue, self.batch
        if len(queue) == queue.maxlen:
            self.full += 1
        take = queue.popleft
        while queue:
            # Only this thread takes from the queue: what it holds now is there to take,
            # popped in C.
            records: list[Record] = list(map(operator.call, itertools.repeat(
                take, min(len(queue), size))))
            try:
                self.ship(records)
            except Exception:
                log.exception("%d spans could not be handed to %s; they are dropped",
                              len(records), self.taker)
        now = time.monotonic()
        if self.full and (self.stopping or now - self.reported >= DROPS_LOGGED_EVERY_S):
            log.warning("the span queue was full (OTEL_BSP_MAX_QUEUE_SIZE=%d): spans came "
                        "faster than %s took them, and the oldest were dropped",
                        queue.maxlen, self.taker)
            self.full, self.reported = 0, now

    def flush(self, timeout: float) -> bool:
        """Hand over the spans waiting now (``ship``), within ``timeout`` seconds; True when
        done."""
        if self.stopping:
            return False
        done = threading.Event()
        self.flushes.append(done)
        self.awake.set()
        return done.wait(timeout)

    def shutdown(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.awake.set()
        self.thread.join(self.timeout)
        with contextlib.suppress(Exception):
            self.close(self.timeout)


class Exporting:
    """Records made into spans (``spans``) and handed to ``exporter`` in batches of at most
    ``size`` spans, in order: a record that makes two may end one batch and open the next."""

    def __init__(self, exporter: Any, spans: Callable[[Record], tuple[Any, ...]],
                 size: int) -> None:
        self.exporter, self.spans, self.size = exporter, spans, size

    def __call__(self, records: Iterable[Record]) -> None:
        spans, size = self.spans, self.size
        batch: list[Any] = []
        for record in records:
            batch += spans(record)
            while len(batch) >= size:
                self._send(batch[:size])
                del batch[:size]
        if batch:
            self._send(batch)

    def _send(self, batch: list[Any]) -> None:
        try:
            self.exporter.export(batch)
        except Exception:
            log.exception("exporting %d spans failed; they are dropped", len(batch))

    def close(self, timeout: float) -> None:
        self.exporter.shutdown()


class Sampler:
    """``OTEL_TRACES_SAMPLER`` (and ``_ARG``): whether a trace that begins here is kept
    (``root``), and whether a caller's unsampled context is followed or overridden
    (``parent_based``). The ratio is taken of the trace id's low 64 bits, as the SDK's
    ``TraceIdRatioBased`` does, so it gives every process the same answer."""

    __slots__ = ("bound", "parent_based")

    def __init__(self, ratio: float, parent_based: bool) -> None:
        self.bound = round(max(0.0, min(1.0, ratio)) * (1 << 64))
        self.parent_based = parent_based

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Sampler:
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


Record = tuple[Any, ...]
"""A finished span (or a request's two) as it waits for export: the name of its maker (called
in the span process, with the sink and the record), then what the maker needs, as the caller
had it. Names, ids, numbers and tuples of them only, no object of ours: the garbage collector
stops tracking such a tuple the first time it meets it, so records waiting in the queue are
not walked again by each collection, nor promoted to the old generation (where they would
bring on full collections). A maker or a span object in the record did both."""
Maker = Callable[["Sink", Record], tuple[Any, ...]]


class Sink:
    """Where spans go: each finished span as a compact ``Record`` to ``add``, made a
    ``ReadableSpan`` by ``spans`` when it is handed to the exporter or processor; the constant
    parts (resource, scope, flags, kinds, the unset status) made once.

    The caller does as little as it can: a record keeps the values as they were given, and
    its maker (names, attribute dicts, ids derived from a run's id, contexts, links) runs
    where the spans are exported (the span process, ``span_export``; or the span thread, in
    batches made here by ``Batches.exporting``). ``parse`` reads a ``traceparent`` into
    ``(trace_id, span_id, sampled)``: the links made of the same ``traceparent``s (a
    request's events share one) are made once."""

    def __init__(self, resource: Any, sampler: Sampler,
                 parse: Callable[[str], tuple[int, int, bool] | None],
                 makers: Mapping[str, Maker]) -> None:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import Status, StatusCode

        scope = InstrumentationScope("tidings", VERSION)

        self.finished = _finished(ReadableSpan, resource, scope)
        self.add: Callable[[Record], None] = lambda record: None
        self.sampler = sampler
        # Every trace that begins here is kept: a span of a run needs no id to be decided.
        self.keeps_all = sampler.bound >= 1 << 64
        # A span of its ``FIELDS`` in order: one C call, for makers that give every field.
        self.span: Callable[[tuple[Any, ...]], Any] = functools.partial(tuple.__new__,
                                                                        self.finished)
        self.context = _contexts(trace)
        self.link = trace.Link
        self.flags = trace.TraceFlags(trace.TraceFlags.SAMPLED)
        self.unsampled = trace.TraceFlags(0)
        self.kinds = {kind.name: kind for kind in trace.SpanKind}
        self.unset = Status(StatusCode.UNSET)
        self.failed = Status(StatusCode.ERROR)  # with no description
        self.status = Status
        self.error = StatusCode.ERROR
        self._parse = parse
        self._makers: dict[str, Maker] = {"emitted": _emitted, **makers}
        self._links: dict[tuple[str, ...], tuple[Any, ...]] = {}

    def emit(self, name: str, kind: str, trace_id: int, span_id: int,
             parent_span_id: int | None, remote_parent: bool, start: int, end: int,
             keys: tuple[str, ...] | None, values: Any, error: str | None = None) -> None:
        """Record a finished span (sampled: the caller decided). Its attributes are
        ``values`` under ``keys`` (or ``values`` itself, a dict, when ``keys`` is None);
        ``error``: its status is ERROR with that description ("" for none)."""
        self.add(("emitted", name, kind, trace_id, span_id, parent_span_id, remote_parent,
                  start, end, keys, values, error))

    def spans(self, record: Record) -> tuple[Any, ...]:
        """The ``ReadableSpan``s of a record (one, or a request's two)."""
        return self._makers[record[0]](self, record)

    def make(self, name: str, kind: str, trace_id: int, span_id: int,
             parent_span_id: int | None, remote_parent: bool, start: int, end: int,
             attributes: dict[str, Any], error: str | None,
             links: Sequence[Any] = (), context: Any = None) -> Any:
        """A ``ReadableSpan`` (for a maker); ``links`` as ``links_to`` gives them;
        ``context``: its own, when the maker has it made already."""
        make = self.context
        return self.span((
            name, make(trace_id, span_id, False, self.flags) if context is None else context,
            None if parent_span_id is None else make(trace_id, parent_span_id, remote_parent,
                                                     self.flags),
            self.kinds[kind], attributes, start, end if end > start else start,
            self.unset if error is None else self.failure(error), links))

    def failure(self, error: str) -> Any:
        """The ERROR status of a span that failed with ``error`` ("" for no description)."""
        return self.failed if not error else self.status(self.error, error)

    def links_to(self, traceparents: tuple[str, ...]) -> tuple[Any, ...]:
        """Links to the contexts of these ``traceparent``s (bad ones left out)."""
        found = self._links.get(traceparents)
        if found is None:
            if len(self._links) >= 1024:
                self._links.clear()
            made = []
            for parsed in map(self._parse, traceparents):
                if parsed is not None:
                    trace_id, span_id, sampled = parsed
                    made.append(self.link(self.context(
                        trace_id, span_id, True, self.flags if sampled else self.unsampled)))
            found = self._links[traceparents] = tuple(made)
        return found


def _emitted(sink: Sink, record: Record) -> tuple[Any, ...]:
    (_, name, kind, trace_id, span_id, parent_span_id, remote_parent, start, end, keys, values,
     error) = record
    attributes = values if keys is None else dict(zip(keys, values))  # noqa: B905 (one length)
    return (sink.make(name, kind, trace_id, span_id, parent_span_id, remote_parent, start, end,
                      attributes, error),)


FIELDS = ("name", "context", "parent", "kind", "attributes", "start_time", "end_time", "status",
          "links")
"""A finished span's fields, in the order of its tuple (``_finished``)."""


def _finished(readable: type, resource: Any, scope: Any) -> type:
    """The class of finished spans: a ``ReadableSpan`` that is a tuple of its ``FIELDS``,
    made by one C call (``tuple.__new__``) and read by C getters (``itemgetter``): each
    field under the underscore name ``ReadableSpan``'s own methods read and, but for the
    attributes (a read-only view) and links (a copy), under its public name too. Before, a
    ``ReadableSpan``'s nine slots were set one by one and each read ran a Python property.
    Compared and hashed by identity, as span objects are."""
    namespace: dict[str, Any] = {
        "__slots__": (), "__doc__": "A span recorded whole (``span_sink._finished``).",
        "__eq__": object.__eq__, "__ne__": object.__ne__, "__hash__": object.__hash__,
        "__repr__": object.__repr__,
        "_resource": resource, "resource": resource, "_events": (),
        "_instrumentation_scope": scope, "instrumentation_scope": scope,
        "_instrumentation_info": None}
    for index, field in enumerate(FIELDS):
        namespace[f"_{field}"] = got = property(operator.itemgetter(index))
        if field not in _VIEWED:
            namespace[field] = got
    return type("Finished", (tuple, readable), namespace)


_VIEWED = ("attributes", "links")  # read through ``ReadableSpan``'s own: a view, a copy


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
