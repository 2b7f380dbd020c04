"""The Celery side of P3: a no-op task that counts its completions in Redis.

Workers: ``celery -A bench.peers.celery_app worker --pool prefork -c 2``. The broker is Redis
database ``TIDINGS_BENCH_REDIS_DB`` (default 13) on 127.0.0.1:6379; results are not stored (the
task increments ``COUNTER`` instead, which is cheaper than a result backend), so Celery is
measured at its fastest.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

REDIS_DB = os.environ.get("TIDINGS_BENCH_REDIS_DB", "13")
REDIS_URL = os.environ.get("TIDINGS_BENCH_REDIS", f"redis://127.0.0.1:6379/{REDIS_DB}")
QUEUE = os.environ.get("TIDINGS_BENCH_CELERY_QUEUE", "tidings-bench")
COUNTER = f"{QUEUE}:done"

app = Celery("tidings_bench", broker=REDIS_URL)
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    worker_send_task_events=False,
)
_redis: redis.Redis | None = None


@app.task(name="bench.noop")
def noop() -> None:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(REDIS_URL)
    _redis.incr(COUNTER)
