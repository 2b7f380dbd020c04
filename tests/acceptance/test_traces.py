"""Traces end to end: a real ``tidings dev`` exporting over OTLP/HTTP (to a collector stand-in
in this test) and a real inngest-py client as the sender.

The official SDKs put no trace context inside the events they send (inngest-py 0.5 and
inngest-js 4 were read for it: the event body is ``name``, ``data``, ``id``, ``ts``, ``user``,
``v`` and, from inngest-js, ``meta``); it travels as the ``traceparent`` header, which
OpenTelemetry's HTTP client instrumentation adds to the SDK's request. So the event must keep
that context: the request's SERVER span is a child of the sender's span, the PRODUCER span
its child, and the run's CONSUMER span is linked to the PRODUCER's context."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import inngest
import pytest
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.acceptance.test_runs_cli import until
from tests.conftest import LiveServer, start_server, stop_server

APP = '''
import tidings

client = tidings.Tidings(app_id="traced")


@client.function(id="welcome", trigger=tidings.TriggerEvent(event="app/signed-up"))
async def welcome(ctx):
    return await ctx.step.run("greet", lambda: "hello " + ctx.event.data["who"])
'''
PRODUCER = 4  # the OTLP protobuf's SPAN_KIND_PRODUCER
SERVER = 2
CONSUMER = 5


class Collector:
    """An OTLP/HTTP trace receiver on loopback: every span posted to ``/v1/traces``."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                with collector.lock:
                    collector.spans.extend(span for resource in request.resource_spans
                                           for scope in resource.scope_spans
                                           for span in scope.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def named(self, name: str) -> list[Any]:
        with self.lock:
            return [span for span in self.spans if span.name == name]


@pytest.fixture
def collector() -> Iterator[Collector]:
    found = Collector()
    yield found
    found.server.shutdown()
    found.server.server_close()


@pytest.fixture
def traced_server(tmp_path: Path, collector: Collector) -> Iterator[LiveServer]:
    (tmp_path / "tracedapp.py").write_text(APP)
    server = start_server(tmp_path, "--db", str(tmp_path / "traced.db"), "-a",
                          "tracedapp:client",
                          env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
                               "OTEL_BSP_SCHEDULE_DELAY": "50", "PYTHONPATH": str(tmp_path)})
    yield server
    stop_server(server)


async def test_an_inngest_py_senders_trace_goes_on_into_the_event_and_its_run(
        traced_server: LiveServer, collector: Collector) -> None:
    sender_spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(sender_spans))
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        client = inngest.Inngest(app_id="signup-service", is_production=False,
                                 event_api_base_url=traced_server.url)
        try:
            with provider.get_tracer("signup").start_as_current_span("sign up") as signing_up:
                [event_id] = await client.send(inngest.Event(name="app/signed-up",
                                                             data={"who": "ada"}))
        finally:
            await client._http_client._http_client.aclose()
            client._http_client._http_client_sync.close()
    finally:
        instrumentor.uninstrument()
    sender_trace = signing_up.get_span_context().trace_id
    [sent] = [s for s in sender_spans.get_finished_spans() if s.kind == SpanKind.CLIENT]
    assert sent.parent is not None and sent.parent.span_id == signing_up.get_span_context().span_id

    runs = until(lambda: [r for r in httpx.get(f"{traced_server.url}/v1/events/{event_id}/runs",
                                               timeout=10).json()["data"]
                          if r["status"] == "Completed"], "the run to complete")
    assert runs[0]["output"] == "hello ada"
    [consumer] = until(lambda: collector.named("process traced-welcome"),
                       "the run's span to be exported")
    [server] = collector.named("POST /e/{key}")
    [producer] = collector.named("send events")

    # The SERVER span is the child of the span of the SDK's request, in the sender's trace.
    assert server.kind == SERVER
    assert int.from_bytes(server.trace_id) == sender_trace
    assert int.from_bytes(server.parent_span_id) == sent.context.span_id
    assert producer.kind == PRODUCER
    assert producer.trace_id == server.trace_id
    assert producer.parent_span_id == server.span_id
    # The run is a trace of its own, linked to the context the event kept.
    assert consumer.kind == CONSUMER
    assert consumer.trace_id != server.trace_id
    [link] = consumer.links
    assert (link.trace_id, link.span_id) == (producer.trace_id, producer.span_id)
    attributes = {a.key: a.value for a in consumer.attributes}
    assert attributes["messaging.message.id"].string_value == event_id
    assert attributes["tidings.run.status"].string_value == "Completed"
    [step] = until(lambda: collector.named("step greet"), "the step's span")
    assert step.trace_id == consumer.trace_id and step.parent_span_id == consumer.span_id
