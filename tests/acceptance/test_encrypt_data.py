"""An environment's ``encrypt_data`` (``sealing.py``), on both backends: a canary in an event's
``data``, in its ``id``, in a step's output and in a run's output never reaches the disk in
clear (the SQLite file and its WAL, a ``pg_dump``), while triggers with ``if``, waits, the SDK,
the API, the dashboard, reruns and replays see plaintext; a rotated key leaves old data
readable; off stores as before."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

import tidings
from tests.conftest import TIDINGS, LiveServer, start_server, stop_server
from tests.engine.conftest import Engine
from tidings.core import Core
from tidings.events.env_settings import rotate_sealing
from tidings.events.model import iso
from tidings.ids import now_ms
from tidings.runs.model import COMPLETED
from tidings.sealing import BINARY_MARK, JSON_MARK, REF_BYTES, SEALS, event_aad, is_sealed

IN_DATA = "canary-data-5f0c1e"
IN_ID = "signup-canary-77ab@example.org"
IN_STEP = "canary-step-a913d2"
IN_RUN = "canary-run-0be447"
IN_WAIT = "canary-wait-4c2f80"
IN_ERROR = "canary-error-3d9e71"  # quoted by errors: of a step's attempts, of a run
IN_CONTEXT = "canary-context-81b2aa"
IN_META = "canary-session-5e6f17"
CANARIES = (IN_DATA, IN_ID, IN_STEP, IN_RUN, IN_WAIT)


@pytest.fixture
async def engine(core: Core) -> Engine:
    from tests.engine.conftest import Clock

    return Engine(core, Clock(), [])


def signup_app() -> tidings.Tidings:
    client = tidings.Tidings(app_id="shop")

    @client.function(id="welcome", trigger=tidings.TriggerEvent(
        event="user/signed-up", if_='event.data.plan == "pro"'), retries=0)
    async def welcome(ctx: tidings.Context) -> Any:
        # The function is handed plaintext: its event, and its steps' memoized results.
        note = await ctx.step.run("note", lambda: {"seen": ctx.event.data["note"],
                                                   "mark": IN_STEP})
        approval = await ctx.step.wait_for_event(
            "approval", event="user/approved", if_="async.data.who == event.data.who",
            timeout="1h")
        assert approval is not None
        return {"note": note, "approval": approval.data["why"], "id": ctx.event.id,
                "mark": IN_RUN}

    return client


async def ok(reply: httpx.Response, status: int = 200) -> Any:
    assert reply.status_code == status, reply.text
    return reply.json()["data"]


def _on_disk(core: Core, tmp_path: Path) -> bytes:
    """Every byte the database holds: the SQLite file and its WAL, or a ``pg_dump`` of the
    test's schema."""
    url = core.settings.database_url
    if url.startswith("sqlite"):
        return b"".join(p.read_bytes() for p in sorted(tmp_path.glob("tidings.db*")))
    schema = url.rsplit("%3D", 1)[1]
    dump = subprocess.run(["pg_dump", "--no-owner", "-n", schema, url.split("?", 1)[0]],
                          check=True, capture_output=True, timeout=120)
    return dump.stdout


async def _stored_event(core: Core, event_id: str) -> tuple[bytes, str | None]:
    """The ``data`` and ``event_key`` columns of an event as the database holds them."""
    def read(tx: Any) -> Any:
        return tx.one("event_row", (event_id,))

    row = await core.storage.read(read)
    data = row[3]
    return (data.encode() if isinstance(data, str) else bytes(data)), row[6]


def _sealed_under_generation(stored: bytes, refs: dict[int, int]) -> int | None:
    """The key generation a stored ``data`` is sealed under, in either form (``sealing.py``:
    binary, or text in a JSON string), its key named in full or by reference (``refs``: the
    generation of each, as ``sealing_keys`` has them); None when it is in clear."""
    if stored.startswith(BINARY_MARK):
        size = int.from_bytes(stored[1:3], "big")
        if size == 0:
            return refs[int.from_bytes(stored[3:3 + REF_BYTES], "big")]
        return int(stored[3:3 + size].split(b" ")[1])
    if stored.startswith(JSON_MARK):
        head = stored[len(JSON_MARK):].split(b" ")
        return refs[int(head[0][1:], 16)] if head[0].startswith(b"#") else int(head[1])
    return None


async def _refs(core: Core) -> dict[int, int]:
    """The generation of each key reference the database has."""
    rows = await core.storage.read(lambda tx: tx.all("sealing_keys_all"))
    return {int(r[0]): int(r[3]) for r in rows}


def _by_reference(stored: bytes) -> bool:
    return stored.startswith(BINARY_MARK + b"\0\0") or stored.startswith(JSON_MARK + b"#")


@pytest.fixture(params=["by reference", "in full"])
def naming(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How values name their key: by reference, or in full as they did before references
    existed (no reference is ever registered), which must still work throughout."""
    if request.param == "in full":
        monkeypatch.setattr(SEALS, "register", lambda tx, env_id, generation: False)
    return str(request.param)


async def test_sealed_data_never_reaches_the_disk_in_clear_and_everything_still_works(
    engine: Engine, client: httpx.AsyncClient, tmp_path: Path, naming: str
) -> None:
    assert (await ok(await client.get("/v1/settings")))["encrypt_data"] is False
    assert (await ok(await client.post("/v1/settings", json={"encrypt_data": True})))[
        "encrypt_data"] is True
    await engine.start(signup_app())
    (pro,) = await engine.send({"name": "user/signed-up", "id": IN_ID,
                                "data": {"plan": "pro", "note": IN_DATA, "who": 7}})
    (free,) = await engine.send({"name": "user/signed-up",
                                 "data": {"plan": "free", "note": IN_DATA, "who": 8}})
    await engine.drain()
    await engine.send({"name": "user/approved", "data": {"who": 8, "why": "not this one"}},
                      {"name": "user/approved", "data": {"who": 7, "why": IN_WAIT}})
    await engine.drain()

    # The `if` matched on the sealed event's data: one run, for the pro plan; the wait's
    # condition compared the sealed trigger with the approval.
    (run,) = await engine.runs()
    assert run.event_id == pro
    assert (run.status, run.output) == (COMPLETED, {
        "note": {"seen": IN_DATA, "mark": IN_STEP}, "approval": IN_WAIT, "id": IN_ID,
        "mark": IN_RUN})
    steps = {s.name: s for s in await engine.steps(run.id)}
    assert steps["note"].output == {"data": {"seen": IN_DATA, "mark": IN_STEP}}
    assert steps["approval"].output["data"]["why"] == IN_WAIT
    # The API and the dashboard read plaintext, and filter on it.
    shown = await ok(await client.get(f"/v1/events/{pro}"))
    assert (shown["data"]["note"], shown["id"]) == (IN_DATA, pro)
    filtered = await ok(await client.get("/v1/events", params={
        "if": "event.data.plan == 'pro'", "name": "user/signed-up"}))
    assert [e["id"] for e in filtered] == [pro]
    page = await client.get("/", params={"if": "event.data.plan == 'free'"})
    assert free in page.text and pro not in page.text
    assert IN_DATA in (await client.get(f"/events/{pro}")).text
    assert IN_ID in msgspec.json.encode(await ok(await client.get(f"/v1/runs/{run.id}"))
                                        ).decode()

    # The same id again is the same event (its blind index found it): no second run.
    (again,) = await engine.send({"name": "user/signed-up", "id": IN_ID,
                                  "data": {"plan": "pro", "note": "again", "who": 7}})
    assert again == pro

    # A rerun, and a rerun from the wait (the steps before it copied, sealed), read it all.
    rerun = await ok(await client.post(f"/v1/runs/{run.id}/rerun"), 201)
    partial = await ok(await client.post(f"/v1/runs/{run.id}/rerun",
                                         json={"from_step": steps["approval"].step}), 201)
    await engine.drain()
    await engine.send({"name": "user/approved", "data": {"who": 7, "why": IN_WAIT}})
    await engine.drain()
    for again_id in (rerun["id"], partial["id"]):
        assert (await engine.run(again_id)).output == run.output
    # A replay of the completed runs too.
    replay = await ok(await client.post("/v1/replays", json={
        "function": "shop-welcome", "since": iso(run.created_at),
        "until": iso(engine.clock() + 1), "statuses": ["Completed"]}), 201)
    await engine.drain()
    await engine.send({"name": "user/approved", "data": {"who": 7, "why": IN_WAIT}})
    await engine.drain()
    replayed = [r for r in await engine.runs() if r.replay_id == replay["id"]]
    assert len(replayed) == 3 and all(r.output == run.output for r in replayed)

    data, key = await _stored_event(engine.core, free)
    # In binary where the column is (SQLite's BLOB), as text in PostgreSQL's json.
    binary = engine.core.storage.dialect == "sqlite"
    assert data.startswith(BINARY_MARK if binary else JSON_MARK) and key is None
    assert _sealed_under_generation(data, await _refs(engine.core)) == 1
    assert _by_reference(data) is (naming == "by reference")
    data, key = await _stored_event(engine.core, pro)
    assert key is not None and key.startswith("\x1fts1 ")
    assert key.startswith("\x1fts1 #") is (naming == "by reference")
    disk = _on_disk(engine.core, tmp_path)
    assert [c for c in CANARIES if c.encode() in disk] == []


async def test_errors_of_failed_steps_and_runs_are_sealed_and_shown_in_clear(
    engine: Engine, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Errors often quote what a step or run was given: a step's failed attempts, its final
    error, a run's error while it waits to retry and when it fails are stored sealed; the API
    and the SDK read them as raised."""
    app = tidings.Tidings(app_id="shop")
    caught: list[str] = []

    @app.function(id="charge", trigger=tidings.TriggerEvent(event="order/placed"), retries=1)
    async def charge(ctx: tidings.Context) -> Any:
        def pay() -> None:
            raise ValueError(f"card {ctx.event.data['card']} declined")

        try:
            await ctx.step.run("pay", pay)
        except tidings.StepError as exc:
            caught.append(str(exc))
        raise RuntimeError(f"gave up on {ctx.event.data['card']}")

    await ok(await client.post("/v1/settings", json={"encrypt_data": True}))
    await engine.start(app)
    await engine.send({"name": "order/placed", "data": {"card": IN_ERROR}})
    await engine.drain()
    (run,) = await engine.runs()
    waiting = await ok(await client.get(f"/v1/runs/{run.id}"))
    assert IN_ERROR in waiting["error"]["message"]  # the attempt that failed, until the retry
    await engine.settle()
    run = await engine.run(run.id)
    assert run.status == "Failed" and IN_ERROR in run.error["message"]
    (pay,) = await engine.steps(run.id)
    assert pay.status == "failed" and IN_ERROR in pay.output["error"]["message"]
    shown = msgspec.json.encode(await ok(await client.get(f"/v1/runs/{run.id}"))).decode()
    assert shown.count(IN_ERROR) >= 2, shown  # the run's error and its step's
    assert caught and all(IN_ERROR in c for c in caught)  # the memoized error, opened
    assert IN_ERROR.encode() not in _on_disk(engine.core, tmp_path)


async def test_an_events_context_and_meta_are_sealed_and_read_in_clear(
    engine: Engine, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """``context`` (Trigger.dev's, the caller's) and ``meta`` (session ids, often a person's)
    are sealed like ``data``: routed at once or later (delayed), the function gets them as sent,
    and so does the API."""
    app = tidings.Tidings(app_id="shop")

    @app.function(id="seen", trigger=tidings.TriggerEvent(event="visit/started"))
    async def seen(ctx: tidings.Context) -> Any:
        return {"context": ctx.event.context, "meta": ctx.event.meta}

    await ok(await client.post("/v1/settings", json={"encrypt_data": True}))
    await engine.start(app)
    sent = {"name": "visit/started", "data": {}, "context": {"page": IN_CONTEXT},
            "meta": {"sessions": {"visitor": IN_META}}}
    (now,) = await engine.send(sent)
    (later,) = await engine.send({**sent, "deliver_after": 5})
    await engine.drain()
    engine.clock.advance(6_000)
    await engine.settle()
    runs = await engine.runs()
    assert sorted(r.event_id for r in runs) == sorted([now, later])
    expected = {"context": {"page": IN_CONTEXT}, "meta": {"sessions": {"visitor": IN_META}}}
    assert all((r.status, r.output) == (COMPLETED, expected) for r in runs)
    for event_id in (now, later):
        shown = await ok(await client.get(f"/v1/events/{event_id}"))
        assert (shown["context"], shown["meta"]) == (expected["context"], expected["meta"])
    disk = _on_disk(engine.core, tmp_path)
    assert [c for c in (IN_CONTEXT, IN_META) if c.encode() in disk] == []


async def test_a_new_key_seals_new_writes_and_the_old_data_stays_readable(
    engine: Engine, client: httpx.AsyncClient, naming: str
) -> None:
    await ok(await client.post("/v1/settings", json={"encrypt_data": True}))
    await engine.start(tidings.Tidings(app_id="none"))
    (old,) = await engine.send({"name": "a/b", "data": {"n": "before"}})
    generation = await engine.core.storage.write(
        lambda tx: rotate_sealing(tx, engine.env_id, now_ms()))
    assert generation == 2
    (new,) = await engine.send({"name": "a/b", "data": {"n": "after"}})

    old_data, _ = await _stored_event(engine.core, old)
    new_data, _ = await _stored_event(engine.core, new)
    refs = await _refs(engine.core)
    assert _sealed_under_generation(old_data, refs) == 1
    assert _sealed_under_generation(new_data, refs) == 2
    assert _by_reference(old_data) is _by_reference(new_data) is (naming == "by reference")
    for event_id, n in ((old, "before"), (new, "after")):
        assert (await ok(await client.get(f"/v1/events/{event_id}")))["data"] == {"n": n}


async def test_switched_off_stores_as_before_and_still_reads_what_was_sealed(
    engine: Engine, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    await engine.start(tidings.Tidings(app_id="none"))
    (plain,) = await engine.send({"name": "a/b", "id": "plain-id", "data": {"n": IN_DATA}})
    assert await _stored_event(engine.core, plain) == (b'{"n":"' + IN_DATA.encode() + b'"}',
                                                       "plain-id")

    await ok(await client.post("/v1/settings", json={"encrypt_data": True}))
    (sealed,) = await engine.send({"name": "a/b", "data": {"n": "sealed"}})
    await ok(await client.post("/v1/settings", json={"encrypt_data": False}))
    (after,) = await engine.send({"name": "a/b", "data": {"n": "after"}})
    assert (await _stored_event(engine.core, after))[0] == b'{"n":"after"}'
    listed = await ok(await client.get("/v1/events", params={"name": "a/b"}))
    assert [e["data"]["n"] for e in listed] == ["after", "sealed", IN_DATA]
    assert sealed in {e["id"] for e in listed}


async def test_a_bad_encrypt_data_is_400_naming_it_and_nothing_changes(
    client: httpx.AsyncClient
) -> None:
    before = await ok(await client.get("/v1/settings"))
    reply = await client.post("/v1/settings", json={"events_ttl": "48h", "encrypt_data": "yes"})
    assert reply.status_code == 400 and "encrypt_data" in reply.json()["error"], reply.text
    assert await ok(await client.get("/v1/settings")) == before


def _cli(tmp_path: Path, server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TIDINGS, *args], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "TIDINGS_DATA_DIR": str(server.data_dir)},
                          timeout=120, check=False)


def _sealed_under(server: LiveServer, db: Path, generation: int) -> tuple[str, bytes]:
    """Send events to the live server until one is stored sealed under ``generation`` (the
    server takes a change made by the CLI within seconds); its id and stored ``data``."""
    deadline = time.monotonic() + 30
    while True:
        (event_id,) = httpx.post(f"{server.url}/e/key", json={
            "name": "a/b", "data": {"n": IN_DATA}}).json()["ids"]
        with sqlite3.connect(db) as conn:
            (data,) = conn.execute("SELECT data FROM events WHERE id = ?", (event_id,)
                                   ).fetchone()
        stored = data.encode() if isinstance(data, str) else data
        with sqlite3.connect(db) as conn:
            refs = dict(conn.execute("SELECT ref, generation FROM sealing_keys").fetchall())
        if _sealed_under_generation(stored, refs) == generation:
            return event_id, stored
        assert time.monotonic() < deadline, f"still stored as {stored[:40]!r}"
        time.sleep(0.2)


def test_the_cli_switches_it_on_and_rotates_the_key_of_a_running_server(
    tmp_path: Path
) -> None:
    db = tmp_path / "live.db"
    server = start_server(tmp_path, "--db", str(db))
    try:
        done = _cli(tmp_path, server, "settings", "set", "--encrypt-data", "on", "--db", str(db))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["encrypt_data"] is True
        first, _ = _sealed_under(server, db, 1)

        rotated = _cli(tmp_path, server, "keys", "rotate-encryption", "--env", "dev",
                       "--db", str(db))
        assert rotated.returncode == 0, rotated.stderr
        assert "generation 2" in rotated.stdout
        second, _ = _sealed_under(server, db, 2)
        for event_id in (first, second):
            shown = httpx.get(f"{server.url}/v1/events/{event_id}").json()["data"]
            assert shown["data"] == {"n": IN_DATA}
        unknown = _cli(tmp_path, server, "keys", "rotate-encryption", "--env", "nowhere",
                       "--db", str(db))
        assert unknown.returncode == 1 and "nowhere" in unknown.stderr
    finally:
        stop_server(server)


async def test_erasing_a_person_with_their_events_reaches_sealed_rows(
    engine: Engine, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    client_app = tidings.Tidings(app_id="shop")

    @client_app.function(id="charge", trigger=tidings.TriggerEvent(event="order/placed"))
    async def charge(ctx: tidings.Context) -> Any:
        return {"note": ctx.event.data["note"]}

    @client_app.function(id="ledger", trigger=tidings.TriggerEvent(
        event="tidings/function.finished", if_='event.data.function_id == "shop-charge"'))
    async def ledger(ctx: tidings.Context) -> Any:
        return "noted"

    await ok(await client.post("/v1/settings", json={"encrypt_data": True}))
    await engine.start(client_app)
    (mine,) = await engine.send({"name": "order/placed", "id": IN_ID,
                                 "data": {"note": IN_DATA}, "user": {"external_id": "p-1"}})
    (theirs,) = await engine.send({"name": "order/placed", "data": {"note": "kept"},
                                   "user": {"external_id": "p-2"}})
    await engine.drain()
    finished = await ok(await client.get("/v1/events", params={
        "name": "tidings/function.finished"}))
    assert sorted(e["data"]["event"]["data"]["note"] for e in finished
                  if e["data"]["function_id"] == "shop-charge") == [IN_DATA, "kept"]

    done = await ok(await client.delete("/v1/users/p-1", params={"events": "delete"}))
    assert (done["events_deleted"], done["runs_erased"]) == (1, 1)
    # What the run emitted when it ended (sealed) went with it; the other person's stayed.
    finished = await ok(await client.get("/v1/events", params={
        "name": "tidings/function.finished"}))
    assert [e["data"]["event"]["data"]["note"] for e in finished
            if e["data"]["function_id"] == "shop-charge"] == ["kept"]
    assert (await client.get(f"/v1/events/{theirs}")).status_code == 200
    # The claim of its id (held as a blind index) went too: the same id is a new event.
    (again,) = await engine.send({"name": "order/placed", "id": IN_ID, "data": {"note": "new"}})
    assert again != mine


async def test_an_output_that_looks_sealed_is_kept_apart_from_sealed_ones_when_off(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    """A run's output is any JSON its function returns; a string starting like a sealed value
    (U+001F, "ts1 ") was stored in clear with sealing off and then read as sealed: the run
    and every read of it failed. Such a value is now sealed even when off."""
    client_app = tidings.Tidings(app_id="echo")

    @client_app.function(id="echo", trigger=tidings.TriggerEvent(event="echo/it"), retries=0)
    async def echo(ctx: tidings.Context) -> Any:
        return "\x1fts1 " + ctx.event.data["text"]

    await engine.start(client_app)
    await engine.send({"name": "echo/it", "data": {"text": "not sealed"}})
    await engine.drain()

    (run,) = await engine.runs()
    assert (run.status, run.output) == (COMPLETED, "\x1fts1 not sealed")
    shown = await ok(await client.get(f"/v1/runs/{run.id}"))
    assert shown["output"] == "\x1fts1 not sealed"


async def test_sqlite_reads_event_data_sealed_in_binary_and_as_text(
    engine: Engine, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """On SQLite an event's data is sealed in binary (its column is a BLOB); what was sealed
    as text before still reads, and a lifecycle event sealed in binary does not break the
    erasure's JSON filter over them (it is handed over to be opened and checked)."""
    if not engine.core.storage.binary_data:
        pytest.skip("PostgreSQL's data is json: it is sealed as text only")
    await ok(await client.post("/v1/settings", json={"encrypt_data": True}))
    await engine.start(tidings.Tidings(app_id="none"))
    binary, text = await engine.send({"name": "a/b", "data": {"n": "binary"}},
                                     {"name": "a/b", "data": {"n": "text"}})
    as_text = SEALS.seal_json(engine.env_id, 1, b'{"n":"text"}', event_aad(text))
    assert not as_text.startswith(BINARY_MARK)
    with sqlite3.connect(tmp_path / "tidings.db", timeout=10) as conn:
        conn.execute("UPDATE events SET data = ? WHERE id = ?", (as_text, text))
        conn.execute("UPDATE events SET source = 'tidings' WHERE id = ?", (binary,))
    assert (await _stored_event(engine.core, binary))[0].startswith(BINARY_MARK)
    assert (await _stored_event(engine.core, text))[0] == as_text

    for event_id, n in ((binary, "binary"), (text, "text")):
        assert (await ok(await client.get(f"/v1/events/{event_id}")))["data"] == {"n": n}
    listed = await ok(await client.get("/v1/events", params={"name": "a/b"}))
    assert [e["data"] for e in listed] == [{"n": "text"}, {"n": "binary"}]

    found = await engine.core.storage.read(lambda tx: tx.all("privacy_lifecycle_events", (
        engine.env_id, binary, binary + "~", "some-run")))
    assert [(row[0], is_sealed(row[1])) for row in found] == [(binary, True)]
