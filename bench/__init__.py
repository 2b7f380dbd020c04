"""Benchmarks of the event-ingest hot path (P1, P2, run with ``wrk``) and of the engine (P3-P6,
beside Celery and DBOS; P7, SDK apps over HTTP; P8, flow control), against real servers.
``bench/README.md`` has the figures and how to read them.

* ``python -m bench.p1_ingest`` (P1): single-event ``POST /e/{key}`` against a bare ASGI app on
  the same server stack; the goal is tidings/bare >= 0.6.
* ``python -m bench.p2_batch`` (P2): 500-event requests; the goal is >= 100,000 events/s on
  SQLite, with PostgreSQL reported beside it.
* ``python -m bench.p3_throughput`` (P3): event -> one-step function completed, runs/s, beside
  Celery (Redis) and DBOS (SQLite, PostgreSQL); goals >= 10x Celery, >= 30x DBOS.
* ``python -m bench.p4_latency`` (P4): event -> function start at 100 events/s; p50 <= 2 ms,
  p99 <= 10 ms.
* ``python -m bench.p5_steps`` (P5): us per step in a 1,000-step function, beside DBOS; <= 100.
* ``python -m bench.p6_pending`` (P6): a million pending delayed events (or sleeping runs):
  RSS <= 300 MB, wake-up lateness p99 <= 100 ms.
* ``python -m bench.p7_http`` (P7): event -> one-step function completed, runs/s, served by an
  app written with the official ``inngest`` SDK over HTTP beside the same function native; the
  server's and the app's CPU per run show which of them limits the HTTP path.
* ``python -m bench.p8_flow`` (P8): a one-step function under a concurrency limit of 1 per key
  over 10,000 keys beside the same function without flow control; the goal is keyed/plain
  >= 0.7.
* ``python -m bench.p11_trigger`` (P11): the same one-step function as a Trigger.dev v2 Job
  (``@trigger.dev/sdk`` 2.3.18 over HTTP, one ``io.runTask``) beside it native; runs/s, server
  and app CPU per run.
* ``python -m bench [p1 ...]`` runs the ones named, or all.

Each round starts a fresh server (fresh data directory, free port) pinned to one core, drives it
with ``wrk`` pinned to the other, then checks that every acknowledged event was stored and that no
request failed. Results go to ``bench/results/`` as JSON.
"""
