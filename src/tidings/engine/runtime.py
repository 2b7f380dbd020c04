"""The runtime of a process: registers its native apps, routes, executes, fires crons; with
``http`` (servers, unless ``--no-http``; ``tidings worker`` without apps, or ``--http``) it also
calls the functions of Inngest SDK apps (queue ``http``).

``tidings dev -a module:client`` runs one next to the HTTP server; ``tidings worker`` runs one
alone. Everything it knows is in the database, so any number of them can share one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

from tidings.core import Core
from tidings.engine.executor import EngineSettings, Executor
from tidings.engine.housekeeping import Housekeeper
from tidings.engine.http_client import AppCaller
from tidings.engine.http_driver import HttpDriver
from tidings.engine.native import NativeDriver
from tidings.engine.replays import Replays
from tidings.engine.scheduler import CronService
from tidings.engine.trigger_driver import TriggerDriver
from tidings.events.retention import defaults as retention_defaults
from tidings.functions import registration
from tidings.functions.registration import FunctionDef
from tidings.ids import now_ms
from tidings.keys import SigningKeys, ensure_env
from tidings.netguard import Policy
from tidings.router.handoff import Stored
from tidings.router.route import Adopted, Routed, route_new
from tidings.router.service import RouterService
from tidings.runs.model import HTTP_QUEUE
from tidings.storage.base import Environment, EventRow
from tidings.storage.tx import Tx
from tidings.triggerdev.keys import TriggerKeys
from tidings.triggerdev.wire import TRIGGER_QUEUE

if TYPE_CHECKING:
    from tidings.sdk.client import Tidings

log = logging.getLogger("tidings.runtime")


def native_queue(app_id: str) -> str:
    return f"native:{app_id}"


class Runtime:
    def __init__(self, core: Core, apps: Sequence[Tidings] = (), *,
                 env: str = "dev", settings: EngineSettings | None = None,
                 clock: Callable[[], int] = now_ms, route: bool = True,
                 http: bool = False, connect: AppCaller | None = None) -> None:
        self.core = core
        self.apps = list(apps)
        self.env_name = env
        self.settings = settings or EngineSettings()
        self.clock = clock
        self.registry = core.registry
        supervisor = core.supervisor
        self.router = RouterService(core.storage, self.registry, self._routed,
                                    supervisor=supervisor, clock=clock)
        self.cron = CronService(core.storage, self.registry, self._due, supervisor=supervisor,
                                clock=clock)
        self.housekeeper = Housekeeper(core.storage, supervisor=supervisor, clock=clock,
                                       retention=retention_defaults(core.settings.dev))
        self.replays = Replays(core.storage, self._due, supervisor=supervisor)
        self.executors: dict[str, Executor] = {}
        self._route = route
        self._http = http
        self._connect = connect
        self._listener: asyncio.Task[None] | None = None
        self.env: Environment | None = None

    async def register(self) -> None:
        """Record this process's native functions (and archive ones its apps dropped)."""
        if self.apps:  # a process that only calls SDK apps has no environment of its own
            name = self.env_name
            self.env = env = await self.core.storage.write(lambda tx: ensure_env(tx, name))
            now = self.clock()
            for app in self.apps:
                queue = native_queue(app.app_id)
                defs = [FunctionDef(slug=fn.slug, name=fn.name, url=None,
                                    config=fn.definition()) for fn in app.functions]
                await self.core.storage.write(
                    partial(registration.register, env_id=env.id, app_id=app.app_id, queue=queue,
                            defs=defs, now=now))
                driver = NativeDriver({fn.slug: fn for fn in app.functions})
                self._add(Executor(
                    self.core, self.registry, driver, queue=queue,
                    settings=self.settings, clock=self.clock, on_events=self.router.submit,
                    on_due=self._due))
        if self._http and HTTP_QUEUE not in self.executors:
            # Functions of Inngest SDK apps, whatever environment synced them.
            keys = SigningKeys(self.core.storage, self.core.vault.sealer.keyring)
            http = HttpDriver(keys, dev=self.core.settings.dev,
                              guard=Policy.from_settings(self.core.settings),
                              connect=self._connect)
            self._add(Executor(
                self.core, self.registry, http, queue=HTTP_QUEUE, settings=self.settings,
                clock=self.clock, on_events=self.router.submit, on_due=self._due))
            # Jobs of Trigger.dev v2 apps, called with their environment's trigger key.
            trigger = TriggerDriver(self.core, TriggerKeys(
                self.core.storage, self.core.vault.sealer.keyring, dev=self.core.settings.dev))
            self._add(Executor(
                self.core, self.registry, trigger, queue=TRIGGER_QUEUE, settings=self.settings,
                clock=self.clock, on_events=self.router.submit, on_due=self._due))
        await self.core.storage.read(self.registry.refresh)

    def _add(self, executor: Executor) -> None:
        """Run ``executor`` for its queue, woken through the core's ``wakers``."""
        old = self.executors.get(executor.queue)
        if old is not None:
            self.core.wakers.remove(old.queue, old.wake)
        self.executors[executor.queue] = executor
        self.core.wakers.add(executor.queue, executor.wake)

    async def start(self) -> None:
        await self.register()
        if self._route:
            self.core.handoff.attach(self, inline=self.core.storage.routes_inline)
            await self.router.start()
        await self.cron.start()
        await self.housekeeper.start()
        for executor in self.executors.values():
            await executor.start()
        await self.replays.resume()
        storage = self.core.storage
        if storage.notifies:
            subscribe = storage.subscribe
            self._listener = self.core.supervisor.start(
                "tidings-listener", lambda ok: subscribe(
                    self._due, self.core.gate.forget, partial(self._listening, ok)))

    async def stop(self, grace: float = 30.0) -> None:
        await self.replays.stop()
        if self._listener:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await asyncio.gather(*(e.stop(grace) for e in self.executors.values()))
        for executor in self.executors.values():
            self.core.wakers.remove(executor.queue, executor.wake)
        await self.cron.stop()
        await self.housekeeper.stop()
        await self.router.stop()
        self.core.handoff.detach(self)

    async def drain(self, *, rounds: int = 1000) -> int:
        """Route and run everything due now until nothing is left (tests)."""
        total = 0
        for _ in range(rounds):
            await self.router.flush()
            await self.cron.tick()
            ran = 0
            for executor in self.executors.values():
                ran += await executor.drain()
            total += ran
            if not ran:
                await self.router.flush()
                if not any([await e.drain() for e in self.executors.values()]):
                    return total
        return total

    # -- the router of this process (``router/handoff.py``) --------------------------------

    def route(self, tx: Tx, rows: list[EventRow], now: int) -> Routed:
        """Route events in the transaction that stores them; new runs of this process's
        queues go straight to their executors."""
        return route_new(tx, self.registry, rows, now, self.executors)

    def routed(self, result: Routed) -> None:
        by_queue: dict[str, list[Adopted]] = {}
        for adopted in result.adopted:
            by_queue.setdefault(adopted.run.queue, []).append(adopted)
        for queue, calls in by_queue.items():
            self.executors[queue].adopt(calls)
        self._routed(result)

    def abandoned(self, result: Routed) -> None:
        """The storing transaction failed: give back the slots its routing reserved."""
        for adopted in result.adopted:
            self.executors[adopted.run.queue].unreserve(1)

    def stored(self, batch: Stored) -> None:
        self.router.submit(batch.due)
        if batch.delayed:
            self.router.delayed()

    def _routed(self, routed: Routed) -> None:
        for queued in routed.runs:
            self._due(queued.queue)
        if routed.woken:
            for executor in self.executors.values():
                executor.wake()

    def _listening(self, ok: Callable[[], None]) -> None:
        """Listening (again): what was notified before is lost, so every executor looks for
        due runs now and every key is checked again on its next use."""
        ok()
        self.core.gate.forget()
        self._due("*")

    def _due(self, queue: str) -> None:
        self.core.wakers.wake(queue)
