"""Leases between calls: a run handed back (rescheduled or released) is free at once, even when
a heartbeat for its old lease lands afterwards; runs whose calls are in flight are not "due" to
an executor looking for work."""

from __future__ import annotations

import tidings
from tests.engine.conftest import Engine
from tidings.engine.runtime import native_queue
from tidings.runs import store
from tidings.runs.model import Run

LEASE_MS = 30_000


async def _queued_run(engine: Engine) -> tuple[str, str]:
    """A run created and due, not yet claimed: (its queue, its id)."""
    client = tidings.Tidings(app_id="leases")

    @client.function(id="f", trigger=tidings.TriggerEvent(event="leases/go"))
    async def f(ctx: tidings.Context) -> None:
        return None

    runtime = await engine.start(client)
    await engine.send({"name": "leases/go"})
    await runtime.router.flush()
    (run,) = await engine.runs()
    return native_queue("leases"), run.id


async def _claim(engine: Engine, queue: str) -> Run:
    now = engine.clock()
    (claimed,) = await engine.core.storage.write(
        lambda tx: store.claim_calls(tx, queue, "worker-a", now, LEASE_MS, 10))
    return claimed.run


async def test_a_late_heartbeat_does_not_lease_a_rescheduled_run_again(engine: Engine) -> None:
    queue, run_id = await _queued_run(engine)
    run = await _claim(engine, queue)
    now = engine.clock()
    storage = engine.core.storage
    await storage.write(lambda tx: store.reschedule(tx, run, due_at=now, attempt=run.attempt))
    # The heartbeat took its list of leases before the reschedule and renews after it.
    await storage.write(lambda tx: store.renew(tx, [(run.id, run.lease_token)], now + LEASE_MS))
    after = await engine.run(run_id)
    assert after.lease_owner is None and after.lease_until is None
    again = await _claim(engine, queue)
    assert again.id == run_id and again.lease_token == run.lease_token + 1


async def test_a_late_heartbeat_does_not_lease_a_released_run_again(engine: Engine) -> None:
    queue, run_id = await _queued_run(engine)
    run = await _claim(engine, queue)
    storage = engine.core.storage
    await storage.write(lambda tx: store.release(tx, run.id, run.lease_token))
    until = engine.clock() + LEASE_MS
    await storage.write(lambda tx: store.renew(tx, [(run.id, run.lease_token)], until))
    assert (await engine.run(run_id)).lease_until is None


async def test_a_held_lease_is_renewed(engine: Engine) -> None:
    queue, run_id = await _queued_run(engine)
    run = await _claim(engine, queue)
    until = engine.clock() + 2 * LEASE_MS
    await engine.core.storage.write(
        lambda tx: store.renew(tx, [(run.id, run.lease_token)], until))
    assert (await engine.run(run_id)).lease_until == until


async def test_runs_in_flight_are_not_due_work(engine: Engine) -> None:
    queue, run_id = await _queued_run(engine)
    storage = engine.core.storage
    queued = await engine.run(run_id)
    assert await storage.read(lambda tx: store.next_due(tx, queue)) == queued.due_at
    run = await _claim(engine, queue)
    # Its due time has passed, but an idle executor must not poll for it without pause.
    assert await storage.read(lambda tx: store.next_due(tx, queue)) is None
    now = engine.clock()
    await storage.write(lambda tx: store.reschedule(tx, run, due_at=now, attempt=run.attempt))
    assert await storage.read(lambda tx: store.next_due(tx, queue)) == now
