"""Tracing's own CPU, without a server: what a P3 run's spans (a step and the run, linked to
its event) and a P1 request's spans (SERVER and ``send events``) cost to record on the path
that makes them and to make into ``ReadableSpan``s for the exporter (the export thread's part),
each the minimum over repeated rounds of process CPU, so a loaded machine's neighbours matter
less than in P10's servers (``bench.p10_observe``); and what a span costs to encode for OTLP
in the span process, against what its record costs the server to send there.

``python -m bench.trace_cost [--rounds 15] [--n 20000]``

Run it with another tree first on ``PYTHONPATH`` to compare two versions of the code.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from tidings.ids import new_ids, now_ms
from tidings.observe import tracing

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
HEADERS = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
           (b"content-length", b"40"), (b"user-agent", b"wrk")]


def _sink() -> tuple[Any, list[Any]]:
    from bench.variants import Drop

    tracing.export_to(Drop())
    sink = tracing._sink
    assert sink is not None
    records: list[Any] = []
    sink.add = records.append  # kept here, converted below: no export thread
    return sink, records


def p3_round(sink: Any, records: list[Any], run_ids: list[str]) -> tuple[float, float]:
    records.clear()
    began = time.process_time()
    for run_id in run_ids:
        tracing.step_span(run_id, step="s1", name="s1", op="run", attempt=0, started_at=1,
                          ended_at=2)
        tracing.run_span(run_id, function="p3-noop", app="bench", status="Completed",
                         started_at=1, ended_at=3, attempt=0, event_ids=[run_id],
                         traceparents=[TRACEPARENT])
    made = time.process_time()
    for record in records:
        sink.spans(record)
    done = time.process_time()
    return (made - began) / len(run_ids) * 1e6, (done - made) / len(run_ids) * 1e6


def p1_round(sink: Any, records: list[Any], n: int) -> tuple[float, float]:
    records.clear()
    began = time.process_time()
    for _ in range(n):
        request = tracing.request_began(HEADERS)
        producer = tracing.producing(1)
        assert request is not None and producer is not None
        tracing.produced(producer)
        tracing.request_ended(request, "/e/{key}", "POST", 200)
    made = time.process_time()
    for record in records:
        sink.spans(record)
    done = time.process_time()
    return (made - began) / n * 1e6, (done - made) / n * 1e6


def encoding(sink: Any, records: list[Any], run_ids: list[str], rounds: int) -> tuple[float, float]:
    """What the span process does beyond making spans, per span, for a P3 run's two: OTLP's
    protobuf encoding of a batch of 512 (``encode_spans`` and ``SerializeToString``, as its
    HTTP exporter does), and the server's part of sending their records there (``marshal``
    of the batch's records); the minimum over ``rounds``."""
    import marshal

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    p3_round(sink, records, run_ids[:256])
    batch = [span for record in records for span in sink.spans(record)]
    kept = list(records)
    otlp = sent = float("inf")
    for _ in range(rounds):
        began = time.process_time()
        encode_spans(batch).SerializeToString()
        otlp = min(otlp, (time.process_time() - began) / len(batch) * 1e6)
        began = time.process_time()
        marshal.dumps(kept)
        sent = min(sent, (time.process_time() - began) / len(batch) * 1e6)
    return otlp, sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trace_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args(argv)
    sink, records = _sink()
    p3 = [float("inf")] * 2
    p1 = [float("inf")] * 2
    for index in range(args.rounds):
        # Fresh run ids each round: a run's ids are derived once, as in a server.
        ids = new_ids(args.n, now_ms() + index * 1000)
        p3 = [min(a, b) for a, b in zip(p3, p3_round(sink, records, ids), strict=True)]
        p1 = [min(a, b) for a, b in zip(p1, p1_round(sink, records, args.n), strict=True)]
    print(f"P3, per run:     on the path {p3[0]:.2f} us, made for export {p3[1]:.2f} us, "
          f"total {sum(p3):.2f} us")
    print(f"P1, per request: on the path {p1[0]:.2f} us, made for export {p1[1]:.2f} us, "
          f"total {sum(p1):.2f} us")
    otlp, sent = encoding(sink, records, new_ids(256, now_ms()), args.rounds)
    print(f"per span: OTLP's encoding {otlp:.2f} us; its record sent to the span process "
          f"(marshal) {sent:.3f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
