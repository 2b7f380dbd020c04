"""Which events start which functions: names, wildcards, CEL, source and payload filters."""

from __future__ import annotations

from typing import Any

import pytest

import tidings
from tests.engine.conftest import Engine
from tidings.errors import ConfigError


def app_with(*triggers: tidings.TriggerEvent, **kw: Any) -> tidings.Tidings:
    client = tidings.Tidings(app_id="app")

    @client.function(id="f", triggers=list(triggers), **kw)
    async def f(ctx: tidings.Context) -> str:
        return ctx.event.name

    return client


async def _started_by(engine: Engine, *events: dict[str, Any]) -> list[Any]:
    await engine.send(*events)
    await engine.drain()
    return sorted(r.output for r in await engine.runs())


async def test_exact_names_and_cel(engine: Engine) -> None:
    await engine.start(app_with(tidings.TriggerEvent(
        event="app/account.created", if_="event.data.billingPlan == 'pro'")))
    outputs = await _started_by(
        engine,
        {"name": "app/account.created", "data": {"billingPlan": "pro"}},
        {"name": "app/account.created", "data": {"billingPlan": "free"}},
        {"name": "app/account.created"},
        {"name": "App/account.created", "data": {"billingPlan": "pro"}},
    )
    assert outputs == ["app/account.created"]


async def test_wildcards(engine: Engine) -> None:
    await engine.start(app_with(tidings.TriggerEvent(event="app/user.*")))
    outputs = await _started_by(engine, {"name": "app/user.created"}, {"name": "app/user.x.y"},
                                {"name": "app/users"}, {"name": "app/order.created"})
    assert outputs == ["app/user.created", "app/user.x.y"]


async def test_one_run_when_several_triggers_match(engine: Engine) -> None:
    await engine.start(app_with(tidings.TriggerEvent(event="app/*"),
                                tidings.TriggerEvent(event="app/a"),
                                tidings.TriggerEvent(event="app/a", if_="true")))
    assert await _started_by(engine, {"name": "app/a"}) == ["app/a"]


async def test_source_and_filters(engine: Engine) -> None:
    await engine.start(app_with(tidings.TriggerEvent(
        event="order/placed", source="shop", filter={"total": [{"$gt": 100}]},
        context_filter={"region": ["eu"]})))
    outputs = await _started_by(
        engine,
        {"name": "order/placed", "source": "shop", "payload": {"total": 150},
         "context": {"region": "eu"}, "id": "match"},
        {"name": "order/placed", "payload": {"total": 150}, "context": {"region": "eu"}},
        {"name": "order/placed", "source": "shop", "payload": {"total": 50},
         "context": {"region": "eu"}},
        {"name": "order/placed", "source": "shop", "payload": {"total": 150},
         "context": {"region": "us"}},
    )
    assert outputs == ["order/placed"]


@pytest.mark.parametrize(("trigger", "words"), [
    (tidings.TriggerEvent(event="app/us*rs"), "wildcard"),
    (tidings.TriggerEvent(event="*"), "wildcard"),
    (tidings.TriggerEvent(event="a", if_="event.data.("), "invalid expression"),
    (tidings.TriggerEvent(event="a", filter={"x": "y"}), "filter"),
    (tidings.TriggerCron(cron="not a cron"), "5 fields"),
    (tidings.TriggerCron(cron="TZ=Mars/Olympus 0 * * * *"), "time zone"),
])
def test_bad_triggers_are_refused_at_registration(trigger: Any, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        app_with(trigger)


async def test_duplicate_event_ids_start_one_run(engine: Engine) -> None:
    await engine.start(app_with(tidings.TriggerEvent(event="app/dup")))
    for _ in range(1000):
        await engine.send({"name": "app/dup", "id": "same"})
    await engine.drain()
    assert len(await engine.runs()) == 1


async def test_cron_fires_once_per_tick(engine: Engine) -> None:
    client = tidings.Tidings(app_id="app")

    @client.function(id="nightly", trigger=tidings.TriggerCron(cron="TZ=Europe/Paris 0 3 * * *"))
    async def nightly(ctx: tidings.Context) -> Any:
        return ctx.event.data

    runtime = await engine.start(client)
    other = type(runtime)(engine.core, [client], clock=engine.clock)
    await other.register()
    await runtime.cron.tick()
    await other.cron.tick()
    assert await engine.runs() == []
    engine.clock.advance(25 * 3600 * 1000)
    await runtime.cron.tick()
    await other.cron.tick()
    await engine.drain()
    runs = await engine.runs()
    assert [r.output for r in runs] == [{"cron": "TZ=Europe/Paris 0 3 * * *"}]
