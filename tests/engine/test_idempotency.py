"""Idempotency: one run per key value for 24 hours."""

from __future__ import annotations

from typing import Any

import pytest

import tidings
from tests.engine.conftest import Engine
from tidings.errors import ConfigError


def _app() -> tidings.Tidings:
    client = tidings.Tidings(app_id="app")

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"),
                     idempotency="event.data.order")
    async def f(ctx: tidings.Context) -> Any:
        return ctx.event.data["order"]

    return client


async def test_one_run_per_key_for_a_day(engine: Engine) -> None:
    await engine.start(_app())
    ids = await engine.send(*[{"name": "go", "data": {"order": o}} for o in [1, 2, 1, 3, 2, 1]])
    await engine.drain()
    runs = await engine.runs()
    assert sorted(r.output for r in runs) == [1, 2, 3]
    skipped = (await engine.get(f"/v1/events/{ids[2]}"))["skipped"]
    assert [s["reason"] for s in skipped] == ["idempotency"]
    engine.clock.advance(24 * 3600_000 - 5_000)
    await engine.send({"name": "go", "data": {"order": 1}})
    await engine.drain()
    assert len(await engine.runs()) == 3  # a few seconds short of a day
    engine.clock.advance(5_000)
    await engine.send({"name": "go", "data": {"order": 1}}, {"name": "go", "data": {"order": 1}})
    await engine.drain()
    assert sorted(r.output for r in await engine.runs()) == [1, 1, 2, 3]


async def test_many_key_values(engine: Engine) -> None:
    await engine.start(_app())
    await engine.send(*[{"name": "go", "data": {"order": i % 200}} for i in range(600)])
    await engine.drain()
    assert len(await engine.runs()) == 200


def test_an_invalid_key_is_refused() -> None:
    client = tidings.Tidings(app_id="app")
    with pytest.raises(ConfigError, match="idempotency"):
        client.function(id="f", trigger=tidings.TriggerEvent(event="go"),
                        idempotency="event.data.(")(lambda ctx: None)
