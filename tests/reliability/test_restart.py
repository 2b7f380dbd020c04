"""The database goes away under load and comes back: every acknowledged event's run completes
within 10 s of its return, none is left Queued or Running, and the processes say healthy.

- PostgreSQL: a cluster of the test's own (``cluster.py``) under ``tidings serve`` and a
  ``tidings worker`` (real processes), restarted with ``pg_ctl restart -m fast`` and ``-m
  immediate`` while events are being sent.
- SQLite: ``tidings dev`` whose SQLite connections fail as a full disk and a held lock would
  (``tests/faults.py``): the executor's and router's reads and writes fail until the fault is
  cleared.
"""

from __future__ import annotations

import base64
import collections
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import ROOT, TIDINGS, LiveServer, start_server, stop_process, stop_server
from tests.reliability.cluster import Cluster, unavailable_reason_or_fail
from tidings.crypto import new_key_text

APP = '''
import tidings

client = tidings.Tidings(app_id="restart")


@client.function(id="three", trigger=tidings.TriggerEvent(event="restart/go"))
async def three(ctx):
    out = []
    for step in ("one", "two", "three"):
        out.append(await ctx.step.run(step, lambda s=step: s))
    return out
'''

BATCH = 20
RECOVERY_S = 10.0  # every acknowledged run completes this soon after the database is back


class Producer(threading.Thread):
    """Sends batches of events in a loop, ``pause`` apart; a batch that fails is sent again
    with the same id seed (so it is stored once) until acknowledged. ``stop()`` ends it once
    its batch in flight is acknowledged."""

    def __init__(self, url: str, key: str, pause: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.url = f"{url}/e/{key}"
        self.pause = pause
        self.acked: list[str] = []
        self.refused = 0
        self._done = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as http:
            n = 0
            while not self._done.is_set():
                batch = [{"name": "restart/go", "data": {"n": n + i}} for i in range(BATCH)]
                n += BATCH
                seed = f"{int(time.time() * 1000)},{base64.b64encode(os.urandom(10)).decode()}"
                while True:
                    try:
                        reply = http.post(self.url, json=batch,
                                          headers={"x-inngest-event-id-seed": seed})
                        if reply.status_code == 200:
                            self.acked.extend(reply.json()["ids"])
                            break
                    except httpx.TransportError:
                        pass
                    self.refused += 1
                    time.sleep(0.05)
                time.sleep(self.pause)

    def stop(self) -> None:
        self._done.set()
        if self.ident is None:
            return  # never started
        self.join(timeout=60)
        assert not self.is_alive(), "the producer's last batch was never acknowledged"


def _until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _runs(query: Callable[[str], list[tuple[Any, ...]]]) -> dict[str, str]:
    rows = query("SELECT event_id, status FROM runs")
    assert len({event for event, _ in rows}) == len(rows), "an event started two runs"
    return dict(rows)


def _settled(query: Callable[[str], list[tuple[Any, ...]]], acked: list[str],
             back: float) -> None:
    """Every acknowledged event's run is Completed within ``RECOVERY_S`` of ``back``."""
    deadline = back + RECOVERY_S
    while True:
        runs = _runs(query)
        done = sum(runs.get(event) == "Completed" for event in acked)
        if done == len(acked):
            break
        if time.monotonic() > deadline:
            stuck = collections.Counter(runs.get(event, "no run") for event in acked)
            raise AssertionError(f"{done} of {len(acked)} runs completed {RECOVERY_S} s after "
                                 f"the database came back: {dict(stuck)}")
        time.sleep(0.1)
    statuses = collections.Counter(_runs(query).values())
    assert set(statuses) == {"Completed"}, f"runs left behind: {dict(statuses)}"


def _outages(*logs: Path) -> dict[str, int]:
    """Per loop of these processes: outages logged that have not ended (logged their end)."""
    text = "".join(log.read_text() for log in logs)
    open_ = collections.Counter(re.findall(r"(tidings-[\w:\[\]-]+) failed: ", text))
    open_.subtract(re.findall(r"(tidings-[\w:\[\]-]+) works again after", text))
    return {loop: count for loop, count in open_.items() if count}


def _recovered(*logs: Path) -> None:
    """Every loop that logged an outage logs its end (the loops of a worker, which has no
    /health, included)."""
    _until(lambda: not _outages(*logs), 30, f"the loops to recover: {_outages(*logs)}")


def _healthy(url: str) -> bool:
    reply = httpx.get(f"{url}/health", timeout=5)
    return reply.status_code == 200 and "failing" not in reply.json()


# -- PostgreSQL ---------------------------------------------------------------------------------

@pytest.fixture
def cluster() -> Iterator[Cluster]:
    reason = unavailable_reason_or_fail()
    if reason is not None:
        pytest.skip(reason)
    own = Cluster()
    try:
        own.create()
        yield own
    finally:
        own.destroy()


def _pg(url: str) -> Callable[[str], list[tuple[Any, ...]]]:
    def query(sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(url, connect_timeout=5) as conn:
            return conn.execute(sql).fetchall()
    return query


def _worker(tmp_path: Path, db: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [TIDINGS, "worker", "restartapp:client", "--db", db, "--env", "production"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    return process, log


@pytest.mark.postgres
@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_runs_complete_after_a_postgres_restart_under_load(
        cluster: Cluster, mode: str, tmp_path: Path) -> None:
    (tmp_path / "restartapp.py").write_text(APP)
    env = {**os.environ, "TIDINGS_ENCRYPTION_KEY": new_key_text(),
           "TIDINGS_DATA_DIR": str(tmp_path / "server"),
           "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    key = subprocess.run([TIDINGS, "keys", "create", "--env", "production", "--db", cluster.url],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    query = _pg(cluster.url)
    server: LiveServer = start_server(tmp_path, "--db", cluster.url, env=env, command="serve")
    worker, worker_log = _worker(tmp_path, cluster.url, env)
    producer = Producer(server.url, key)
    try:
        _until(lambda: bool(query("SELECT 1 FROM functions")), 60, "the worker to register")
        producer.start()
        _until(lambda: len(producer.acked) >= 200, 60, "events before the restart")
        cluster.restart(mode)
        back = time.monotonic()
        producer.stop()  # once its batch in flight is acknowledged
        assert len(producer.acked) >= 200
        _settled(query, producer.acked, back)
        assert worker.poll() is None and server.process.poll() is None
        _until(lambda: _healthy(server.url), 30, "the server to say healthy")
        _recovered(server.data_dir / "server.log", worker_log)
        assert " failed: " in worker_log.read_text(), "the worker did not see the restart"
    finally:
        producer.stop()
        stop_process(worker, timeout=30)
        stop_server(server)
    logs = (server.data_dir / "server.log").read_text() + worker_log.read_text()
    assert "stopped for good" not in logs


# -- SQLite -------------------------------------------------------------------------------------

def _faulty_dev(tmp_path: Path, db: Path, switch: Path) -> LiveServer:
    """``tidings dev`` with the fault switch (``tests/reliability/faulty_cli.py``)."""
    launcher = tmp_path / "tidings-faulty"
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} -m tests.reliability.faulty_cli "
                        '"$@"\n')
    launcher.chmod(0o755)
    env = {"TIDINGS_TEST_FAULTS": str(switch),
           "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    return start_server(tmp_path, "--db", str(db), "-a", "restartapp:client",
                        "--no-discovery", env=env, executable=str(launcher))


@pytest.mark.timeout(300)
def test_runs_complete_after_sqlite_fails_with_a_full_disk_and_a_held_lock(
        tmp_path: Path) -> None:
    (tmp_path / "restartapp.py").write_text(APP)
    db, switch = tmp_path / "dev.db", tmp_path / "faults"

    def query(sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(db, timeout=30) as conn:
            return conn.execute(sql).fetchall()

    server = _faulty_dev(tmp_path, db, switch)
    producer = Producer(server.url, "key")
    try:
        producer.start()
        _until(lambda: len(producer.acked) >= 200, 60, "events before the fault")
        switch.write_text("io")

        def failing() -> set[str]:
            reply = httpx.get(f"{server.url}/health", timeout=5)
            assert reply.status_code == 200, reply.text  # retrying is not dead
            return set(reply.json().get("failing", {}))

        _until(lambda: {"tidings-executor[native:restart]", "tidings-sweeper"} <= failing(),
               30, "the executor and the sweeper to fail")
        refused = producer.refused
        _until(lambda: producer.refused >= refused + 20, 30, "the fault to last a while")
        switch.unlink()
        back = time.monotonic()
        producer.stop()
        _settled(query, producer.acked, back)
        assert producer.refused > 0, "no request failed while the disk was full"
        _until(lambda: _healthy(server.url), 30, "the server to say healthy")
        _recovered(server.data_dir / "server.log")
    finally:
        producer.stop()
        switch.unlink(missing_ok=True)
        stop_server(server)
    log = (server.data_dir / "server.log").read_text()
    assert "database or disk is full" in log and "database is locked" in log
    assert "stopped for good" not in log


@pytest.mark.timeout(120)
def test_tidings_dev_exits_with_an_error_when_its_sqlite_writer_dies(tmp_path: Path) -> None:
    (tmp_path / "restartapp.py").write_text(APP)
    switch = tmp_path / "faults"
    server = _faulty_dev(tmp_path, tmp_path / "dev.db", switch)
    try:
        switch.write_text("die")
        assert server.process.wait(timeout=60) == 1
    finally:
        stop_server(server)
    log = (server.data_dir / "server.log").read_text()
    assert "the SQLite writer thread died" in log
    assert "Tidings stopped:" in log and "stopped for good: StorageStopped" in log
