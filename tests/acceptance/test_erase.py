"""Erasing a person (``DELETE /v1/users/{external_id}``, ``tidings users erase``), on both
backends: their key destroyed, their events deleted on request with their runs left as
tombstones, reruns without them, the audit record, and no copy of the key left in SQLite's
files."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

import tidings
from tests.conftest import TIDINGS, LiveServer
from tests.engine.conftest import Engine
from tidings.core import Core
from tidings.runs.model import CANCELLED, COMPLETED, SLEEPING
from tidings.vault import get_user_key

PERSON = "person-4e1f"
OTHER = "person-9a2b"
ERASED = {"erased": True}


@pytest.fixture
async def engine(core: Core) -> Engine:
    from tests.engine.conftest import Clock

    return Engine(core, Clock(), [])


def shop(*, ledger: bool = False) -> tidings.Tidings:
    """``ledger``: a function that hears when ``charge`` finishes (so those events are
    emitted)."""
    client = tidings.Tidings(app_id="shop")

    @client.function(id="charge", trigger=tidings.TriggerEvent(event="order/placed"), retries=0)
    async def charge(ctx: tidings.Context) -> Any:
        total = await ctx.step.run("total", lambda: {"total": ctx.event.data.get("order")})
        return {"total": total, "user": ctx.event.user}

    if ledger:
        @client.function(id="ledger", trigger=tidings.TriggerEvent(
            event="tidings/function.finished", if_='event.data.function_id == "shop-charge"'))
        async def noted(ctx: tidings.Context) -> Any:
            return "noted"

    @client.function(id="follow-up", trigger=tidings.TriggerEvent(event="order/shipped"))
    async def follow_up(ctx: tidings.Context) -> Any:
        await ctx.step.sleep("a-week", 7 * 86_400_000)
        return "asked"

    return client


async def ok(reply: httpx.Response, status: int = 200) -> Any:
    assert reply.status_code == status, reply.text
    return reply.json()["data"]


async def _user_of(client: httpx.AsyncClient, event_id: str) -> tuple[dict[str, Any], bool]:
    event = await ok(await client.get(f"/v1/events/{event_id}"))
    return event["user"], event["user_erased"]


async def test_erase_keeps_the_events_and_makes_their_user_unreadable(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    await engine.start(shop())
    mine = await engine.send(
        {"name": "order/placed", "data": {"order": 1},
         "user": {"external_id": PERSON, "email": "p@example.org"}},
        {"name": "order/placed", "data": {"order": 2}, "user": {"external_id": PERSON}})
    (theirs,) = await engine.send({"name": "order/placed", "data": {"order": 3},
                                   "user": {"external_id": OTHER}})
    await engine.drain()

    done = await ok(await client.delete(f"/v1/users/{PERSON}"))
    assert done["key_destroyed"] is True
    assert {k: done[k] for k in ("events", "events_deleted", "runs_cancelled", "runs_erased",
                                 "steps_erased")} == {"events": 2, "events_deleted": 0,
                                                       "runs_cancelled": 0, "runs_erased": 0,
                                                       "steps_erased": 0}
    for event_id in mine:
        assert await _user_of(client, event_id) == ({}, True)
    assert await _user_of(client, theirs) == ({"external_id": OTHER}, False)

    # Again, and a person never seen: 200 with what there is.
    again = await ok(await client.delete(f"/v1/users/{PERSON}"))
    assert (again["key_destroyed"], again["events"]) == (False, 2)
    nobody = await ok(await client.delete("/v1/users/nobody-at-all", params={"events": "delete"}))
    assert (nobody["key_destroyed"], nobody["events"], nobody["events_deleted"]) == (False, 0, 0)

    # A new event of the person gets a new key: readable; the old ones stay unreadable.
    (new,) = await engine.send({"name": "order/placed", "data": {"order": 4},
                                "user": {"external_id": PERSON, "plan": "pro"}})
    assert await _user_of(client, new) == ({"external_id": PERSON, "plan": "pro"}, False)
    assert await _user_of(client, mine[0]) == ({}, True)


async def test_a_rerun_of_an_erased_persons_run_runs_without_them(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    await engine.start(shop())
    await engine.send({"name": "order/placed", "data": {"order": 5},
                       "user": {"external_id": PERSON, "email": "p@example.org"}})
    await engine.drain()
    (run,) = await engine.runs()
    assert run.output["user"]["email"] == "p@example.org"
    await ok(await client.delete(f"/v1/users/{PERSON}"))

    rerun = await ok(await client.post(f"/v1/runs/{run.id}/rerun"), 201)
    await engine.drain()
    done = await engine.run(rerun["id"])
    assert done.status == COMPLETED
    assert done.output == {"total": {"total": 5}, "user": {}}


async def test_erase_with_events_deletes_them_and_leaves_tombstone_runs(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    await engine.start(shop(ledger=True))
    placed = await engine.send({"name": "order/placed", "data": {"order": 7},
                                "user": {"external_id": PERSON}, "id": "order-7-of-person"})
    shipped = await engine.send({"name": "order/shipped", "data": {"order": 7},
                                 "user": {"external_id": PERSON}})
    (kept,) = await engine.send({"name": "order/placed", "data": {"order": 8},
                                 "user": {"external_id": OTHER}})
    await engine.drain()
    runs = {r.event_id: r for r in await engine.runs() if r.event_id in (*placed, *shipped)}
    assert runs[placed[0]].status == COMPLETED and runs[shipped[0]].status == SLEEPING

    done = await ok(await client.delete(f"/v1/users/{PERSON}", params={"events": "delete"}))
    assert {k: done[k] for k in ("key_destroyed", "events", "events_deleted", "runs_cancelled",
                                 "runs_erased")} == {"key_destroyed": True, "events": 2,
                                                     "events_deleted": 2, "runs_cancelled": 1,
                                                     "runs_erased": 2}
    assert done["steps_erased"] >= 1

    for event_id in (*placed, *shipped):
        assert (await client.get(f"/v1/events/{event_id}")).status_code == 404
    # What the charge run emitted when it ended copied the order: gone too.
    lifecycle = await ok(await client.get("/v1/events", params={
        "name": "tidings/function.finished"}))
    assert [e["data"]["event"]["data"]["order"] for e in lifecycle
            if e["data"]["function_id"] == "shop-charge"] == [8]
    assert (await client.get(f"/v1/events/{kept}")).status_code == 200
    completed = await engine.run(runs[placed[0]].id)
    assert (completed.status, completed.output) == (COMPLETED, ERASED)
    assert all(s.output == ERASED for s in await engine.steps(completed.id) if s.output)
    sleeping = await engine.run(runs[shipped[0]].id)
    assert sleeping.status == CANCELLED and sleeping.error == ERASED
    # Listed still: the counts stay true.
    listed = await ok(await client.get("/v1/runs", params={"limit": 100}))
    assert {r["id"] for r in listed} >= {completed.id, sleeping.id}

    refused = await client.post(f"/v1/runs/{completed.id}/rerun")
    assert refused.status_code == 409 and "tombstone" in refused.json()["error"]
    # The idempotency key went with the event: the same id is a new event now.
    (again,) = await engine.send({"name": "order/placed", "data": {"order": 7},
                                  "user": {"external_id": PERSON}, "id": "order-7-of-person"})
    assert again != placed[0]


async def test_the_audit_record_names_the_person_only_by_blind_index(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    await engine.start(shop())
    await engine.send({"name": "order/placed", "user": {"external_id": PERSON}})
    done = await ok(await client.delete(f"/v1/users/{PERSON}"))

    def audit(tx: Any) -> Any:
        return tx.one("privacy_erasure", (done["erasure_id"],))

    row = await engine.core.storage.read(audit)
    assert row is not None
    assert row[2] == engine.core.vault.subject(engine.env_id, PERSON)
    assert row[3] == "api:dev" and row[4] == "keep" and row[12] is not None
    assert PERSON.encode() not in repr(row).encode()


@pytest.mark.parametrize(("path", "params", "field"), [
    ("/v1/users/", {}, "external_id"),
    ("/v1/users/" + "x" * 513, {}, "external_id"),
    ("/v1/users/someone", {"events": "all"}, "events"),
    ("/v1/users/someone", {"force": "1"}, "force"),
])
async def test_bad_erasures_are_400_naming_the_field(
    client: httpx.AsyncClient, path: str, params: dict[str, str], field: str
) -> None:
    reply = await client.delete(path, params=params)
    assert reply.status_code == 400, reply.text
    assert field in reply.json()["error"]


async def test_no_copy_of_the_key_stays_in_the_sqlite_files(tmp_path: Path) -> None:
    from tests.conftest import make_settings
    from tests.unit.helpers import app_client

    db = tmp_path / "tidings.db"
    async with app_client(make_settings(f"sqlite:///{db}", tmp_path)) as (http, core):
        for n in range(50):  # other people's keys around the erased one
            await http.post("/e/k", json={"name": "a", "user": {"external_id": f"p-{n}"}})
        env = await core.gate.env_for("k", "event")
        subject = core.vault.subject(env.id, "p-25")
        wrapped = await core.storage.read(lambda tx: get_user_key(tx, env.id, subject))
        assert wrapped is not None
        # The key is in the files now (the WAL, then the database after a checkpoint).
        assert _files_holding(tmp_path, wrapped)
        await ok(await http.delete("/v1/users/p-25"))
        assert _files_holding(tmp_path, wrapped) == []
        other = core.vault.subject(env.id, "p-24")
        assert await core.storage.read(lambda tx: get_user_key(tx, env.id, other))


def _files_holding(folder: Path, needle: bytes) -> list[str]:
    """The database files (the database, its WAL) whose bytes hold ``needle``."""
    return [p.name for p in sorted(folder.glob("tidings.db*")) if needle in p.read_bytes()]


def test_the_cli_exports_and_erases_in_another_process_and_the_server_stops_reading_at_once(
    live_server: LiveServer, tmp_path: Path
) -> None:
    url = live_server.url
    ids = httpx.post(f"{url}/e/key", json=[
        {"name": "a", "user": {"external_id": PERSON, "email": "p@example.org"}},
        {"name": "b", "user": {"external_id": OTHER}}]).json()["ids"]
    assert httpx.get(f"{url}/v1/events/{ids[0]}").json()["data"]["user"]["email"]
    cli_env = {**os.environ, "TIDINGS_DATA_DIR": str(live_server.data_dir)}
    exported = subprocess.run(
        [TIDINGS, "users", "export", PERSON, "--db", str(tmp_path / "live.db")],
        cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=60, check=False)
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [(e["id"], e["user"]["email"]) for e in lines] == [(ids[0], "p@example.org")]
    assert "1 events" in exported.stderr
    out = subprocess.run(
        [TIDINGS, "users", "erase", PERSON, "--events", "keep",
         "--db", str(tmp_path / "live.db")],
        cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    counts = json.loads(out.stdout)
    assert (counts["env"], counts["key_destroyed"], counts["events"]) == ("dev", True, 1)
    # No wait: the server looks the key up on every use.
    first = httpx.get(f"{url}/v1/events/{ids[0]}").json()["data"]
    assert (first["user"], first["user_erased"]) == ({}, True)
    assert httpx.get(f"{url}/v1/events/{ids[1]}").json()["data"]["user"] == {
        "external_id": OTHER}
    with sqlite3.connect(tmp_path / "live.db") as conn:
        (actor,) = conn.execute("SELECT actor FROM erasures").fetchone()
    assert actor.startswith("cli:")


async def test_a_person_whose_id_holds_a_line_break_is_exported_and_erased(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    """Any text is an external_id: a line break in the path is the id's, not a 404."""
    person = "line\nbreak/person"
    await engine.start(shop())
    (mine,) = await engine.send({"name": "order/placed", "user": {"external_id": person}})
    await engine.drain()
    path = "/v1/users/" + person.replace("\n", "%0A")
    reply = await client.get(path + "/events")
    assert reply.status_code == 200, reply.text
    assert [e["id"] for e in reply.json()["data"]] == [mine]
    assert (await ok(await client.delete(path)))["key_destroyed"] is True
    assert await _user_of(client, mine) == ({}, True)


async def test_export_gives_every_event_of_the_person_with_its_runs_page_by_page(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    await engine.start(shop())
    mine = [*await engine.send(*({"name": "order/placed", "data": {"order": n},
                                  "user": {"external_id": PERSON, "n": n}} for n in range(5)))]
    await engine.send({"name": "order/placed", "user": {"external_id": OTHER}})
    await engine.drain()

    pages, cursor = [], None
    while True:
        reply = await client.get(f"/v1/users/{PERSON}/events",
                                 params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert reply.status_code == 200, reply.text
        pages.append(reply.json()["data"])
        cursor = reply.json()["cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    events = [e for p in pages for e in p]
    assert [e["id"] for e in events] == sorted(mine, reverse=True)
    assert [e["user"]["n"] for e in events] == [4, 3, 2, 1, 0]
    assert all([r["function"] for r in e["runs"]] == ["shop-charge"] for e in events)
    assert all(e["runs"][0]["status"] == COMPLETED for e in events)

    await ok(await client.delete(f"/v1/users/{PERSON}"))
    after = (await client.get(f"/v1/users/{PERSON}/events")).json()["data"]
    assert [(e["user"], e["user_erased"]) for e in after] == [({}, True)] * 5
    nobody = await client.get("/v1/users/nobody/events")
    assert (nobody.status_code, nobody.json()) == (200, {"data": [], "cursor": None})
    for bad, field in ((f"/v1/users/{PERSON}/events?cursor=x", "cursor"),
                       (f"/v1/users/{PERSON}/events?limit=0", "limit"),
                       ("/v1/users//events", "external_id")):
        reply = await client.get(bad)
        assert reply.status_code == 400 and field in reply.json()["error"], reply.text


@pytest.mark.parametrize("sealed", [False, True], ids=["clear", "encrypt_data"])
async def test_erase_with_events_replaces_a_trigger_dev_runs_tasks_and_statuses(
    engine: Engine, client: httpx.AsyncClient, sealed: bool
) -> None:
    from tidings.sealing import TEXT_MARK, is_sealed
    from tidings.triggerdev import statuses as v2_statuses
    from tidings.triggerdev import tasks as v2_tasks

    await engine.start(shop())
    await engine.send({"name": "order/placed", "data": {"order": 9},
                       "user": {"external_id": PERSON}})
    (kept,) = await engine.send({"name": "order/placed", "data": {"order": 10},
                                 "user": {"external_id": OTHER}})
    await engine.drain()
    runs = await engine.runs()
    mine = next(r.id for r in runs if r.event_id != kept)
    theirs = next(r.id for r in runs if r.event_id == kept)

    def start_v2_tasks(tx: Any) -> None:  # what a v2 Job's run keeps beside its steps
        for run_id in (mine, theirs):
            v2_tasks.start(tx, run_id, v2_tasks.NewTask(
                idempotency_key="charge", name="charge card", display_key=None, noop=False,
                delay_until=None, parent_id=None, params={"card": "4242"}), engine.clock(),
                env_id=engine.env_id)

    def add_v2_rows(tx: Any) -> None:
        for run_id in (mine, theirs):
            task = v2_tasks.start(tx, run_id, v2_tasks.NewTask(
                idempotency_key="charge", name="charge card", display_key=None, noop=False,
                delay_until=None, parent_id=None, params={"card": "4242"}), engine.clock(),
                env_id=engine.env_id)
            v2_tasks.complete(tx, task.id, {"receipt": "r-1"}, engine.clock(),
                              env_id=engine.env_id)
            failed = v2_tasks.start(tx, run_id, v2_tasks.NewTask(
                idempotency_key="mail", name="mail", display_key=None, noop=False,
                delay_until=None, parent_id=None, params=None), engine.clock(),
                env_id=engine.env_id)
            v2_tasks.fail(tx, failed.id, {"message": "no mailbox p@example.org"},
                          engine.clock(), env_id=engine.env_id)
            for data in ({"step": 1}, {"step": 2}):
                v2_statuses.update(tx, run_id, "progress", v2_statuses.Update(
                    "Charging", None, data), engine.clock(), env_id=engine.env_id)

    # The tasks start in clear; with encrypt_data switched on, what follows is sealed (the
    # clear params stay readable beside it).
    await engine.core.storage.write(start_v2_tasks)
    if sealed:
        await ok(await client.post("/v1/settings", json={"encrypt_data": True}))
    await engine.core.storage.write(add_v2_rows)

    def stored(tx: Any) -> tuple[Any, Any, Any]:
        return (tx.one("trigger_task_by_key", (theirs, "charge")),
                tx.one("trigger_task_by_key", (theirs, "mail")),
                tx.one("trigger_status_get", (theirs, "progress")))

    charge, mail, status = await engine.core.storage.read(stored)
    assert not is_sealed(charge[11])  # written before
    assert [is_sealed(charge[12]), is_sealed(mail[12]), mail[13].startswith(TEXT_MARK),
            is_sealed(status[2]), is_sealed(status[3])] == [sealed] * 5
    done = await ok(await client.delete(f"/v1/users/{PERSON}", params={"events": "delete"}))
    assert done["steps_erased"] >= 3  # the run's step and its two tasks

    def v2_rows(tx: Any, run_id: str) -> tuple[Any, Any]:
        return v2_tasks.of_run(tx, run_id), v2_statuses.of_run(tx, run_id)

    tasks, statuses = await engine.core.storage.read(lambda tx: v2_rows(tx, mine))
    assert [(t.name, t.params, t.output) for t in tasks[:1]] == [
        ("charge card", ERASED, ERASED)]
    assert tasks[1].params is None and tasks[1].error is not None
    assert "p@example.org" not in repr(tasks)  # the failed task's error went too
    assert [(s["label"], s["data"], s["history"]) for s in statuses] == [
        ("Charging", ERASED, [])]
    # Another person's run keeps its tasks and statuses.
    tasks, statuses = await engine.core.storage.read(lambda tx: v2_rows(tx, theirs))
    assert [(t.params, t.output) for t in tasks[:1]] == [({"card": "4242"}, {"receipt": "r-1"})]
    assert "p@example.org" in repr(tasks)
    assert statuses[0]["data"] == {"step": 2} and len(statuses[0]["history"]) == 1
