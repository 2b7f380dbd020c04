"""Traces, with the OpenTelemetry SDK's in-memory exporter: one event sent by a traced caller
→ a run with three steps, a retry and a sleep gives the expected tree, links and attributes;
a call to an SDK app is a CLIENT span whose context goes with the request."""

from __future__ import annotations

import collections
import gc
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import tidings
from tests.engine.conftest import Engine
from tests.unit.test_http_driver import FN, SDK, Host, run
from tidings.engine.http_driver import HttpDriver
from tidings.flow import cancel
from tidings.observe import metrics, tracing
from tidings.observe.span_sink import Batches
from tidings.server import create_app
from tidings.storage.tx import Tx

SENDER_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
SENDER_SPAN = 0xB7AD6B7169203331
TRACEPARENT = f"00-{SENDER_TRACE:032x}-{SENDER_SPAN:016x}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.use(SimpleSpanProcessor(exporter))
    yield exporter
    tracing.use(None)


def test_tracing_is_off_unless_the_otel_environment_asks() -> None:
    assert not tracing.wanted({})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console"})
    assert tracing.wanted({"TIDINGS_SPAN_EXPORTER": "exporters:ToFile"})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "none",
                               "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert not tracing.wanted({"OTEL_SDK_DISABLED": "true",
                               "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert not tracing.on()


def _one(found: list[ReadableSpan], name: str) -> ReadableSpan:
    named = [s for s in found if s.name == name]
    assert len(named) == 1, [s.name for s in found]
    return named[0]


async def test_an_event_and_its_run_make_the_expected_tree(
        engine: Engine, spans: InMemorySpanExporter) -> None:
    client = tidings.Tidings(app_id="traced")
    tries: collections.Counter[str] = collections.Counter()

    @client.function(id="three", trigger=tidings.TriggerEvent(event="traced/go"), retries=2)
    async def three(ctx: tidings.Context) -> Any:
        def flaky() -> str:
            tries["b"] += 1
            if tries["b"] == 1:
                raise RuntimeError("once")
            return "b"

        a = await ctx.step.run("a", lambda: "a")
        b = await ctx.step.run("b", flaky)
        await ctx.step.sleep("nap", timedelta(seconds=5))
        c = await ctx.step.run("c", lambda: "c")
        return a + b + c

    await engine.start(client)
    app = create_app(engine.core.settings, engine.core)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://tidings") as http:
        sent = await http.post("/e/any-key", json={"name": "traced/go"},
                               headers={"traceparent": TRACEPARENT})
    assert sent.status_code == 200
    await engine.drain()
    engine.clock.advance(1_001)  # the retry of b
    await engine.drain()
    engine.clock.advance(5_001)  # the nap
    await engine.drain()
    (done,) = await engine.runs()
    assert done.status == "Completed"
    found = list(spans.get_finished_spans())

    server = _one(found, "POST /e/{key}")
    assert server.kind == SpanKind.SERVER
    assert server.context.trace_id == SENDER_TRACE
    assert server.parent is not None and server.parent.span_id == SENDER_SPAN
    assert server.attributes["http.response.status_code"] == 200
    producer = _one(found, "send events")
    assert producer.kind == SpanKind.PRODUCER
    assert producer.parent is not None and producer.parent.span_id == server.context.span_id
    assert producer.attributes["messaging.system"] == "tidings"
    assert producer.attributes["messaging.batch.message_count"] == 1

    process = _one(found, "process traced-three")
    assert process.kind == SpanKind.CONSUMER
    assert process.parent is None  # a trace of its own, linked to the event
    assert (process.context.trace_id, process.context.span_id) == tracing.run_ids(done.id)
    [link] = process.links
    assert (link.context.trace_id, link.context.span_id) == (SENDER_TRACE,
                                                             producer.context.span_id)
    assert process.attributes["messaging.system"] == "tidings"
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["messaging.message.id"] == done.event_id
    assert process.attributes["tidings.run.id"] == done.id
    assert process.attributes["tidings.run.status"] == "Completed"
    assert done.started_at is not None and done.ended_at is not None
    assert process.start_time == done.started_at * 1_000_000
    assert process.end_time is not None and process.end_time >= process.start_time
    assert process.status.status_code == StatusCode.UNSET

    under_run = [s for s in found if s.parent is not None
                 and s.parent.span_id == process.context.span_id]
    assert all(s.context.trace_id == process.context.trace_id for s in under_run)
    steps = sorted((s for s in under_run if s.name.startswith("step ")),
                   key=lambda s: s.start_time or 0)
    assert [(s.name, s.attributes["tidings.step.attempt"]) for s in steps] == [
        ("step a", 0), ("step b", 0), ("step b", 1), ("step c", 0)]
    assert all(s.kind == SpanKind.INTERNAL and s.attributes["tidings.step.op"] == "run"
               for s in steps)
    assert steps[1].status.status_code == StatusCode.ERROR
    assert "RuntimeError: once" in (steps[1].status.description or "")
    assert steps[2].status.status_code == StatusCode.UNSET
    nap = _one(under_run, "sleep nap")
    assert nap.attributes["tidings.step.op"] == "sleep"
    assert nap.end_time is not None and nap.start_time is not None
    assert nap.end_time - nap.start_time >= 5_000 * 1_000_000  # it ends when the run resumes


async def test_a_call_to_an_sdk_app_is_a_client_span_whose_context_goes_along(
        spans: InMemorySpanExporter) -> None:
    seen: list[httpx.Request] = []

    def app(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers=SDK, json={"ok": True})

    driver = HttpDriver(None, dev=True,  # type: ignore[arg-type]
                        transport=httpx.MockTransport(app))
    event = {"name": "e", "data": {}, "id": "01EV", "ts": 0}
    await driver.call(FN, Host(), run=run(), event=event, events=[event])
    [client] = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT]
    assert client.name == "POST"
    assert client.attributes["http.response.status_code"] == 200
    assert client.attributes["url.full"].startswith("http://app/api/inngest")
    trace_id, span_id = tracing.run_ids("01RUN")
    assert client.context.trace_id == trace_id
    assert client.parent is not None and client.parent.span_id == span_id
    [request] = seen
    assert request.headers["traceparent"] == (
        f"00-{trace_id:032x}-{client.context.span_id:016x}-01")


async def test_a_cancelled_run_records_its_span_too(
        engine: Engine, spans: InMemorySpanExporter) -> None:
    client = tidings.Tidings(app_id="traced")

    @client.function(id="napper", trigger=tidings.TriggerEvent(event="traced/nap"))
    async def napper(ctx: tidings.Context) -> Any:
        await ctx.step.sleep("nap", timedelta(hours=1))

    await engine.start(client)
    await engine.send({"name": "traced/nap"})
    await engine.drain()
    (run,) = await engine.runs()
    cancelled = await engine.api("POST", f"/v1/runs/{run.id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    process = _one(list(spans.get_finished_spans()), "process traced-napper")
    assert process.attributes["tidings.run.status"] == "Cancelled"
    assert process.status.status_code == StatusCode.ERROR
    assert (process.context.trace_id, process.context.span_id) == tracing.run_ids(run.id)


class RolledBack(Exception):
    pass


async def test_a_cancellation_is_traced_once_committed_and_not_when_rolled_back(
        engine: Engine, spans: InMemorySpanExporter) -> None:
    client = tidings.Tidings(app_id="traced")

    @client.function(id="napper", trigger=tidings.TriggerEvent(event="traced/nap"))
    async def napper(ctx: tidings.Context) -> Any:
        await ctx.step.sleep("nap", timedelta(hours=1))

    await engine.start(client)
    await engine.send({"name": "traced/nap"})
    await engine.drain()
    (run,) = await engine.runs()
    registry = engine.core.registry
    name = "process traced-napper"
    finished = metrics.runs_finished.summed(1)

    def cancel_then_fail(tx: Tx) -> None:
        assert cancel.cancel_run(tx, registry, run.id, "by a test", engine.clock())
        assert [s.name for s in spans.get_finished_spans()] == []  # not inside it
        raise RolledBack

    with pytest.raises(RolledBack):
        await engine.core.storage.write(cancel_then_fail)
    assert (await engine.run(run.id)).status == "Sleeping"
    assert name not in [s.name for s in spans.get_finished_spans()]
    assert metrics.runs_finished.summed(1) == finished

    assert await engine.core.storage.write(
        lambda tx: cancel.cancel_run(tx, registry, run.id, "by a test", engine.clock()))
    assert (await engine.run(run.id)).status == "Cancelled"
    process = _one(list(spans.get_finished_spans()), name)
    assert process.attributes["tidings.run.status"] == "Cancelled"
    assert metrics.runs_finished.summed(1) != finished


async def test_a_run_cancelled_by_an_event_is_traced_after_the_routing_commits(
        engine: Engine, spans: InMemorySpanExporter) -> None:
    client = tidings.Tidings(app_id="traced")

    @client.function(id="waiter", trigger=tidings.TriggerEvent(event="traced/order"),
                     cancel=[tidings.Cancel(event="traced/cancel")])
    async def waiter(ctx: tidings.Context) -> Any:
        await ctx.step.sleep("nap", timedelta(hours=1))

    await engine.start(client)
    await engine.send({"name": "traced/order"})
    await engine.drain()
    await engine.send({"name": "traced/cancel"})
    await engine.drain()
    (run,) = await engine.runs()
    assert run.status == "Cancelled"
    process = _one(list(spans.get_finished_spans()), "process traced-waiter")
    assert process.attributes["tidings.run.status"] == "Cancelled"
    assert (process.context.trace_id, process.context.span_id) == tracing.run_ids(run.id)


def _sampled(environ: dict[str, str], headers: list[tuple[bytes, bytes]]) -> list[str]:
    exporter = InMemorySpanExporter()
    tracing.use(SimpleSpanProcessor(exporter), environ)
    try:
        request = tracing.request_began(headers)
        assert request is not None
        producer = tracing.producing(1)
        assert producer is not None
        tracing.produced(producer)
        tracing.request_ended(request, "/e/{key}", "POST", 200)
        tracing.run_span("01RUN", function="f", app="a", status="Completed", started_at=1,
                         ended_at=2, attempt=0, event_ids=["01EV"],
                         traceparents=[producer.traceparent])
        tracing.step_span("01RUN", step="s", name="s", op="run", attempt=0, started_at=1,
                          ended_at=2)
    finally:
        tracing.use(None)
    return sorted(s.name for s in exporter.get_finished_spans())


def test_spans_are_sampled_as_otel_traces_sampler_says() -> None:
    everything = ["POST /e/{key}", "process f", "send events", "step s"]
    sampled_caller = [(b"traceparent", TRACEPARENT.encode())]
    unsampled_caller = [(b"traceparent", TRACEPARENT[:-2].encode() + b"00")]
    assert _sampled({}, []) == everything
    assert _sampled({}, unsampled_caller) == ["process f", "step s"]  # runs are their own
    assert _sampled({"OTEL_TRACES_SAMPLER": "always_off"}, sampled_caller) == []
    assert _sampled({"OTEL_TRACES_SAMPLER": "parentbased_always_off"}, sampled_caller) == [
        "POST /e/{key}", "send events"]
    assert _sampled({"OTEL_TRACES_SAMPLER": "always_on"}, unsampled_caller) == everything
    # A ratio decides on the trace id: a run's spans are kept or dropped together, alike in
    # every process.
    ratio = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}
    trace_id, _ = tracing.run_ids("01RUN")
    found = set(_sampled(ratio, []))
    if (trace_id & (2**64 - 1)) < 2**63:
        assert {"process f", "step s"} <= found
    else:
        assert not {"process f", "step s"} & found


def test_spans_wait_for_export_as_records_the_garbage_collector_lets_go_of() -> None:
    """A span waiting for export is a record of names, ids and numbers: once the collector
    has met it, it no longer tracks it (a record holding an object of ours stayed tracked,
    walked by every collection until its export)."""
    records: list[Any] = []
    tracing.use(SimpleSpanProcessor(InMemorySpanExporter()))
    try:
        sink = tracing._sink
        assert sink is not None
        sink.add = records.append
        request = tracing.request_began([(b"traceparent", TRACEPARENT.encode())])
        producer = tracing.producing(2)
        assert request is not None and producer is not None
        tracing.produced(producer)
        tracing.request_ended(request, "/e/{key}", "POST", 200)
        tracing.step_span("01RUN", step="s", name="s", op="run", attempt=0, started_at=1,
                          ended_at=2, error={"name": "Error", "message": "boom"})
        tracing.run_span("01RUN", function="f", app="a", status="Completed", started_at=1,
                         ended_at=4, attempt=1, event_ids=["01EV"],
                         traceparents=[producer.traceparent],
                         pauses=[tracing.Pause(step="z", name="nap", kind="sleep",
                                               started_at=2, ended_at=3)])
    finally:
        tracing.use(None)
    gc.collect()
    assert len(records) == 4  # the request and its stored events: one record
    assert [record for record in records if gc.is_tracked(record)] == []


def test_ingest_spans_of_one_route_share_their_attributes_read_only_and_exact(
        spans: InMemorySpanExporter) -> None:
    """A SERVER span's name and attributes are made once per route, method and status, a
    PRODUCER span's once per count, and shared: each span still has exactly its own, and
    none can be changed through another."""
    for status, count in ((200, 1), (200, 1), (404, 3), (503, 1)):
        request = tracing.request_began([])
        producer = tracing.producing(count)
        assert request is not None and producer is not None
        tracing.produced(producer)
        tracing.request_ended(request, "/e/{key}", "POST", status)
    found = list(spans.get_finished_spans())
    servers = [s for s in found if s.kind == SpanKind.SERVER]
    assert [(s.name, dict(s.attributes or {}), s.status.status_code) for s in servers] == [
        ("POST /e/{key}", {"http.request.method": "POST", "http.route": "/e/{key}",
                           "http.response.status_code": status}, code)
        for status, code in ((200, StatusCode.UNSET), (200, StatusCode.UNSET),
                             (404, StatusCode.UNSET), (503, StatusCode.ERROR))]
    producers = [s for s in found if s.kind == SpanKind.PRODUCER]
    assert [dict(s.attributes or {}) for s in producers] == [
        {"messaging.system": "tidings", "messaging.operation.type": "send",
         "messaging.operation.name": "send", "messaging.batch.message_count": count}
        for count in (1, 1, 3, 1)]
    for span in (servers[0], producers[0]):
        with pytest.raises(TypeError):
            span.attributes["http.route"] = "/changed"  # type: ignore[index]


class Batched:
    """An exporter that keeps each batch it is handed."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    def export(self, batch: list[Any]) -> None:
        self.batches.append(list(batch))

    def shutdown(self) -> None:
        pass


def test_a_batch_holds_at_most_its_size_of_spans_when_a_record_makes_two() -> None:
    """A request's record makes its SERVER and PRODUCER spans: a batch that would pass
    ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` by the second goes out full, and the second opens the
    next, in order."""
    exporter = Batched()
    exported = exporter.batches
    batches = Batches.exporting(exporter, {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "3",
                                             "OTEL_BSP_SCHEDULE_DELAY": "60000"},
                                lambda record: record)
    for n in range(5):
        batches.add((f"{n}a", f"{n}b"))
    batches.shutdown()
    assert all(0 < len(batch) <= 3 for batch in exported), exported
    assert [span for batch in exported for span in batch] == [
        f"{n}{half}" for n in range(5) for half in "ab"]


def test_spans_handed_over_are_readable_spans_the_otlp_exporter_encodes(
        spans: InMemorySpanExporter) -> None:
    """The spans made from records (tuples underneath) are ``ReadableSpan``s in every way an
    exporter reads them: the public properties, ``to_json``, identity as their equality, and
    the OTLP exporter's own encoding, which reads them back the same."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    request = tracing.request_began([(b"traceparent", TRACEPARENT.encode())])
    producer = tracing.producing(2)
    assert request is not None and producer is not None
    tracing.produced(producer)
    tracing.request_ended(request, "/e/{key}", "POST", 503)
    sent, server = spans.get_finished_spans()
    assert all(isinstance(span, ReadableSpan) for span in (sent, server))
    assert (server.name, server.kind, server.status.status_code) == (
        "POST /e/{key}", SpanKind.SERVER, StatusCode.ERROR)
    assert server.parent is not None and server.parent.span_id == SENDER_SPAN
    assert sent.parent == server.context and server.get_span_context() == server.context
    assert sent.start_time is not None and server.end_time is not None
    assert sent.start_time <= sent.end_time  # type: ignore[operator]
    assert (sent.events, sent.links, sent.dropped_attributes) == ((), (), 0)
    assert sent.instrumentation_scope is not None and sent.resource is not None
    assert sent == sent and sent != server and len({sent, server}) == 2
    assert '"name": "send events"' in sent.to_json()
    encoded = encode_spans([sent, server]).resource_spans[0].scope_spans[0].spans
    assert [(s.name, s.span_id, s.parent_span_id) for s in encoded] == [
        ("send events", sent.context.span_id.to_bytes(8), server.context.span_id.to_bytes(8)),
        ("POST /e/{key}", server.context.span_id.to_bytes(8), SENDER_SPAN.to_bytes(8))]
    assert {a.key: a.value.int_value for a in encoded[0].attributes
            if a.key == "messaging.batch.message_count"} == {"messaging.batch.message_count": 2}


def test_a_flush_hands_the_waiting_spans_over_and_batching_goes_on() -> None:
    """``flush`` (a server stopping) hands over what waits, long before its batch is due, and
    the thread goes on batching what comes after."""
    exporter = Batched()
    exported = exporter.batches
    batches = Batches.exporting(exporter, {"OTEL_BSP_SCHEDULE_DELAY": "600000"},
                                lambda record: record)
    try:
        batches.add(("a",))
        assert batches.flush(10)
        assert exported == [["a"]]
        batches.add(("b",))
        batches.add(("c",))
        assert batches.flush(10)
        assert exported == [["a"], ["b", "c"]]
    finally:
        batches.shutdown()
    assert not batches.flush(1)  # stopped: nothing more is handed over
