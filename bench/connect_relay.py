"""Connect across processes: how long a call made by one process through a worker socket held
by another takes, on PostgreSQL, with the relay woken by ``NOTIFY`` and with the rows polled
alone (every 100 ms, as before ``NOTIFY``).

Two relays and hubs in this process stand for the two processes, each with its own storage
(its own pool and, with ``NOTIFY``, its own listening connection, as ``Runtime`` has). The
owner's worker acknowledges and replies at once, so what is measured is the relay itself: the
caller writes the call, the owner sends it down the socket, the acknowledgement and the reply
come back through the rows. ``--n`` calls one after the other per mode, modes alternated over
``--rounds``; the median and p95 of each mode are printed.

``python -m bench.connect_relay [--db postgresql://…] [--n 200] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import statistics
import time
from collections.abc import AsyncIterator

import psycopg

from tidings.connect import wire_pb2 as pb
from tidings.connect.hub import Hub, function_url
from tidings.connect.relay import Relay
from tidings.connect.worker import Worker
from tidings.runs.local import Wakers
from tidings.storage import Storage, storage_for
from tidings.supervision import Supervisor

URL = function_url("env1", "app", "app-fn")


@contextlib.asynccontextmanager
async def process(url: str, name: str, notify: bool) -> AsyncIterator[tuple[Hub, Storage]]:
    """One "process": its storage, its relay (woken through its own listener when
    ``notify``) and its hub."""
    storage = storage_for(url)
    await storage.open()
    wakers = Wakers()
    relay = Relay(storage, owner=name, wakers=wakers if notify else None)
    hub = Hub(relay=relay)
    listening = asyncio.Event()
    listener = None
    if notify:
        listener = asyncio.create_task(storage.subscribe(wakers.wake, lambda: None,
                                                         listening.set))
        await asyncio.wait_for(listening.wait(), 10)
    try:
        yield hub, storage
    finally:
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(BaseException):
                await listener
        relay.close()
        await storage.close()


def instant_worker(owner: Hub) -> Worker:
    """A worker that acknowledges and answers every call at once."""
    worker: Worker

    async def answer(request: pb.GatewayExecutorRequestData) -> None:
        await owner.acked(worker, request.request_id)
        await owner.replied(worker, "env1", pb.SDKResponse(
            request_id=request.request_id, status=pb.DONE, body=b'"ok"'))

    async def send(data: bytes) -> None:
        message = pb.ConnectMessage()
        message.ParseFromString(data)
        request = pb.GatewayExecutorRequestData()
        request.ParseFromString(message.payload)
        asyncio.get_running_loop().create_task(answer(request))

    worker = Worker(connection_id="01M90W3Q9S82EK4PVH1C9AB6KE", env_id="env1",
                    instance_id="i1", functions={"app": frozenset({"app-fn"})}, sdk="bench",
                    send=send)
    return worker


async def round_of(url: str, n: int, notify: bool) -> list[float]:
    async with process(url, "owner", notify) as (owner, _), \
            process(url, "caller", notify) as (caller, _):
        supervisor = Supervisor()
        assert owner.relay is not None
        await owner.relay.start(owner, supervisor)
        try:
            await owner.add(instant_worker(owner))
            await caller.post(URL, b"{}", {})  # warm up
            took = []
            for _ in range(n):
                began = time.perf_counter()
                answer = await caller.post(URL, b"{}", {})
                took.append(time.perf_counter() - began)
                assert answer.status == 200
            return took
        finally:
            await owner.relay.stop()


def fresh(base: str) -> tuple[str, str]:
    schema = "bench_" + secrets.token_hex(4)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    return schema, f"{base}{sep}options=-csearch_path%3D{schema}"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    schema, url = fresh(args.db)
    try:
        storage = storage_for(url)
        await storage.open()
        await storage.migrate()
        await storage.close()
        results: dict[str, list[float]] = {"poll": [], "notify": []}
        for _ in range(args.rounds):
            for mode in ("poll", "notify"):
                results[mode] += await round_of(url, args.n, mode == "notify")
        for mode, took in results.items():
            took.sort()
            print(f"{mode:>6}: {len(took)} calls, median {statistics.median(took) * 1000:.1f} ms, "
                  f"p95 {took[int(len(took) * 0.95)] * 1000:.1f} ms")
        ratio = statistics.median(results["poll"]) / statistics.median(results["notify"])
        print(f"median latency, poll / notify: {ratio:.1f}x")
    finally:
        with psycopg.connect(args.db, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    asyncio.run(main())
