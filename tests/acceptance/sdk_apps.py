"""Helpers for the scenarios that run apps written with the official Inngest SDKs against a live
Tidings: start an app in a subprocess on loopback, wait (with a deadline) for what the server
reports, read runs back through ``/v1``."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import httpx

from tests.conftest import ROOT, LiveServer, free_port, start_server, stop_server

T = TypeVar("T")
TERMINAL = ("Completed", "Failed", "Cancelled")


@dataclass
class AppProcess:
    url: str  # the SDK endpoint, http://127.0.0.1:PORT/api/inngest
    port: int
    process: subprocess.Popen[bytes]
    log: BinaryIO
    log_path: Path

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any INNGEST_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INNGEST_")}
    return {**env, **extra}


def start_app(tmp_path: Path, command: Sequence[str], env: dict[str, str], *,
              port: int | None = None, name: str = "app", cwd: Path = ROOT,
              host: str = "127.0.0.1") -> AppProcess:
    """Start an SDK app (``command`` gets ``{port}`` and ``{host}`` filled in) and wait until
    it answers."""
    port = port or free_port()
    log_path = tmp_path / f"{name}.log"
    log = open(log_path, "ab")  # noqa: SIM115
    process = subprocess.Popen([part.format(port=port, host=host) for part in command],
                               cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    app = AppProcess(f"http://{host}:{port}/api/inngest", port, process, log, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stop_app(app)
            raise RuntimeError(f"{name} exited: {app.output()}")
        try:
            httpx.get(app.url, timeout=1)
            return app
        except httpx.TransportError:
            time.sleep(0.05)
    stop_app(app)
    raise RuntimeError(f"{name} did not answer within 30 s: {app.output()}")


@contextlib.contextmanager
def dev_stack(tmp_path: Path, command: Sequence[str], *, name: str, cwd: Path = ROOT,
              app_env: dict[str, str] | None = None, server_args: Sequence[str] = (),
              server_env: dict[str, str] | None = None,
              ) -> Iterator[tuple[LiveServer, AppProcess, dict[str, str]]]:
    """An SDK app (``command``, as for ``start_app``) in dev mode, and a ``tidings dev -u`` on
    a free port that syncs it: the server, the app and the app's environment; both stopped
    afterwards."""
    server_port = free_port()
    env = clean_env(INNGEST_DEV="1", INNGEST_BASE_URL=f"http://127.0.0.1:{server_port}",
                    **(app_env or {}))
    app = start_app(tmp_path, command, env, name=name, cwd=cwd)
    try:
        server = start_server(tmp_path, "--db", str(tmp_path / "dev.db"), "-u", app.url,
                              "--no-discovery", "--retry-interval", "0.2", *server_args,
                              port=server_port, env=server_env)
    except BaseException:
        stop_app(app)
        raise
    try:
        yield server, app, env
    finally:
        stop_server(server)
        stop_app(app)


def uvicorn_app(module: str) -> list[str]:
    """The command that serves ``module``'s ``app`` under uvicorn (for ``start_app``)."""
    return [sys.executable, "-m", "uvicorn", f"{module}:app", "--host", "{host}", "--port",
            "{port}", "--log-level", "warning"]


def start_py_app(tmp_path: Path, env: dict[str, str], *, port: int | None = None,
                 name: str = "py-app", host: str = "127.0.0.1") -> AppProcess:
    return start_app(tmp_path, uvicorn_app("tests.acceptance.inngest_py_app"), env, port=port,
                     name=name, host=host)


def outward_address() -> str | None:
    """An address of this machine other than loopback (the one its default route leaves
    from), or None. Connecting a UDP socket sends nothing."""
    import ipaddress
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only the route is looked up
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if ipaddress.ip_address(address).is_loopback else address


def stop_app(app: AppProcess) -> None:
    if app.process.poll() is None:
        app.process.terminate()
        try:
            app.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            app.process.kill()
            app.process.wait()
    app.log.close()


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str,
             logs: Callable[[], str] | None = None) -> T:
    """Poll ``check`` until it returns something other than None, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}"
                                 + (f"\n--- logs ---\n{logs()}" if logs else ""))
        time.sleep(0.1)


class Api:
    """The server's ``/v1`` API as the tests read it."""

    def __init__(self, url: str, api_key: str | None = None, *,
                 branch: str | None = None) -> None:
        self.url = url
        self.headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        if branch is not None:
            self.headers["x-inngest-env"] = branch

    def get(self, path: str, **params: Any) -> Any:
        answer = httpx.get(f"{self.url}{path}", params=params, headers=self.headers, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()["data"]

    def post(self, path: str, body: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, headers=self.headers, timeout=60)

    def apps(self) -> list[dict[str, Any]]:
        apps: list[dict[str, Any]] = self.get("/v1/apps")
        return apps

    def synced(self, app_url: str) -> dict[str, Any] | None:
        for app in self.apps():
            if app["url"] == app_url and app["status"] == "synced":
                return app
        return None

    def run(self, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self.get(f"/v1/runs/{run_id}")
        return run

    def runs_of(self, event_id: str) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self.get(f"/v1/events/{event_id}/runs")
        return runs

    def runs(self, function: str) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self.get("/v1/runs", function=function, limit=100)
        return runs

    def run_of(self, event_id: str, function: str, *, timeout: float = 30) -> dict[str, Any]:
        def started() -> dict[str, Any] | None:
            return next((r for r in self.runs_of(event_id) if r["function"] == function), None)

        return wait_for(started, timeout=timeout, what=f"a run of {function}")

    def finished(self, run_id: str, *, timeout: float = 60,
                 logs: Callable[[], str] | None = None) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            run = self.run(run_id)
            return run if run["status"] in TERMINAL else None

        return wait_for(done, timeout=timeout, what=f"run {run_id} to end", logs=logs)


class Proxy:
    """A reverse proxy on loopback in front of an app. It keeps the headers of the calls
    (``POST``) it forwards and, given ``rewrite``, puts that in place of the body of the app's
    ``200`` answers to them, keeping the app's signature: what a man in the middle would do.
    Everything else passes through untouched (the ``Host`` header too, so an SDK synced through
    the proxy registers the proxy's URL)."""

    def __init__(self, upstream: str, rewrite: bytes | None = None) -> None:
        import http.server
        import threading

        proxy = self
        self.upstream = upstream.rstrip("/")
        self.rewrite = rewrite
        self.tampered = 0
        self.calls: list[dict[str, str]] = []
        self._http = httpx.Client(timeout=60)

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                size = int(self.headers.get("content-length") or 0)
                content = self.rfile.read(size) if size else b""
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("content-length", "connection")}
                reply = proxy._http.request(self.command, proxy.upstream + self.path,
                                            content=content, headers=headers)
                body = reply.content
                if self.command == "POST":
                    proxy.calls.append({k.lower(): v for k, v in self.headers.items()})
                    if proxy.rewrite is not None and reply.status_code == 200:
                        body = proxy.rewrite
                        proxy.tampered += 1
                self.send_response(reply.status_code)
                for key, value in reply.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection",
                                           "content-encoding", "date", "server"):
                        self.send_header(key, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_POST = _forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._http.close()


def stored(server: LiveServer, event_id: str) -> dict[str, Any]:
    """The event ``GET /v1/events/{id}`` shows."""
    answer = httpx.get(f"{server.url}/v1/events/{event_id}", timeout=10)
    assert answer.status_code == 200, answer.text
    record: dict[str, Any] = answer.json()["data"]
    return record


def listed(server: LiveServer, name: str) -> list[dict[str, Any]]:
    """The events named ``name`` that ``GET /v1/events`` lists (up to 100)."""
    answer = httpx.get(f"{server.url}/v1/events", params={"name": name, "limit": 100}, timeout=10)
    assert answer.status_code == 200, answer.text
    records: list[dict[str, Any]] = answer.json()["data"]
    return records


def listed_ids(server: LiveServer, name: str) -> list[str]:
    return [record["id"] for record in listed(server, name)]


NODE_DIR = ROOT / "tests" / "node"


def node_binary() -> str:
    """The ``node`` binary, once the pinned ``inngest`` package is installed (``make node``)."""
    import json
    import shutil

    import pytest

    found = shutil.which("node")
    if found is None:
        pytest.fail("Node.js (the `node` binary) is required by the node acceptance tests")
    pinned = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]["inngest"]
    installed = NODE_DIR / "node_modules" / "inngest" / "package.json"
    if not installed.exists():
        pytest.fail(f"{installed} is missing: run `make node` (npm ci in tests/node)")
    version = json.loads(installed.read_text())["version"]
    if version != pinned:
        pytest.fail(f"tests/node has inngest {version} installed but pins {pinned}: "
                    "run `make node`")
    return found


@dataclass
class ProductionKeys:
    """A ``tidings serve`` database with an environment ``production`` and its keys."""

    db: str
    env: dict[str, str]  # what the server and the CLI need (TIDINGS_ENCRYPTION_KEY)
    signing_key: str
    event_key: str
    api_key: str


def tidings_cli(tmp_path: Path, env: dict[str, str], *args: str) -> str:
    from tests.conftest import TIDINGS

    done = subprocess.run([TIDINGS, *args], cwd=tmp_path, env=clean_env(**env),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def production_keys(tmp_path: Path, db: str | None = None) -> ProductionKeys:
    """Keys of environment ``production`` in ``db`` (default: a new SQLite file)."""
    from tidings.crypto import new_key_text

    db = db or str(tmp_path / "prod.db")
    # The apps run on loopback, which serve (and its workers) only call when allowed.
    env = {"TIDINGS_ENCRYPTION_KEY": new_key_text(), "TIDINGS_DATA_DIR": str(tmp_path / "d"),
           "TIDINGS_ALLOW_APP_HOSTS": "127.0.0.1"}
    signing_key = tidings_cli(tmp_path, env, "keys", "create-signing", "--env", "production",
                              "--db", db)
    event_key = tidings_cli(tmp_path, env, "keys", "create", "--env", "production", "--db", db)
    api_key = tidings_cli(tmp_path, env, "keys", "create", "--env", "production", "--kind",
                          "api", "--db", db)
    return ProductionKeys(db, env, signing_key, event_key, api_key)
