"""``tidings runs``, ``tidings runs show`` and ``tidings replay``, run as the installed executable
against a live ``tidings dev -a shop:client`` (on each backend) whose functions fail while a file
named ``broken`` exists next to them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.test_cli import cli, ok
from tests.conftest import LiveServer, start_server, stop_server
from tidings.ids import now_ms

SHOP = '''
import pathlib

import tidings

client = tidings.Tidings(app_id="shop")
BROKEN = pathlib.Path(__file__).with_name("broken")


@client.function(id="charge", trigger=tidings.TriggerEvent(event="order/placed"), retries=1)
async def charge(ctx):
    total = await ctx.step.run("price", lambda: ctx.event.data["total"])
    if BROKEN.exists():
        raise RuntimeError("card [declined]")
    return {"charged": total, "email": ctx.event.user.get("email")}


@client.function(id="approve", trigger=tidings.TriggerEvent(event="order/placed"))
async def approve(ctx):
    await ctx.step.run("notify", lambda: "asked")
    approval = await ctx.step.wait_for_event(
        "approval", event="order/approved", if_="async.data.order == event.data.order",
        timeout="1h")
    return approval is not None


@client.function(id="bulk", trigger=tidings.TriggerEvent(event="bulk/go"), retries=0)
async def bulk(ctx):
    if BROKEN.exists():
        raise tidings.NonRetriableError("not today")
    return ctx.event.data["n"]
'''


@pytest.fixture
def shop(tmp_path: Path, db_url: str) -> Iterator[LiveServer]:
    (tmp_path / "shop.py").write_text(SHOP)
    (tmp_path / "broken").touch()
    server = start_server(tmp_path, "--db", db_url, "-a", "shop:client",
                          "--retry-interval", "0.05")
    yield server
    stop_server(server)


def api(server: LiveServer, path: str, **params: Any) -> Any:
    reply = httpx.get(f"{server.url}{path}", params=params, timeout=10)
    assert reply.status_code == 200, reply.text
    return reply.json()["data"]


def until(check: Callable[[], Any], what: str, seconds: float = 30) -> Any:
    """Poll the live server until ``check()`` is truthy (it runs functions on its own)."""
    deadline = time.monotonic() + seconds
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def place_orders(server: LiveServer, *orders: int) -> list[str]:
    reply = httpx.post(f"{server.url}/e/key", timeout=10, json=[
        {"name": "order/placed", "data": {"order": n, "total": 10 * n},
         "user": {"email": f"buyer{n}@example.com"}} for n in orders])
    ids: list[str] = reply.json()["ids"]
    return ids


def runs_by(server: LiveServer, function: str, status: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = api(server, "/v1/runs", function=function, status=status)
    return runs


def flat(text: str) -> str:
    """Text with every run of whitespace (line wraps included) made one space."""
    return " ".join(text.split())


def row_of(listing: str, run_id: str) -> str:
    (row,) = [line for line in listing.splitlines() if run_id in line]
    return row


def test_runs_lists_runs_in_a_table_and_filters_them(tmp_path: Path, shop: LiveServer) -> None:
    place_orders(shop, 1, 2)
    failed = until(lambda: len(runs_by(shop, "shop-charge", "Failed")) == 2
                   and runs_by(shop, "shop-charge", "Failed"), "two failed charges")
    waiting = until(lambda: len(runs_by(shop, "shop-approve", "Waiting")) == 2
                    and runs_by(shop, "shop-approve", "Waiting"), "two waiting approvals")

    everything = ok(cli(tmp_path, "runs", "--url", shop.url))
    only_failed = ok(cli(tmp_path, "runs", "--url", shop.url, "--function", "shop-charge",
                         "--status", "failed"))
    one = ok(cli(tmp_path, "runs", "--url", shop.url, "--limit", "1"))

    header = next(line for line in everything.splitlines() if "function" in line)
    assert [word for word in header.split() if word.isalpha()] == [
        "id", "function", "status", "created", "took", "result"]
    for run in failed:
        row = row_of(only_failed, run["id"])
        assert "shop-charge" in row
        assert "Failed (attempt 2)" in row
        assert "RuntimeError: card [declined]" in row
        assert run["id"] in everything
    for run in waiting:
        assert "Waiting" in row_of(everything, run["id"])
        assert run["id"] not in only_failed
    assert sum(run["id"] in one for run in failed + waiting) == 1


def test_runs_show_prints_the_result_the_steps_and_the_wait(tmp_path: Path,
                                                            shop: LiveServer) -> None:
    (event_id,) = place_orders(shop, 3)
    (charge,) = until(lambda: runs_by(shop, "shop-charge", "Failed"), "a failed charge")
    (approve,) = until(lambda: runs_by(shop, "shop-approve", "Waiting"), "a waiting approval")

    failed = ok(cli(tmp_path, "runs", "show", charge["id"], "--url", shop.url))
    waiting = ok(cli(tmp_path, "runs", "show", approve["id"], "--url", shop.url))
    missing = cli(tmp_path, "runs", "show", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "--url", shop.url)

    assert f"Run {charge['id']}  shop-charge" in failed
    assert "Failed (attempt 2)" in failed
    assert f"order/placed  {event_id}" in failed
    assert "RuntimeError: card [declined]" in failed
    price = next(line for line in failed.splitlines() if " price " in line)
    assert "completed" in price
    assert " ms " in price
    assert '{"data":30}' in price
    assert "Waiting" in waiting
    assert "notify" in waiting
    wait = flat(waiting[waiting.index("waiting event"):])
    assert wait.startswith("waiting event order/approved if async.data.order == "
                           "event.data.order ('approval') until ")
    assert missing.returncode == 1
    assert "answered 404: run '01ARZ3NDEKTSV4RRFFQ69G5FAV' not found" in missing.stderr


def test_replay_reruns_the_failed_runs_of_a_range(tmp_path: Path, shop: LiveServer) -> None:
    before = now_ms()
    place_orders(shop, 4, 5)
    failed = until(lambda: len(runs_by(shop, "shop-charge", "Failed")) == 2
                   and runs_by(shop, "shop-charge", "Failed"), "two failed charges")
    (tmp_path / "broken").unlink()

    result = ok(cli(tmp_path, "replay", "--function", "shop-charge", "--since", str(before),
                    "--status", "Failed", "--url", shop.url))
    reruns = until(lambda: len(runs_by(shop, "shop-charge", "Completed")) == 2
                   and runs_by(shop, "shop-charge", "Completed"), "two reruns")
    listing = ok(cli(tmp_path, "runs", "--url", shop.url, "--status", "completed",
                     "--function", "shop-charge"))
    again = ok(cli(tmp_path, "runs", "show", reruns[0]["id"], "--url", shop.url))

    assert "2 runs of shop-charge to rerun" in result
    assert "2/2" in result
    (replay_id,) = {run["replay_id"] for run in reruns}
    assert f"replay {replay_id} done: 2 of 2 runs queued again" in result
    assert {run["rerun_of"] for run in reruns} == {run["id"] for run in failed}
    assert sorted(run["output"]["email"] for run in reruns) == [
        "buyer4@example.com", "buyer5@example.com"]
    for run in reruns:
        assert "Completed" in row_of(listing, run["id"])
    assert f"rerun of {reruns[0]['rerun_of']}" in flat(again)
    assert f"replay {replay_id}" in flat(again)


def test_replay_shows_progress_until_a_large_replay_is_done(tmp_path: Path,
                                                            shop: LiveServer) -> None:
    count = 620  # more than one batch: the server answers 202 and goes on in the background
    before = now_ms()
    httpx.post(f"{shop.url}/e/key", timeout=30,
               json=[{"name": "bulk/go", "data": {"n": n}} for n in range(count)])
    until(lambda: len(api(shop, "/v1/runs", function="shop-bulk", status="Failed",
                          limit=1000)) == count, f"{count} failed runs", seconds=120)
    (tmp_path / "broken").unlink()

    result = ok(cli(tmp_path, "replay", "--function", "shop-bulk", "--since", str(before),
                    "--until", str(now_ms() + 1), "--status", "failed", "--url", shop.url))

    assert f"{count} runs of shop-bulk to rerun" in result
    assert f"{count}/{count}" in result
    assert f"done: {count} of {count} runs queued again" in result
    (replay,) = {run["replay_id"] for run in api(shop, "/v1/runs", function="shop-bulk",
                                                  status="Queued,Running,Completed",
                                                  limit=1000)}
    assert api(shop, f"/v1/replays/{replay}")["created"] == count


def test_replay_refuses_what_cannot_be_replayed(tmp_path: Path, shop: LiveServer) -> None:
    running = cli(tmp_path, "replay", "--function", "shop-charge", "--since", "1h",
                  "--status", "Running", "--url", shop.url)
    vague = cli(tmp_path, "replay", "--function", "shop-charge", "--since", "yesterday",
                "--status", "Failed", "--url", shop.url)
    unknown = cli(tmp_path, "replay", "--function", "shop-nope", "--since", "1h",
                  "--status", "Failed", "--url", shop.url)

    assert running.returncode == 2
    assert "'Running' is not one of" in running.stderr
    assert vague.returncode == 2
    assert "an ISO-8601 time, milliseconds or an age like 2h" in vague.stderr
    assert unknown.returncode == 1
    assert "answered 404: function 'shop-nope' not found" in unknown.stderr
