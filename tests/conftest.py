"""Shared fixtures: real SQLite files, real PostgreSQL schemas, the app over ASGI, and a live
``tidings dev`` process on a loopback port."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx
import psycopg
import pytest

from tidings.core import Core
from tidings.crypto import new_key_text
from tidings.server import create_app
from tidings.settings import Mode, Settings
from tidings.storage import Storage, storage_for

PG_URL = os.environ.get("TIDINGS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
UNDER_CI = os.environ.get("CI", "").lower() not in ("", "0", "false")
ROOT = Path(__file__).resolve().parent.parent
TIDINGS = str(Path(sys.executable).parent / "tidings")


def _postgres_or_skip() -> str:
    try:
        with psycopg.connect(PG_URL, connect_timeout=3):
            pass
    except psycopg.Error as exc:
        if UNDER_CI:
            pytest.fail(f"PostgreSQL is required under CI and unreachable at {PG_URL}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {PG_URL}")
    return PG_URL


@contextlib.contextmanager
def fresh_schema() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards (for fixtures
    of any scope)."""
    base = _postgres_or_skip()
    schema = "t_" + secrets.token_hex(6)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    with fresh_schema() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tidings.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tidings.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def storage(db_url: str) -> AsyncIterator[Storage]:
    store = storage_for(db_url)
    await store.open()
    yield store
    await store.close()


def make_settings(db_url: str, tmp_path: Path, mode: Mode = "dev", **extra: object) -> Settings:
    return Settings(mode=mode, database_url=db_url, data_dir=tmp_path / "data",
                    encryption_key=new_key_text() if mode == "serve" else None,
                    **extra)  # type: ignore[arg-type]


@pytest.fixture
async def core(db_url: str, tmp_path: Path) -> AsyncIterator[Core]:
    running = await Core.start(make_settings(db_url, tmp_path))
    yield running
    await running.close()


@pytest.fixture
async def client(core: Core) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in-process (dev mode)."""
    app = create_app(core.settings, core)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings") as http:
        yield http


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: BinaryIO


def start_server(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
                 command: str = "dev", port: int | None = None,
                 executable: str = TIDINGS) -> LiveServer:
    """Start ``tidings dev`` (or serve) in a subprocess and wait until /health answers."""
    port = port or free_port()
    if command in ("dev", "serve") and "--connect-gateway-port" not in args:
        # The default (the API port + 1) may be another test's: any free port.
        args = (*args, "--connect-gateway-port", "0")
    data_dir = tmp_path / "server"
    data_dir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "TIDINGS_DATA_DIR": str(data_dir), **(env or {})}
    log = open(data_dir / "server.log", "ab")  # noqa: SIM115
    host = ["--host", "127.0.0.1"]
    process = subprocess.Popen(
        [executable, command, *host, "--port", str(port), *args],
        cwd=tmp_path, env=full_env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.close()
            raise RuntimeError(f"tidings {command} exited: {(data_dir / 'server.log').read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return LiveServer(url, port, data_dir, process, log)
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    process.wait()
    log.close()
    raise RuntimeError("tidings did not answer /health within 30 s")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it is still running after ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_server(server: LiveServer) -> None:
    stop_process(server.process)
    server.log.close()


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A real ``tidings dev`` process with SQLite in a temporary folder."""
    server = start_server(tmp_path, "--db", str(tmp_path / "live.db"))
    yield server
    stop_server(server)
