"""Scenarios with several Connect workers (official ``inngest`` Python SDK, ``connect()``) on
one ``tidings dev``: they share the calls within each one's ``max_worker_concurrency``; and when
one is killed with SIGKILL in the middle of a step, the call's lease lapses and the run goes on
on the other, the step it had recorded not run again."""

from __future__ import annotations

import itertools
import signal
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.connect_stack import APP, ConnectStack, running_stack
from tests.acceptance.sdk_apps import wait_for
from tests.acceptance.test_inngest_py_connect import send

LEASE_SECONDS = 3


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ConnectStack]:
    lease = {"TIDINGS_CONNECT_LEASE_SECONDS": str(LEASE_SECONDS)}
    with running_stack(tmp_path, env=lease) as running:
        yield running


def test_two_workers_share_calls_within_their_concurrency(stack: ConnectStack) -> None:
    stack.start_worker("w1", WORKER_CONCURRENCY="1")
    stack.start_worker("w2", WORKER_CONCURRENCY="1")
    connections = stack.connected(2)
    assert sorted((c["instance_id"], c["capacity"]) for c in connections) == [
        ("w1", 1), ("w2", 1)]
    # Listed oldest first, the newest connection last (as the SDKs' own tests read the list).
    since = [c["connected_at"] for c in connections]
    assert since == sorted(since), connections

    events = [send(stack, "connect/slow", {"seconds": 1}) for _ in range(4)]
    runs = [stack.api.run_of(event, f"{APP}-slow") for event in events]
    for run in runs:
        done = stack.api.finished(run["id"], logs=stack.logs)
        assert done["status"] == "Completed", done

    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    began: dict[tuple[str, str], float] = {}
    for worker, run_id, step, at in stack.steps():
        if step == "long-start":
            began[(worker, run_id)] = at
        elif step == "long-end":
            spans[worker].append((began.pop((worker, run_id)), at))
    assert sorted(spans) == ["w1", "w2"], stack.steps()  # both took calls
    for worker, intervals in spans.items():
        intervals.sort()
        for (_, end), (start, _) in itertools.pairwise(intervals):
            assert start >= end, f"{worker} ran two steps at once: {intervals}"


def test_a_worker_killed_mid_step_hands_the_run_to_another(stack: ConnectStack) -> None:
    first = stack.start_worker("w1")
    stack.connected(1)
    run = stack.api.run_of(send(stack, "connect/slow", {"seconds": 300, "slow_on": "w1"}),
                           f"{APP}-slow")

    def long_step_started() -> bool | None:
        return True if any(s[2] == "long-start" for s in stack.steps()) else None

    wait_for(long_step_started, timeout=30, what="w1 to start the long step", logs=stack.logs)
    stack.start_worker("w2")
    stack.connected(2)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()

    done = stack.api.finished(run["id"], timeout=90, logs=stack.logs)
    assert done["status"] == "Completed", done
    assert done["output"] == {"recorded_by": "w1", "long_by": "w2"}
    ran = [(worker, step) for worker, run_id, step, _ in stack.steps() if run_id == run["id"]]
    assert ran == [("w1", "recorded"), ("w1", "long-start"), ("w2", "long-start"),
                   ("w2", "long-end")]
    [connection] = stack.connected(1)
    assert connection["instance_id"] == "w2"
