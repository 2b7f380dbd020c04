"""``/metrics``: the counters a run moves, the gauges of shared state read from the database,
label values folded past their bound and escaped, and who may scrape."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import tidings
from tests.conftest import make_settings
from tests.engine.conftest import Engine
from tidings.core import Core
from tidings.keys import create_key
from tidings.observe import metrics
from tidings.server import create_app
from tidings.settings import Observe

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, by name and sorted labels."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(core: Core, **headers: str) -> httpx.Response:
    app = create_app(core.settings, core)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://tidings") as http:
        return await http.get("/metrics", headers=headers)


@pytest.fixture
def roomy_labels() -> Iterator[None]:
    """Bounds no other test of the session has filled (the folds are per process)."""
    metrics.configure(max_event_names=1_000_000, max_names=1_000_000)
    yield
    metrics.configure()


def test_label_values_past_the_bound_are_folded_into_other() -> None:
    fold = metrics.Fold(2)
    assert [fold(v) for v in ("a", "b", "c", "a", "d", "b", None, "")] == [
        "a", "b", "other", "a", "other", "b", "other", "other"]


def test_label_values_are_escaped_in_the_exposition(roomy_labels: None) -> None:
    from prometheus_client import generate_latest

    hostile = 'say "hi"\nthen \\ leave'
    metrics.scheduled("app\\x", "fn\n2", hostile)
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'trigger="say \\"hi\\"\\nthen \\\\ leave"' in text
    assert 'function="fn\\n2"' in text and 'app="app\\\\x"' in text
    found = samples(text)  # and it parses back to the very values
    assert value(found, "tidings_runs_scheduled_total", app="app\\x", function="fn\n2",
                 trigger=hostile) >= 1


async def test_a_run_with_three_steps_and_a_retry_moves_the_counters(
        engine: Engine, roomy_labels: None) -> None:
    client = tidings.Tidings(app_id="metered")
    tries: collections.Counter[str] = collections.Counter()

    @client.function(id="three", trigger=tidings.TriggerEvent(event="metered/go"), retries=2)
    async def three(ctx: tidings.Context) -> Any:
        def flaky() -> str:
            tries["b"] += 1
            if tries["b"] == 1:
                raise RuntimeError("once")
            return "b"

        a = await ctx.step.run("a", lambda: "a")
        b = await ctx.step.run("b", flaky)
        c = await ctx.step.run("c", lambda: "c")
        return a + b + c

    @client.function(id="napper", trigger=tidings.TriggerEvent(event="metered/nap"))
    async def napper(ctx: tidings.Context) -> Any:
        await ctx.step.sleep("nap", timedelta(hours=1))

    before = samples((await scrape(engine.core)).text)
    await engine.start(client)
    await engine.send({"name": "metered/go"}, {"name": "metered/nap"})
    await engine.drain()
    waiting = samples((await scrape(engine.core)).text)
    assert value(waiting, "tidings_waits_pending", kind="sleep") == 1
    assert value(waiting, "tidings_queue_depth", state="delayed") == 2  # the retry, the nap
    assert value(waiting, "tidings_queue_depth", state="ready") == 0
    assert value(waiting, "inngest_queue_depth") == 2
    engine.clock.advance(1_001)
    await engine.drain()

    reply = await scrape(engine.core)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=")
    after = samples(reply.text)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    fn = {"app": "metered", "function": "metered-three"}
    assert moved("tidings_runs_scheduled_total", trigger="metered/go", **fn) == 1
    assert moved("tidings_runs_started_total", **fn) == 1
    assert moved("tidings_runs_finished_total", status="Completed", **fn) == 1
    assert moved("tidings_step_retries_total", **fn) == 1
    assert moved("tidings_run_duration_seconds_count", status="Completed", **fn) == 1
    assert moved("tidings_run_start_latency_seconds_count", **fn) == 1
    assert moved("inngest_function_run_scheduled_total", fn="metered-three") == 1
    assert moved("inngest_function_run_started_total", fn="metered-three") == 1
    assert moved("inngest_function_run_ended_total", fn="metered-three",
                 status="Completed") == 1
    assert value(after, "tidings_waits_pending", kind="sleep") == 1
    assert value(after, "tidings_queue_depth", state="delayed") == 1  # the nap only
    storage = engine.core.storage.dialect
    assert value(after, "tidings_build_info", version=tidings.__version__, mode="dev",
                 storage=storage) == 1
    assert moved("tidings_http_request_duration_seconds_count", route="/metrics",
                 method="GET", status="200") >= 2


async def test_under_serve_metrics_need_an_api_key_unless_public(
        db_url: str, tmp_path: Path) -> None:
    core = await Core.start(make_settings(db_url, tmp_path, mode="serve"))
    try:
        secret, _ = await create_key(core.storage, "production", "api")
        event_key, _ = await create_key(core.storage, "production", "event")
        assert (await scrape(core)).status_code == 401
        assert (await scrape(core, authorization=f"Bearer {event_key}")).status_code == 401
        allowed = await scrape(core, authorization=f"Bearer {secret}")
        assert allowed.status_code == 200 and "tidings_build_info" in allowed.text
        public = replace(core, settings=replace(core.settings,
                                                observe=Observe(metrics_public=True)))
        assert (await scrape(public)).status_code == 200
        off = replace(core, settings=replace(core.settings, observe=Observe(metrics=False)))
        assert (await scrape(off)).status_code == 404
    finally:
        await core.close()


def test_updates_from_several_threads_add_up_and_a_raised_bound_is_used_at_once() -> None:
    def count(name: str) -> float:
        return metrics.REGISTRY.get_sample_value(
            "tidings_runs_scheduled_total",
            {"app": "cached-app", "function": "cached-fn", "trigger": name}) or 0.0

    try:
        metrics.configure(max_event_names=len(metrics.event_names._seen))  # full: "other"
        metrics.scheduled("cached-app", "cached-fn", "cached/late")
        metrics.configure(max_event_names=1_000_000)
        metrics.scheduled("cached-app", "cached-fn", "cached/late", 2)
        metrics.scheduled("cached-app", "cached-fn", "cached/late")
        worker = threading.Thread(target=metrics.scheduled,
                                  args=("cached-app", "cached-fn", "cached/late", 4))
        worker.start()
        worker.join()
    finally:
        metrics.configure()
    assert count("other") == 1 and count("cached/late") == 7


def test_the_bound_of_event_names_is_configurable() -> None:
    try:
        metrics.configure(max_event_names=1)
        kept = metrics.event_names.limit
    finally:
        metrics.configure()
    assert kept == 1 and metrics.event_names.limit == 100


async def test_the_grafana_dashboard_uses_only_metrics_that_exist(core: Core) -> None:
    import json
    import re

    dashboard = json.loads((Path(__file__).parents[2] / "docs" / "grafana-dashboard.json")
                           .read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {re.sub(r"_(bucket|count|sum)$", "", name)
            for expr in exprs for name in re.findall(r"\b(?:tidings|inngest)_[a-z_]+", expr)}
    families = {family.name for family in text_string_to_metric_families(
        (await scrape(core)).text)}
    # Counters are named without ``_total`` in a parsed family.
    assert {re.sub(r"_total$", "", name) for name in used} <= families
    assert len(used) >= 12


async def test_every_name_the_issue_lists_is_exposed(core: Core) -> None:
    """Each family is there from the start (empty until counted), so dashboards and alerts
    find every name before the first event."""
    families = {family.name for family in text_string_to_metric_families(
        (await scrape(core)).text)}
    listed = {  # parsed counter families are named without ``_total``
        "tidings_events_received", "tidings_http_request_duration_seconds",
        "tidings_runs_scheduled", "tidings_runs_started", "tidings_runs_finished",
        "tidings_run_duration_seconds", "tidings_run_start_latency_seconds",
        "tidings_sdk_requests", "tidings_sdk_request_duration_seconds",
        "tidings_step_retries", "tidings_queue_depth", "tidings_queue_oldest_ready_age_seconds",
        "tidings_waits_pending", "tidings_app_syncs", "tidings_build_info",
        "inngest_function_run_scheduled", "inngest_function_run_started",
        "inngest_function_run_ended", "inngest_sdk_req_scheduled", "inngest_sdk_req_started",
        "inngest_sdk_req_ended", "inngest_queue_depth"}
    assert listed - families == set()
