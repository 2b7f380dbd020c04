"""Concurrency slots freed, and what a run leaves behind when it ends."""

from __future__ import annotations

from tidings.storage.tx import Tx


def release(tx: Tx, run_id: str, now: int) -> None:
    """Free a run's concurrency slots and wake the oldest run waiting on each key."""
    if tx.concurrent:
        # Under the keys' locks, as a claim counts: a run the claim is just sending back to
        # wait is then either seen here (and woken) or sees the slot free (and runs).
        tx.one("flow_lock_slots_of", (run_id,))
        tx.run("flow_release", (run_id, now, now, now))
        return
    for (key,) in tx.all("flow_slots_release", (run_id,)):
        for (waiter,) in tx.all("flow_waiters", (key, now, 1)):
            tx.run("flow_wake", (now, waiter, now))


def ended(tx: Tx, run_id: str) -> None:
    """A run ended: its cancellations and its waiting reason go."""
    tx.run("flow_cancels_drop", (run_id,))
    tx.run("flow_wait_done", (run_id,))
