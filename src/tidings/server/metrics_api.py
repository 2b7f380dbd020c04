"""``GET /metrics``: the Prometheus text format.

The process's own counters and histograms (``observe/metrics.py``), then the gauges of shared
state, computed from the database at scrape time so that every process reports the same
values: ``tidings_queue_depth{state}`` (runs ready, delayed, leased), ``tidings_queue_oldest_
ready_age_seconds``, ``tidings_waits_pending{kind}`` (sleep, event, invoke), Inngest's
``inngest_queue_depth`` (ready and delayed runs), ``tidings_connect_workers_shared{status}``
(the Connect worker connections of every process, as their rows say), and
``tidings_build_info``. With the process's Connect hub: ``tidings_connect_workers{state}`` and
``tidings_connect_calls_in_flight{route}`` (this process's sockets and the calls on them).

Outside dev the scraper shows an API key as bearer token, unless ``--metrics-public``.
``tidings worker --metrics-port`` serves this with ``/health`` and ``/ready``
(``worker_app``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.connect.hub import Hub
from tidings.connect.relay import FRESH_MS
from tidings.core import Core
from tidings.errors import RequestRejected
from tidings.ids import now_ms
from tidings.observe.metrics import REGISTRY
from tidings.server.health import HealthAPI
from tidings.server.requests import bearer, error_response
from tidings.storage.tx import Tx
from tidings.version import VERSION

WAIT_KINDS = {"sleep": "sleep", "wait": "event", "invoke": "invoke"}


@dataclass(frozen=True, slots=True)
class SharedState:
    """What the database says at one moment, for the gauges."""

    ready: int
    delayed: int
    leased: int
    oldest_ready_age_s: float
    waits: dict[str, int]
    mode: str
    storage: str
    connect: dict[str, int]

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("tidings_queue_depth", "Runs in the queue: ready (due, not "
                                  "leased), delayed (due later), leased (being called).",
                                  labels=["state"])
        for state, value in (("ready", self.ready), ("delayed", self.delayed),
                             ("leased", self.leased)):
            depth.add_metric([state], value)
        yield depth
        yield GaugeMetricFamily("tidings_queue_oldest_ready_age_seconds",
                                "How long the oldest ready run has been due (0: none).",
                                value=self.oldest_ready_age_s)
        waits = GaugeMetricFamily("tidings_waits_pending", "Pauses of runs: sleeps, waits "
                                  "for an event, invocations.", labels=["kind"])
        for kind in ("sleep", "event", "invoke"):
            waits.add_metric([kind], self.waits.get(kind, 0))
        yield waits
        yield GaugeMetricFamily("inngest_queue_depth", "Runs waiting in the queue, ready or "
                                "delayed (Inngest's name).", value=self.ready + self.delayed)
        shared = GaugeMetricFamily("tidings_connect_workers_shared", "Connect worker "
                                   "connections of every process sharing the database, by "
                                   "status (ready, draining).", labels=["status"])
        for status in ("ready", "draining"):
            shared.add_metric([status], self.connect.get(status, 0))
        yield shared
        info = GaugeMetricFamily("tidings_build_info", "Always 1: the release, mode and "
                                 "storage of this process.",
                                 labels=["version", "mode", "storage"])
        info.add_metric([VERSION, self.mode, self.storage], 1)
        yield info


async def shared_state(core: Core) -> SharedState:
    now = now_ms()

    def read(tx: Tx) -> tuple[tuple[int, ...], list[tuple[str, int]], dict[str, int]]:
        queue = tx.one("metrics_queue", (now,) * 7)
        assert queue is not None
        connect = {str(r[0]): int(r[1])
                   for r in tx.all("metrics_connect_workers", (now - FRESH_MS,))}
        return tuple(queue), [(r[0], int(r[1])) for r in tx.all("metrics_waits")], connect

    queue, waits, connect = await core.storage.read(read)
    ready, delayed, leased, oldest = queue
    return SharedState(ready=int(ready), delayed=int(delayed), leased=int(leased),
                       oldest_ready_age_s=max(0.0, (now - int(oldest)) / 1000)
                       if oldest is not None else 0.0,
                       waits={WAIT_KINDS.get(kind, kind): count for kind, count in waits},
                       mode=core.settings.mode, storage=core.storage.dialect, connect=connect)


@dataclass(frozen=True, slots=True)
class ConnectGauges:
    """The Connect sockets this process holds and the calls in flight on them."""

    hub: Hub

    def collect(self) -> Iterator[Metric]:
        sockets, calls = self.hub.gauges()
        workers = GaugeMetricFamily("tidings_connect_workers", "Connect worker connections "
                                    "held by this process, by state (ready; draining: "
                                    "paused, no new calls).", labels=["state"])
        for state, count in sockets.items():
            workers.add_metric([state], count)
        yield workers
        flight = GaugeMetricFamily("tidings_connect_calls_in_flight", "Calls on Connect "
                                   "workers waiting for their reply in this process, by route "
                                   "(local; forwarded: made by another process; handed: made "
                                   "here, the worker gone to another process's socket).",
                                   labels=["route"])
        for route, count in calls.items():
            flight.add_metric([route], count)
        yield flight


async def exposition(core: Core, hub: Hub | None = None) -> bytes:
    """The whole text: this process's series, then the shared state's."""
    state = await shared_state(core)
    text = generate_latest(REGISTRY) + generate_latest(state)
    if hub is not None:
        text += generate_latest(ConnectGauges(hub))
    return text


class MetricsAPI:
    def __init__(self, core: Core, hub: Hub | None = None) -> None:
        self.core = core
        self.hub = hub
        observe = core.settings.observe
        self._token = not (core.settings.dev or observe.metrics_public)

    def routes(self) -> list[Route]:
        """``/metrics``, unless metrics are off (``--no-metrics``)."""
        if not self.core.settings.observe.metrics:
            return []
        return [Route("/metrics", self.metrics, methods=["GET"])]

    async def metrics(self, request: Request) -> Response:
        """Lenient with query parameters (Prometheus adds none; others may)."""
        if self._token:
            try:
                await self.core.gate.env_for(bearer(request), "api")
            except RequestRejected as exc:  # 401 without a valid API key
                return error_response(exc.status, exc.message)
        return Response(await exposition(self.core, self.hub), media_type=CONTENT_TYPE_LATEST)


def worker_app(core: Core, hub: Hub | None = None) -> Starlette:
    """What ``tidings worker --metrics-port`` serves: ``/metrics``, ``/health``, ``/ready``."""

    return Starlette(routes=[*MetricsAPI(core, hub).routes(), *HealthAPI(core).routes()])


class ProbeServer:
    """``worker_app`` on its own port, in the worker's event loop. The worker handles its
    signals itself (``SIGTERM`` drains it): this server installs none."""

    def __init__(self, core: Core, host: str, port: int, hub: Hub | None = None) -> None:
        import uvicorn

        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        config = uvicorn.Config(worker_app(core, hub), host=host, port=port, lifespan="off",
                                access_log=False, log_config=None)
        self._server = Quiet(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Serve; raises when the port cannot be taken."""
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise OSError(f"the metrics port {self._server.config.port} could not be "
                              "opened")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            await self._task
