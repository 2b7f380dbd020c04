"""A ``tidings dev`` server on PostgreSQL and ``tidings worker`` processes beside it, for the
scenarios that share runs between processes: the app is a module written into the test's
folder, the workers are waited for until they registered its functions, and everything still
running is stopped after (``pool``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.conftest import TIDINGS, LiveServer, start_server, stop_server


@dataclass(frozen=True, slots=True, kw_only=True)
class Pool:
    server: LiveServer
    workers: list[subprocess.Popen[bytes]]


def _worker(tmp_path: Path, app: str, db: str, env: dict[str, str], concurrency: int,
            n: int) -> subprocess.Popen[bytes]:
    log = open(tmp_path / f"worker-{n}.log", "wb")  # noqa: SIM115
    try:
        return subprocess.Popen(
            [TIDINGS, "worker", f"{app}:client", "--db", db, "--env", "dev",
             "--concurrency", str(concurrency)],
            cwd=tmp_path, env={**os.environ, "TIDINGS_DATA_DIR": str(tmp_path / "server"), **env},
            stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def _count(pg_url: str, sql: str) -> int:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def pool(tmp_path: Path, pg_url: str, app: str, source: str, env: dict[str, str], *,
         workers: int, concurrency: int, server_args: tuple[str, ...] = ()) -> Iterator[Pool]:
    """A server and ``workers`` worker processes on ``pg_url`` serving the module ``app``
    (``source``, its ``client``), each process with ``env`` and the test's folder on its path;
    entered once the workers registered their functions (within 60 s)."""
    (tmp_path / f"{app}.py").write_text(source)
    env = {**env, "PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = start_server(tmp_path, "--db", pg_url, *server_args, env=env)
    started = [_worker(tmp_path, app, pg_url, env, concurrency, n) for n in range(workers)]
    try:
        deadline = time.monotonic() + 60
        while not _count(pg_url, "SELECT count(*) FROM functions"):
            assert time.monotonic() < deadline, "the workers did not register their functions"
            time.sleep(0.05)
        yield Pool(server=server, workers=started)
    finally:
        for worker in started:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=30)
        stop_server(server)


def wait_completed(pg_url: str, total: int, seconds: float) -> None:
    """Until ``total`` runs completed (within ``seconds``)."""
    deadline = time.monotonic() + seconds
    while (done := _count(pg_url, "SELECT count(*) FROM runs WHERE status = 'Completed'")
           ) < total:
        assert time.monotonic() < deadline, f"{done} of {total} runs completed"
        time.sleep(0.2)
    assert done == total, f"{done} runs completed, not {total}"
