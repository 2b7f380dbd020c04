"""Retention on both backends: each environment's settings (``/v1/settings``), refused when
they do not hold together; and housekeeping deleting expired events and ended runs, but never
what a run still needs."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

import tidings
from tests.conftest import make_settings
from tests.engine.conftest import Clock, Engine
from tests.unit.helpers import app_client
from tidings.core import Core
from tidings.runs.model import COMPLETED, SLEEPING
from tidings.triggerdev import statuses as v2_statuses
from tidings.triggerdev import tasks as v2_tasks

HOUR = 3_600_000


@pytest.fixture
async def engine(core: Core) -> Engine:
    return Engine(core, Clock(), [])


async def _post(client: httpx.AsyncClient, body: Any) -> httpx.Response:
    return await client.post("/v1/settings", json=body)


async def test_settings_default_change_and_go_back(client: httpx.AsyncClient) -> None:
    shown = (await client.get("/v1/settings")).json()["data"]
    assert shown == {"events_ttl": "forever", "runs_ttl": "forever", "dedup_window": "1d",
                     "encrypt_data": False}
    changed = await _post(client, {"events_ttl": "7d", "runs_ttl": 2 * 86_400_000,
                                   "dedup_window": "12h"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["data"] == {"events_ttl": "1w", "runs_ttl": "2d",
                                      "dedup_window": "12h", "encrypt_data": False}
    assert (await client.get("/v1/settings")).json()["data"]["events_ttl"] == "1w"
    back = await _post(client, {"events_ttl": None, "dedup_window": None})
    assert back.json()["data"] == {"events_ttl": "forever", "runs_ttl": "2d",
                                   "dedup_window": "1d", "encrypt_data": False}


@pytest.mark.parametrize(("body", "field"), [
    ({"events_ttl": "2h"}, "events_ttl"),  # shorter than the 1d dedup window
    ({"events_ttl": "2d", "dedup_window": "3d"}, "dedup_window"),
    ({"events_ttl": "5m", "dedup_window": "1m"}, "events_ttl"),  # under an hour
    ({"events_ttl": "99999d"}, "events_ttl"),
    ({"runs_ttl": "soon"}, "runs_ttl"),
    ({"runs_ttl": -5}, "runs_ttl"),
    ({"dedup_window": "forever"}, "dedup_window"),
    ({"dedup_window": True}, "dedup_window"),
    ({"keep": "1d"}, "keep"),
    ({}, "events_ttl"),
    ({}, "encrypt_data"),
    ({"encrypt_data": 1}, "encrypt_data"),
])
async def test_bad_settings_are_400_naming_the_setting_and_change_nothing(
    client: httpx.AsyncClient, body: Any, field: str
) -> None:
    reply = await _post(client, body)
    assert reply.status_code == 400, reply.text
    assert field in reply.json()["error"]
    assert (await client.get("/v1/settings")).json()["data"]["events_ttl"] == "forever"


async def test_serve_keeps_events_and_runs_thirty_days_by_default(db_url: str,
                                                                   tmp_path: Path) -> None:
    from tests.acceptance.sdk_apps import production_keys  # noqa: F401  (keys made below)
    from tidings.keys import create_key

    settings = make_settings(db_url, tmp_path, mode="serve")
    async with app_client(settings) as (http, core):
        secret, _ = await create_key(core.storage, "production", "api")
        reply = await http.get("/v1/settings", headers={"authorization": f"Bearer {secret}"})
        assert reply.json()["data"] == {"events_ttl": "30d", "runs_ttl": "30d",
                                        "dedup_window": "1d", "encrypt_data": False}
        listed = await http.get("/v1/events", headers={"authorization": f"Bearer {secret}"})
        assert listed.json()["retained_since"] is not None


def app() -> tidings.Tidings:
    client = tidings.Tidings(app_id="keep")

    @client.function(id="quick", trigger=tidings.TriggerEvent(event="quick"))
    async def quick(ctx: tidings.Context) -> Any:
        return await ctx.step.run("one", lambda: 1)

    @client.function(id="nap", trigger=tidings.TriggerEvent(event="nap"))
    async def nap(ctx: tidings.Context) -> Any:
        await ctx.step.sleep("long", "30d")
        return "rested"

    @client.function(id="bunch", trigger=tidings.TriggerEvent(event="bunch"),
                     batch_events=tidings.Batch(max_size=100, timeout="1w"))
    async def bunch(ctx: tidings.Context) -> Any:
        return len(ctx.events)

    return client


async def test_housekeeping_deletes_what_expired_and_keeps_what_runs_need(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    await engine.start(app())
    changed = await _post(client, {"events_ttl": "1h", "runs_ttl": "2h", "dedup_window": "30m"})
    assert changed.status_code == 200, changed.text
    quick = await engine.send(*({"name": "quick", "data": {"n": n}} for n in range(30)))
    (napping,) = await engine.send({"name": "nap"})
    batched = await engine.send({"name": "bunch"}, {"name": "bunch"})
    (delayed,) = await engine.send({"name": "quick", "deliver_after": 30 * 86_400})
    await engine.drain()
    listed = (await client.get("/v1/events", params={"limit": 1000})).json()
    assert len(listed["data"]) == 34 and listed["retained_since"] is not None

    function_id = (await engine.runs())[0].function_id

    def skip(tx: Any, event_id: str) -> None:  # as flow control records a run not started
        tx.run("flow_skip", (event_id, function_id, "throttled", engine.clock()))

    def skips(tx: Any, event_id: str) -> int:
        return len(tx.all("flow_skips_of_event", (event_id,)))

    for event_id in (quick[0], quick[-1], napping):
        await engine.core.storage.write(partial(skip, event_id=event_id))

    engine.clock.advance(90 * 60_000)  # the events expired; the runs ended 1.5 h ago
    housekeeper = engine.runtime.housekeeper  # type: ignore[union-attr]
    deleted = await housekeeper.once()
    # The skips of the events deleted went with them; the sleeping run's event keeps its own.
    assert [await engine.core.storage.read(partial(skips, event_id=e))
            for e in (quick[0], quick[-1], napping)] == [0, 0, 1]
    left = {e["id"] for e in (await client.get("/v1/events", params={"limit": 1000})
                              ).json()["data"]}
    assert left == {napping, *batched, delayed}
    assert deleted >= 30
    runs = await engine.runs()
    completed = [r for r in runs if r.status == COMPLETED]
    assert len(completed) == 30  # ended 1.5 h ago: kept (runs_ttl is 2 h)

    ended = completed[0].id

    def v2_rows(tx: Any) -> int:
        return len(v2_tasks.of_run(tx, ended)) + len(v2_statuses.of_run(tx, ended))

    def add_v2_rows(tx: Any) -> None:  # what a v2 Job's run keeps beside its steps
        v2_tasks.start(tx, ended, v2_tasks.NewTask(
            idempotency_key="k", name="t", display_key=None, noop=True, delay_until=None,
            parent_id=None, params=None), engine.clock(), env_id=engine.env_id)
        v2_statuses.update(tx, ended, "s", v2_statuses.Update("label", None, None),
                           engine.clock(), env_id=engine.env_id)

    await engine.core.storage.write(add_v2_rows)
    assert await engine.core.storage.read(v2_rows) == 2
    engine.clock.advance(60 * 60_000)  # the completed runs ended 2.5 h ago
    await housekeeper.once()
    assert await engine.core.storage.read(v2_rows) == 0  # gone with their run
    statuses = [r.status for r in await engine.runs()]
    assert COMPLETED not in statuses and SLEEPING in statuses
    assert await engine.steps(completed[0].id) == []  # their steps went with them
    assert (await engine.run(next(r.id for r in runs if r.status == SLEEPING))).status == SLEEPING


async def test_the_dedup_window_is_the_environments(engine: Engine,
                                                    client: httpx.AsyncClient) -> None:
    await engine.start(app())
    await _post(client, {"dedup_window": "1m"})
    (first,) = await engine.send({"name": "quick", "id": "same-id"})
    (again,) = await engine.send({"name": "quick", "id": "same-id"})
    assert again == first
    engine.clock.advance(2 * 60_000)
    (later,) = await engine.send({"name": "quick", "id": "same-id"})
    assert later != first


async def test_sqlite_gives_the_space_back(tmp_path: Path) -> None:
    from tidings.engine import expiry

    db = tmp_path / "tidings.db"
    core = await Core.start(make_settings(f"sqlite:///{db}", tmp_path))
    try:
        engine = Engine(core, Clock(), [])
        await engine.start(app())
        for _ in range(10):
            await engine.send(*[{"name": "big", "data": {"b": "x" * 2000}}] * 200)
        await engine.drain()
        await core.storage.scrub()
        full = _size(db)
        while await core.storage.write(lambda tx: expiry.expire_events(
                tx, engine.env_id, before_ms=engine.clock() + 1, chunk=500)):
            pass
        freed = await core.storage.write(expiry.free_pages)
        await core.storage.scrub()
        assert freed > 0
        assert _size(db) < full / 2
    finally:
        await core.close()


def _size(path: Path) -> int:
    return path.stat().st_size


async def test_a_change_made_elsewhere_reaches_both_settings_in_one_read(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Retention and encrypt_data are one entry per environment (``env_settings.py``): changed
    by another process, the old entry is used without waiting while it is read again in the
    background, and both settings change together."""
    from tidings.events import env_settings, retention
    from tidings.ids import now_ms

    await engine.start(app())
    core, env_id, cache = engine.core, engine.env_id, env_settings.ENV_SETTINGS
    monkeypatch.setattr(env_settings, "CACHE_SECONDS", 0.05)
    before = await core.storage.read(partial(cache.read, env_id=env_id))
    assert before.generation is None and before.retention == retention.Stored()

    def elsewhere(tx: Any) -> None:  # what another process writes (this one's entry untouched)
        retention.save(tx, env_id, retention.Stored(dedup_window_ms=60_000), now_ms())
        tx.run("sealing_save", (env_id, 1, 3, now_ms()))

    await core.storage.write(elsewhere)
    assert await cache.of(core.storage, env_id) == before  # never waited for
    deadline = time.monotonic() + 10
    while (now := await cache.of(core.storage, env_id)) == before:
        assert time.monotonic() < deadline, "the stale entry was never read again"
        await asyncio.sleep(0.01)
    assert now.generation == 3 and now.retention.dedup_window_ms == 60_000
    assert (await core.ingest.retention(env_id)).dedup_window_ms == 60_000


async def test_one_read_gives_both_settings_as_stored(core: Core) -> None:
    """``EnvSettingsCache.read`` reads an environment's retention and encrypt_data in one
    statement: its own retention or the defaults, its own sealing or else the default's."""
    from tidings.events import env_settings, retention
    from tidings.ids import now_ms

    cache, env_id = env_settings.EnvSettingsCache(), "env-read-once"

    async def read() -> tuple[retention.Stored, int | None]:
        found = await core.storage.read(partial(cache.read, env_id=env_id))
        return found.retention, found.generation

    def write(name: str, *params: Any) -> Any:
        return core.storage.write(lambda tx: tx.run(name, params))

    assert await read() == (retention.Stored(), None)
    await write("sealing_save", env_settings.DEFAULT, 1, 2, now_ms())
    assert await read() == (retention.Stored(), 2)
    await write("retention_save", env_id, 0, HOUR, None, now_ms())
    own = retention.Stored(events_ttl_ms=0, runs_ttl_ms=HOUR)
    assert await read() == (own, 2)
    await write("sealing_save", env_id, 0, 4, now_ms())
    assert await read() == (own, None)  # its own setting (off) over the default (on)
    await write("sealing_save", env_id, 1, 5, now_ms())
    assert await read() == (own, 5)
    await write("sealing_save", env_settings.DEFAULT, 0, 2, now_ms())
    assert await read() == (own, 5)
