"""An engine in drain mode: tests send events, then route and run everything due, with a clock
they can move."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import pytest

import tidings
from tidings.core import Core
from tidings.engine.backoff import Backoff
from tidings.engine.executor import EngineSettings, Executor
from tidings.engine.runtime import Runtime, native_queue
from tidings.events.parse import parse_events
from tidings.flow import status as flow_status
from tidings.ids import now_ms
from tidings.runs import journal, store
from tidings.runs.model import TERMINAL, Run, StepRow
from tidings.server import create_app
from tidings.storage.tx import Tx


class Clock:
    def __init__(self) -> None:
        self.offset = 0

    def __call__(self) -> int:
        return now_ms() + self.offset

    def advance(self, ms: int) -> None:
        self.offset += ms


@dataclass
class Engine:
    core: Core
    clock: Clock
    apps: list[tidings.Tidings]
    runtime: Runtime | None = None

    async def start(self, *apps: tidings.Tidings) -> Runtime:
        self.apps.extend(apps)
        self.runtime = Runtime(self.core, self.apps, clock=self.clock, settings=EngineSettings(
            backoff=Backoff.fixed(1000)))
        await self.runtime.register()
        return self.runtime

    @property
    def env_id(self) -> str:
        assert self.runtime is not None and self.runtime.env is not None
        return self.runtime.env.id

    async def send(self, *events: dict[str, Any]) -> list[str]:
        parsed = parse_events(msgspec.json.encode(list(events)), self.core.settings.limits,
                              self.clock())
        return await self.core.ingest.append(self.env_id, parsed, received_at=self.clock())

    async def drain(self) -> int:
        assert self.runtime is not None
        return await self.runtime.drain()

    async def runs(self) -> list[Run]:
        def read(tx: Tx) -> list[Run]:
            rows = tx.all("runs_of_env", (self.env_id,))
            return [Run.from_row(r) for r in rows]

        return await self.core.storage.read(read)

    async def run(self, run_id: str) -> Run:
        found = await self.core.storage.read(lambda tx: store.get_run(tx, run_id))
        assert found is not None
        return found

    async def steps(self, run_id: str) -> list[StepRow]:
        return await self.core.storage.read(lambda tx: journal.steps_of(tx, run_id))

    def executor(self, app_id: str = "app") -> Executor:
        assert self.runtime is not None
        return self.runtime.executors[native_queue(app_id)]

    async def waiting(self, run_id: str) -> dict[str, Any] | None:
        """Why flow control holds the run back, as the runs API says it."""
        run = await self.run(run_id)
        return await self.core.storage.read(lambda tx: flow_status.waiting(tx, run))

    async def api(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """Call the JSON API over this engine's core."""
        app = create_app(self.core.settings, self.core)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tidings") as http:
            return await http.request(method, path, json=body)

    async def get(self, path: str) -> Any:
        """``GET`` a ``/v1`` path; its ``data``."""
        response = await self.api("GET", path)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    async def settle(self, *, rounds: int = 50, step_ms: int = 1_000) -> None:
        """Drain, move the clock, drain again, until nothing is left to do or rounds run out."""
        for _ in range(rounds):
            await self.drain()
            if all(r.status in TERMINAL for r in await self.runs()):
                return
            self.clock.advance(step_ms)


@pytest.fixture
async def engine(core: Core) -> Engine:
    return Engine(core, Clock(), [])
