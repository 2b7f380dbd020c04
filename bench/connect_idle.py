"""Connect, idle: what 1,000 connected workers cost a server that is doing nothing else.

``tidings dev`` (SQLite, gateway on a free port) is pinned to core 0; this process, pinned to
core 1, opens N WebSockets to the gateway and on each does what an SDK worker does: answers the
hello with a ``WORKER_CONNECT`` for one app of one function, takes the ``READY`` and then sends
a ``WORKER_HEARTBEAT`` every 10 s (the SDKs' interval). Once every connection is ready (the
server lists N in ``GET /v1/apps``), it waits 10 s, reads the server's RSS, then the CPU the
server uses over ``--idle`` seconds, and compares both with the server before the first
connection.

Goal (issue 17): under 1 MB of RSS and under 0.1 % of a CPU per idle connection.

``python -m bench.connect_idle [--n 1000] [--idle 60]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import urllib.request
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from bench.engine import Report, cpu_seconds, load, pin_self, rss_bytes, tidings_dev
from tidings.connect import wire_pb2 as pb

FUNCTIONS = [{"id": "idle-app-fn", "name": "fn", "triggers": [{"event": "idle/go"}],
              "steps": {"step": {"id": "step", "name": "step", "runtime": {
                  "type": "ws", "url": "wss://connect?fnId=idle-app-fn&stepId=step"}}}}]
BEAT_SECONDS = 10.0


def _frame(kind: int, payload: bytes = b"") -> bytes:
    data: bytes = pb.ConnectMessage(kind=kind, payload=payload).SerializeToString()  # type: ignore[arg-type]
    return data


def _start(port: int) -> pb.StartResponse:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v0/connect/start", data=b"",
                                     method="POST")
    with urllib.request.urlopen(request, timeout=30) as answer:
        start = pb.StartResponse()
        start.ParseFromString(answer.read())
        return start


async def _worker(port: int, index: int, ready: asyncio.Queue[int],
                  stop: asyncio.Event) -> None:
    start = await asyncio.to_thread(_start, port)
    async with connect(start.gateway_endpoint, subprotocols=["v0.connect.inngest.com"],
                       open_timeout=60, ping_interval=None) as ws:
        await ws.recv()  # hello
        data = pb.WorkerConnectRequestData(
            connection_id=start.connection_id, instance_id=f"idle-{index}",
            auth_data=pb.AuthData(session_token=start.session_token), sdk_language="bench",
            sdk_version="1", apps=[pb.AppConfiguration(
                app_name="idle-app", functions=json.dumps(FUNCTIONS).encode())])
        await ws.send(_frame(pb.WORKER_CONNECT, data.SerializeToString()))
        answer = pb.ConnectMessage()
        answer.ParseFromString(await ws.recv())
        if answer.kind != pb.GATEWAY_CONNECTION_READY:
            raise RuntimeError(f"worker {index}: expected READY, got {answer.kind}")
        await ready.put(index)
        await _beat(ws, stop)


async def _beat(ws: ClientConnection, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await ws.send(_frame(pb.WORKER_HEARTBEAT))
        await ws.recv()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), BEAT_SECONDS)


def _listed(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/apps", timeout=30) as answer:
        apps = json.load(answer)["data"]
    return sum(len(app["connections"]) for app in apps if app["app_id"] == "idle-app")


async def measure(n: int, idle: float) -> dict[str, Any]:
    with tidings_dev("sqlite", args=["--no-discovery", "--connect-gateway-port", "0"]) as engine:
        await asyncio.sleep(2)
        rss_before = rss_bytes(engine.pid)
        cpu_before = cpu_seconds(engine.pid)
        await asyncio.sleep(idle / 4)
        baseline_cpu = (cpu_seconds(engine.pid) - cpu_before) / (idle / 4)
        ready: asyncio.Queue[int] = asyncio.Queue()
        stop = asyncio.Event()
        started = time.monotonic()
        tasks = []
        for index in range(n):
            tasks.append(asyncio.create_task(_worker(engine.port, index, ready, stop)))
            if index % 50 == 49:
                await asyncio.sleep(0.05)  # connect in waves, as a fleet rolls out
        for _ in range(n):
            await asyncio.wait_for(ready.get(), 300)
        connect_seconds = time.monotonic() - started
        listed = await asyncio.to_thread(_listed, engine.port)
        await asyncio.sleep(10)
        rss_after = rss_bytes(engine.pid)
        cpu_idle_before = cpu_seconds(engine.pid)
        await asyncio.sleep(idle)
        idle_cpu = (cpu_seconds(engine.pid) - cpu_idle_before) / idle
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    per_conn_rss = (rss_after - rss_before) / n
    per_conn_cpu = max(idle_cpu - baseline_cpu, 0.0) / n
    return {"n": n, "listed": listed, "connect_seconds": round(connect_seconds, 2),
            "rss_before_mb": round(rss_before / 2**20, 1),
            "rss_after_mb": round(rss_after / 2**20, 1),
            "rss_per_connection_kb": round(per_conn_rss / 1024, 1),
            "server_cpu_idle_share": round(idle_cpu, 4),
            "server_cpu_baseline_share": round(baseline_cpu, 4),
            "cpu_per_connection_percent": round(per_conn_cpu * 100, 5),
            "goal_rss_met": per_conn_rss < 2**20, "goal_cpu_met": per_conn_cpu * 100 < 0.1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=60.0)
    args = parser.parse_args()
    pin_self()
    report = Report("connect_idle", {"n": args.n, "idle": args.idle, "load_before": load()})
    result = asyncio.run(measure(args.n, args.idle))
    report.rounds.append(result)
    report.summary = result
    for key, value in result.items():
        print(f"  {key:<28} {value}")
    print(f"results: {report.save()}")


if __name__ == "__main__":
    main()
