"""Scenario: a Connect worker (official ``inngest`` Python SDK, ``connect()``) in production
mode against ``tidings serve``: it starts its connection with its environment's signing key
(the SDK sends it hashed), and its flow runs as in dev. Without a signing key of the
environment there is no connection: ``/v0/connect/start`` answers 401 and the SDK gives up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.connect_stack import ConnectStack, running_stack
from tests.acceptance.sdk_apps import production_keys, wait_for
from tests.acceptance.test_inngest_py_connect import check_flow
from tidings.signing import hash_key


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ConnectStack]:
    with running_stack(tmp_path, keys=production_keys(tmp_path)) as running:
        yield running


def test_a_worker_with_the_signing_key_runs_its_flow(stack: ConnectStack) -> None:
    check_flow(stack)


def test_start_needs_the_environments_signing_key(stack: ConnectStack) -> None:
    url = f"{stack.server.url}/v0/connect/start"
    key = stack.worker_env["INNGEST_SIGNING_KEY"]
    assert httpx.post(url, timeout=10).status_code == 401
    wrong = "signkey-prod-" + "ab" * 32
    refused = httpx.post(url, headers={"authorization": f"Bearer {hash_key(wrong)}"}, timeout=10)
    assert refused.status_code == 401
    assert "signing key" in refused.json()["error"]
    for token in (key, hash_key(key)):
        answer = httpx.post(url, headers={"authorization": f"Bearer {token}"}, timeout=10)
        assert answer.status_code == 200, answer.text


def test_a_worker_with_another_key_is_refused(stack: ConnectStack) -> None:
    worker = stack.start_worker("intruder", INNGEST_SIGNING_KEY="signkey-prod-" + "cd" * 32)
    wait_for(lambda: True if worker.process.poll() is not None else None, timeout=60,
             what="the refused worker to give up", logs=stack.logs)
    assert "unauthorized" in worker.output().lower()
    assert all(app["connections"] == [] for app in stack.api.apps())
