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
import os
import re
import signal
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


def _span_processes(server: LiveServer) -> list[int]:
    """The span processes the server has said it started, in order."""
    return [int(pid) for pid in re.findall(rb"spans are made and exported by process (\d+)",
                                           (server.data_dir / "server.log").read_bytes())]


def _children(pid: int) -> set[int]:
    return {int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()}


def _sign_up(server: LiveServer, who: str) -> str:
    reply = httpx.post(f"{server.url}/e/key", timeout=10,
                       json={"name": "app/signed-up", "data": {"who": who}})
    assert reply.status_code == 200, reply.text
    event_id: str = reply.json()["ids"][0]
    return event_id


def _run_spans_of(collector: Collector, event_id: str) -> list[Any]:
    return [span for span in collector.named("process traced-welcome")
            if any(a.key == "messaging.message.id" and a.value.string_value == event_id
                   for a in span.attributes)]


def test_spans_are_made_by_a_process_of_their_own_started_again_when_it_dies(
        traced_server: LiveServer, collector: Collector) -> None:
    """The server's spans go to a process of its own, which makes and exports them; when that
    process dies, the server says so and starts another, and later spans go out through it."""
    [first] = until(lambda: _span_processes(traced_server), "the span process to be started")
    assert first in _children(traced_server.process.pid)
    assert b"tidings.observe.span_export" in Path(f"/proc/{first}/cmdline").read_bytes()
    ada = _sign_up(traced_server, "ada")
    until(lambda: _run_spans_of(collector, ada), "ada's run's span to be exported")

    os.kill(first, signal.SIGKILL)
    # Spans handed over while no span process runs are dropped (the log counts them): sign
    # up again and again until a run's span gets through the next process.
    sent: list[str] = []

    def through_the_next() -> list[Any]:
        sent.append(_sign_up(traced_server, "bob"))
        return [span for event_id in sent for span in _run_spans_of(collector, event_id)]

    until(through_the_next, "a later run's span to be exported")
    log = (traced_server.data_dir / "server.log").read_text()
    assert f"the span process (pid {first}) exited with code -9" in log
    processes = _span_processes(traced_server)
    assert len(processes) == 2 and processes[1] != first
    assert processes[1] in _children(traced_server.process.pid)


EXPORTERS = '''
import json
import os


class ToFile:
    """Each exported span's name, a line in the file SPANS_FILE names."""

    def export(self, spans):
        with open(os.environ["SPANS_FILE"], "a") as out:
            out.writelines(span.name + "\\n" for span in spans)
        return 0

    def shutdown(self):
        pass


class Broken:
    def __init__(self):
        raise RuntimeError("no credentials for the collector")
'''


def _server_with(tmp_path: Path, exporter: str, **env: str) -> LiveServer:
    (tmp_path / "tracedapp.py").write_text(APP)
    (tmp_path / "exporters.py").write_text(EXPORTERS)
    return start_server(tmp_path, "--db", str(tmp_path / "traced.db"), "-a", "tracedapp:client",
                        env={"TIDINGS_SPAN_EXPORTER": exporter, "PYTHONPATH": str(tmp_path),
                             "SPANS_FILE": str(tmp_path / "spans.txt"), **env})


def _completed(server: LiveServer, event_id: str) -> list[Any]:
    return [r for r in httpx.get(f"{server.url}/v1/events/{event_id}/runs",
                                 timeout=10).json()["data"] if r["status"] == "Completed"]


def test_spans_waiting_when_the_server_stops_are_exported_by_an_exporter_of_ones_own(
        tmp_path: Path) -> None:
    """``TIDINGS_SPAN_EXPORTER`` names an exporter class of one's own. Spans still waiting
    for their batch when the server is stopped (SIGTERM, as uvicorn ends the process by the
    signal, past exit handlers) are handed over as it stops, and exported; the span process
    takes no SIGTERM of its own (a supervisor stopping the group) before its input ends."""
    server = _server_with(tmp_path, "exporters:ToFile", OTEL_BSP_SCHEDULE_DELAY="600000")
    spans = tmp_path / "spans.txt"
    try:
        event_id = _sign_up(server, "ada")
        until(lambda: _completed(server, event_id), "the run to complete")
        assert not spans.exists()  # a batch waits ten minutes, or for 512 spans
        [helper] = _span_processes(server)
        os.kill(helper, signal.SIGTERM)
    finally:
        stop_server(server)
    until(lambda: spans.exists() and "process traced-welcome" in spans.read_text(),
          "the run's span to be exported after the server stopped")
    assert {"POST /e/{key}", "send events", "step greet", "process traced-welcome"} <= set(
        spans.read_text().splitlines())


def test_an_exporter_that_cannot_be_found_leaves_tracing_off_and_says_so(
        tmp_path: Path) -> None:
    server = _server_with(tmp_path, "exporters:Nowhere")
    try:
        event_id = _sign_up(server, "ada")
        until(lambda: _completed(server, event_id), "the run to complete")
        log = (server.data_dir / "server.log").read_text()
    finally:
        stop_server(server)
    assert "TIDINGS_SPAN_EXPORTER='exporters:Nowhere' cannot be found" in log
    assert "tracing stays off" in log
    assert _span_processes(server) == []


def test_an_exporter_that_cannot_be_made_is_said_so_and_not_started_again(
        tmp_path: Path) -> None:
    server = _server_with(tmp_path, "exporters:Broken", OTEL_BSP_SCHEDULE_DELAY="50")
    log = server.data_dir / "server.log"
    try:
        event_id = _sign_up(server, "ada")
        until(lambda: _completed(server, event_id), "the run to complete")
        until(lambda: b"spans are dropped from now on" in log.read_bytes(),
              "the server to say its spans are dropped")
        bob = _sign_up(server, "bob")
        until(lambda: _completed(server, bob), "a later run to complete")
        text = log.read_text()
    finally:
        stop_server(server)
    assert "the span exporter could not be made: no credentials for the collector" in text
    assert len(_span_processes(server)) == 1
