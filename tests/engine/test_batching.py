"""Batching: one run for up to ``max_size`` events (``ctx.events``), started when full or at the
timeout; per key; ``if`` decides which events are batched."""

from __future__ import annotations

from typing import Any

import pytest

import tidings
from tests.engine.conftest import Engine
from tidings.errors import ConfigError
from tidings.runs.model import COMPLETED, QUEUED


def _app(batch: tidings.Batch, **more: Any) -> tidings.Tidings:
    client = tidings.Tidings(app_id="app")

    @client.function(id="f", trigger=tidings.TriggerEvent(event="go"), batch_events=batch,
                     **more)
    async def f(ctx: tidings.Context) -> Any:
        return {"first": ctx.event.data["n"], "all": [e.data["n"] for e in ctx.events]}

    return client


async def test_full_batches_start_at_once_and_the_rest_at_the_timeout(engine: Engine) -> None:
    await engine.start(_app(tidings.Batch(max_size=3, timeout="10s")))
    await engine.send(*[{"name": "go", "data": {"n": n}} for n in range(7)])
    await engine.drain()
    runs = await engine.runs()
    assert [r.status for r in runs] == [COMPLETED, COMPLETED, QUEUED]
    assert [r.output for r in runs[:2]] == [{"first": 0, "all": [0, 1, 2]},
                                            {"first": 3, "all": [3, 4, 5]}]
    why = await engine.waiting(runs[2].id)
    assert why is not None and why["reason"] == "batching" and why["size"] == 1
    engine.clock.advance(9_000)
    await engine.drain()
    assert (await engine.run(runs[2].id)).status == QUEUED
    engine.clock.advance(1_500)
    await engine.drain()
    assert (await engine.run(runs[2].id)).output == {"first": 6, "all": [6]}
    # An event after the batch started opens a new one.
    await engine.send({"name": "go", "data": {"n": 7}}, {"name": "go", "data": {"n": 8}},
                      {"name": "go", "data": {"n": 9}})
    await engine.drain()
    assert (await engine.runs())[-1].output == {"first": 7, "all": [7, 8, 9]}


async def test_batches_per_key(engine: Engine) -> None:
    await engine.start(_app(tidings.Batch(max_size=2, timeout="5s", key="event.data.user")))
    await engine.send(*[{"name": "go", "data": {"user": u, "n": n}}
                        for n, u in enumerate("abcabca")])
    await engine.drain()
    engine.clock.advance(5_001)
    await engine.drain()
    outputs = sorted(r.output["all"] for r in await engine.runs())
    assert outputs == [[0, 3], [1, 4], [2, 5], [6]]


async def test_if_batches_only_matching_events(engine: Engine) -> None:
    await engine.start(_app(tidings.Batch(max_size=5, timeout="5s",
                                          if_="event.data.n % 2 == 0")))
    await engine.send(*[{"name": "go", "data": {"n": n}} for n in range(5)])
    await engine.drain()
    runs = await engine.runs()
    done = sorted(r.output["all"] for r in runs if r.status == COMPLETED)
    assert done == [[1], [3]]  # odd events ran alone, at once
    engine.clock.advance(5_001)
    await engine.drain()
    assert sorted(r.output["all"] for r in await engine.runs()) == [[0, 2, 4], [1], [3]]


@pytest.mark.parametrize(("more", "words"), [
    ({"cancel": [tidings.Cancel(event="stop")]}, "cannot be combined with cancel"),
    ({"debounce": tidings.Debounce(period="1s")}, "cannot be combined with debounce"),
    ({"singleton": tidings.Singleton(mode="skip")}, "cannot be combined with singleton"),
    ({"priority": tidings.Priority(run="1")}, "cannot be combined with priority.run"),
])
def test_unsupported_combinations_are_refused(more: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        _app(tidings.Batch(max_size=2, timeout="1s"), **more)


@pytest.mark.parametrize(("batch", "words"), [
    (tidings.Batch(max_size=1, timeout="1s"), "maxSize: 2 to"),
    (tidings.Batch(max_size=2, timeout="100ms"), "at least 1s"),
])
def test_bad_batches_are_refused(batch: tidings.Batch, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        _app(batch)
