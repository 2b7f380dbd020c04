"""A live ``tidings dev`` with its Connect gateway on a free port, and workers written with the
official ``inngest`` Python SDK that dial out to it (``inngest_py_connect_app``): no HTTP server
on the worker's side."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import httpx
import pytest

from tests.acceptance.sdk_apps import Api, ProductionKeys, clean_env, wait_for
from tests.conftest import ROOT, LiveServer, start_server, stop_process, stop_server
from tidings.connect import wire_pb2 as pb

APP = "py-connect"


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: BinaryIO
    log_path: Path

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            stop_process(self.process)
        self.log.close()


@dataclass
class ConnectStack:
    server: LiveServer
    gateway_port: int
    tmp_path: Path
    workers: list[Worker]
    # How workers find the server: dev mode, or (serve) a signing key.
    worker_env: dict[str, str] = field(default_factory=dict)
    api_key: str | None = None
    event_key: str = "any"
    keys: ProductionKeys | None = None  # under serve

    @property
    def api(self) -> Api:
        return Api(self.server.url, self.api_key)

    @property
    def step_log(self) -> Path:
        return self.tmp_path / "steps.log"

    def steps(self) -> list[tuple[str, str, str, float]]:
        """Every step that ran: (worker, run id, step, when)."""
        lines = self.step_log.read_text().splitlines() if self.step_log.exists() else []
        return [(w, run, step, float(at)) for w, run, step, at in
                (line.split(":") for line in lines)]

    def logs(self) -> str:
        server = (self.server.data_dir / "server.log").read_text(errors="replace")
        return "\n".join([f"--- server ---\n{server}",
                          *(f"--- {w.name} ---\n{w.output()}" for w in self.workers)])

    def start_worker(self, name: str, **env: str) -> Worker:
        log_path = self.tmp_path / f"{name}.log"
        log = open(log_path, "ab")  # noqa: SIM115
        full_env = clean_env(**{"INNGEST_DEV": "1", "INNGEST_BASE_URL": self.server.url,
                                "WORKER_ID": name, "STEP_LOG": str(self.step_log),
                                **self.worker_env, **env})
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.acceptance.inngest_py_connect_app"], cwd=ROOT,
            env=full_env, stdout=log, stderr=subprocess.STDOUT)
        worker = Worker(name, process, log, log_path)
        self.workers.append(worker)
        return worker

    def connections(self) -> list[dict[str, Any]]:
        for app in self.api.apps():
            if app["app_id"] == APP and app["status"] == "synced":
                return list(app["connections"])
        return []

    def connected(self, count: int = 1) -> list[dict[str, Any]]:
        """Wait until the app is synced and ``count`` of its workers' connections are live."""
        def ready() -> list[dict[str, Any]] | None:
            live = [c for c in self.connections() if c["status"] == "ready"]
            return live if len(live) >= count else None

        return wait_for(ready, timeout=30, what=f"{count} Connect worker(s) to be ready",
                        logs=self.logs)


@contextlib.contextmanager
def running_stack(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
                  keys: ProductionKeys | None = None) -> Iterator[ConnectStack]:
    """``start_stack``, and its workers and server stopped at the end."""
    stack = start_stack(tmp_path, *args, env=env, keys=keys)
    try:
        yield stack
    finally:
        for worker in stack.workers:
            worker.stop()
        stop_server(stack.server)


@pytest.fixture
def connect_stack(tmp_path: Path) -> Iterator[ConnectStack]:
    with running_stack(tmp_path) as stack:
        yield stack


def start_stack(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
                keys: ProductionKeys | None = None) -> ConnectStack:
    """``tidings dev`` (or, given production keys, ``tidings serve`` on their database) whose
    gateway listens on a free port (the one its start answer names)."""
    if keys is None:
        server = start_server(tmp_path, "--db", str(tmp_path / "dev.db"), "--no-discovery",
                              "--retry-interval", "0.2", *args, env=env)
        return ConnectStack(server, gateway_port(server.url), tmp_path, [])
    server = start_server(tmp_path, "--db", keys.db, "--env", "production", "--retry-interval",
                          "0.2", *args, env={**keys.env, **(env or {})}, command="serve")
    port = gateway_port(server.url, {"authorization": f"Bearer {keys.signing_key}"})
    worker_env = {"INNGEST_DEV": "0", "INNGEST_SIGNING_KEY": keys.signing_key}
    return ConnectStack(server, port, tmp_path, [], worker_env, keys.api_key, keys.event_key,
                        keys)


def gateway_port(url: str, headers: dict[str, str] | None = None) -> int:
    answer = httpx.post(f"{url}/v0/connect/start", headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    start = pb.StartResponse()
    start.ParseFromString(answer.content)
    port = urlsplit(start.gateway_endpoint).port
    assert port is not None, start.gateway_endpoint
    return port
