"""Debounce: one run per burst of events of a key, with the last event; the timeout bounds the
total delay."""

from __future__ import annotations

from typing import Any

import pytest

import tidings
from tests.engine.conftest import Engine
from tidings.errors import ConfigError
from tidings.runs.model import COMPLETED, QUEUED


def _app(debounce: tidings.Debounce) -> tidings.Tidings:
    client = tidings.Tidings(app_id="app")

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"), debounce=debounce)
    async def f(ctx: tidings.Context) -> Any:
        return [ctx.event.data["n"], len(ctx.events)]

    return client


async def test_one_run_per_burst_with_the_last_event(engine: Engine) -> None:
    await engine.start(_app(tidings.Debounce(period="10s", key="event.data.user")))
    for n in range(3):
        await engine.send({"name": "go", "data": {"user": "a", "n": n}})
        await engine.drain()
        engine.clock.advance(5_000)
    (run,) = await engine.runs()
    assert run.status == QUEUED and run.started_at is None
    why = await engine.waiting(run.id)
    assert why is not None and why["reason"] == "debounced" and why["key"] == "a"
    assert why["size"] == 3
    engine.clock.advance(4_000)  # 9 s after the last event
    await engine.drain()
    assert (await engine.run(run.id)).status == QUEUED
    engine.clock.advance(1_500)
    await engine.drain()
    (run,) = await engine.runs()
    assert run.status == COMPLETED and run.output == [2, 1]
    # The next event starts a new burst.
    await engine.send({"name": "go", "data": {"user": "a", "n": 3}})
    await engine.drain()
    engine.clock.advance(10_001)
    await engine.drain()
    assert sorted(r.output[0] for r in await engine.runs()) == [2, 3]


async def test_the_timeout_bounds_the_delay(engine: Engine) -> None:
    await engine.start(_app(tidings.Debounce(period="10s", timeout="25s")))
    for n in range(5):  # an event every 8 s: the period never passes quietly
        await engine.drain()  # what came due meanwhile starts first
        await engine.send({"name": "go", "data": {"n": n}})
        await engine.drain()
        engine.clock.advance(8_000)
    # 40 s since the first event: the run started at 25 s with the event it had then (n=3)
    runs = await engine.runs()
    assert runs[0].status == COMPLETED and runs[0].output == [3, 1]
    assert len(runs) == 2 and runs[1].status == QUEUED  # n=4 began the next burst
    engine.clock.advance(10_000)
    await engine.drain()
    assert [r.output for r in await engine.runs()] == [[3, 1], [4, 1]]


async def test_keys_debounce_apart(engine: Engine) -> None:
    await engine.start(_app(tidings.Debounce(period="2s", key="event.data.user")))
    await engine.send(*[{"name": "go", "data": {"user": f"u{i % 25}", "n": i}}
                        for i in range(100)])
    await engine.drain()
    engine.clock.advance(2_001)
    await engine.drain()
    runs = await engine.runs()
    assert len(runs) == 25 and all(r.status == COMPLETED for r in runs)
    assert sorted(r.output[0] for r in runs) == list(range(75, 100))  # each key's last event


@pytest.mark.parametrize(("debounce", "words"), [
    (tidings.Debounce(period="500ms"), "at least 1s"),
    (tidings.Debounce(period="8d"), "at most 1w"),
    (tidings.Debounce(period="1s", key="event.("), "debounce.key"),
])
def test_bad_debounces_are_refused(debounce: tidings.Debounce, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        _app(debounce)
