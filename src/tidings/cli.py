"""The ``tidings`` command: run the server, manage keys, send and list events."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx
from rich.console import Console
from rich.measure import Measurement
from rich.table import Column, Table

from tidings.core import keyring_for
from tidings.crypto import new_key_text, save_dev_keyring
from tidings.errors import TidingsError
from tidings.keys import create_key
from tidings.sdk.client import DEFAULT_BASE_URL, Event, Tidings
from tidings.settings import Mode, Settings, database_url_from
from tidings.storage import storage_for

T = TypeVar("T")
console = Console()
DATA_DIR = Path(os.environ.get("TIDINGS_DATA_DIR", ".tidings"))

app_option = click.option("-a", "--app", "apps", multiple=True, metavar="MODULE:CLIENT",
                          help="A tidings.Tidings client whose functions run here (repeatable).")
env_option = click.option("--env", default="production", show_default=True,
                          help="Environment the native functions belong to.")
URL_HELP = f"Server (default TIDINGS_BASE_URL or {DEFAULT_BASE_URL})."
db_option = click.option("--db", "db", default=None, metavar="PATH_OR_URL",
                         help="sqlite:///path, a plain path, or postgresql://... "
                              "(default: TIDINGS_DATABASE_URL, else ./.tidings/tidings.db)")


def _settings(mode: Mode, db: str | None) -> Settings:
    return Settings(mode=mode, database_url=database_url_from(db, data_dir=DATA_DIR),
                    data_dir=DATA_DIR)


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(fn())  # type: ignore[arg-type]


class _Group(click.Group):
    """Every ``TidingsError`` of every command ends as one ``Error: ...`` line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TidingsError as exc:
            raise click.ClickException(exc.message) from None


@click.group(cls=_Group)
@click.version_option(package_name="tidings")
def main() -> None:
    """Tidings: events in, durable functions out."""


def _print_table(table: Table) -> None:
    """Print a table whole: piped output is as wide as the table, not cut at 80 columns."""
    out = console
    if not console.is_terminal:
        needed = Measurement.get(console, console.options.update_width(1000), table).maximum
        out = Console(width=max(console.width, needed))
    out.print(table)


def _serve(settings: Settings, host: str, port: int, apps: tuple[str, ...] = (),
           env: str = "dev", retry_interval: float | None = None) -> None:
    import uvicorn

    from tidings.server import create_app

    app = create_app(settings, apps=_load_apps(apps), env=env,
                     engine=_engine(retry_interval=retry_interval))
    where = _safe_url(settings.database_url)
    console.print(f"[bold]Tidings {settings.mode}[/] on http://{host}:{port}  (db: {where})")
    config = uvicorn.Config(app, host=host, port=port, loop="uvloop", http="httptools",
                            lifespan="on", access_log=False, log_level="warning")
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        sys.exit(1)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8288, show_default=True, type=int)
@db_option
@app_option
@click.option("--retry-interval", type=float, default=None, metavar="SECONDS",
              help="Retry failed steps and runs every N seconds instead of the backoff table.")
def dev(host: str, port: int, db: str | None, apps: tuple[str, ...],
        retry_interval: float | None) -> None:
    """Run a development server: SQLite under ./.tidings, any event key accepted.

    With ``-a module:client`` the client's functions run in this process.
    """
    _serve(_settings("dev", db), host, port, apps, retry_interval=retry_interval)


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=8288, show_default=True, type=int)
@db_option
@app_option
@env_option
def serve(host: str, port: int, db: str | None, apps: tuple[str, ...], env: str) -> None:
    """Run a production server: keys required, TIDINGS_ENCRYPTION_KEY required."""
    if not (db or os.environ.get("TIDINGS_DATABASE_URL")):
        raise click.UsageError("tidings serve needs --db URL or TIDINGS_DATABASE_URL")
    settings = _settings("serve", db)
    keyring_for(settings)  # fail here, with a clear message, rather than in the server's start
    _serve(settings, host, port, apps, env)


@main.command()
@db_option
def migrate(db: str | None) -> None:
    """Apply pending database migrations."""
    url = _settings("dev", db).database_url
    # Opening a store applies what is pending (PostgreSQL cannot migrate before it connects).
    version = _with_storage(db, lambda s: s.schema_version())
    click.echo(f"database schema is at version {version} ({_safe_url(url)})")


@main.group()
def keys() -> None:
    """Event keys, API keys and encryption keys."""


def _with_storage(db: str | None, fn: Callable[[Any], Awaitable[T]]) -> T:
    async def run() -> T:
        store = storage_for(_settings("dev", db).database_url)
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()

    return _run(run)


@keys.command("create")
@click.option("--env", "env", required=True, help="Environment name, e.g. production.")
@click.option("--kind", type=click.Choice(["event", "api"]), default="event", show_default=True,
              help="event: sends events; api: reads through /v1.")
@db_option
def keys_create(env: str, kind: str, db: str | None) -> None:
    """Create a key; it is printed once and only its hash is stored."""
    secret, record = _with_storage(db, lambda s: create_key(s, env, kind))  # type: ignore[arg-type]
    click.echo(secret)
    click.echo(f"({kind} key {record.id} for environment {env!r}; this is the only time it is "
               "shown)", err=True)


@keys.command("list")
@db_option
def keys_list(db: str | None) -> None:
    """List keys (prefixes only)."""
    rows = _with_storage(db, lambda s: s.list_keys())
    table = Table(Column("id", no_wrap=True), "kind", "env", Column("prefix", no_wrap=True),
                  "created", "revoked")
    for key in rows:
        table.add_row(key.id, key.kind, key.env_name, key.prefix + "…", _time(key.created_at),
                      _time(key.revoked_at) if key.revoked_at else "")
    _print_table(table)


@keys.command("revoke")
@click.argument("key_id")
@db_option
def keys_revoke(key_id: str, db: str | None) -> None:
    """Revoke a key by id; servers stop accepting it within seconds."""
    if not _with_storage(db, lambda s: s.revoke_key(key_id)):
        raise click.ClickException(f"no active key with id {key_id}")
    click.echo(f"revoked {key_id}")


@keys.command("new-encryption-key")
def keys_new_encryption_key() -> None:
    """Print a fresh value for TIDINGS_ENCRYPTION_KEY."""
    click.echo(new_key_text())


@keys.command("rotate-encryption")
@db_option
def keys_rotate_encryption(db: str | None) -> None:
    """Make a new master key active and re-wrap every data key with it.

    In dev the key file under ./.tidings is updated. Otherwise the new TIDINGS_ENCRYPTION_KEY
    (new key first, old keys after, so old data stays readable) is printed: set it everywhere.
    """
    from tidings.vault import UserVault

    settings = _settings("dev" if not os.environ.get("TIDINGS_ENCRYPTION_KEY") else "serve", db)
    old = keyring_for(settings)
    new = old.rotated()

    async def rewrap(store: Any) -> int:
        vault = UserVault(store, old)
        await vault.open()
        return await vault.rewrap(new)

    # The new keyring holds the old keys too, so it is written (or shown) before any data key
    # is re-wrapped with it: a failure half-way must not leave keys wrapped by a lost key.
    if settings.dev:
        save_dev_keyring(DATA_DIR, new)
    else:
        click.echo(new.text())
    count = _with_storage(db, rewrap)
    if settings.dev:
        click.echo(f"active encryption key is now {new.active}; {count} data keys re-wrapped")
        click.echo("restart running servers so that they encrypt with it", err=True)
    else:
        click.echo(f"set TIDINGS_ENCRYPTION_KEY to the line above and restart the servers "
                   f"({count} data keys re-wrapped)", err=True)


@main.command()
@click.argument("name")
@click.option("--data", default="{}", help="JSON object.")
@click.option("--user", default=None, help="JSON object (encrypted at rest).")
@click.option("--id", "event_id", default=None, help="Idempotency key.")
@click.option("--ts", default=None, type=int, help="Milliseconds since the epoch.")
@click.option("--url", default=None, help=URL_HELP)
@click.option("--key", default=None, help="Event key (default TIDINGS_EVENT_KEY).")
def send(name: str, data: str, user: str | None, event_id: str | None, ts: int | None,
         url: str | None, key: str | None) -> None:
    """Send one event to a running server."""
    try:
        payload = json.loads(data)
        person = json.loads(user) if user else None
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    client = Tidings("cli", base_url=url, event_key=key)
    event = Event(name=name, data=payload, user=person, id=event_id, ts=ts)
    ids = _run(lambda: client.send(event))
    click.echo(ids[0])


@main.command()
@click.option("--name", default=None)
@click.option("--limit", default=20, show_default=True, type=int)
@click.option("--url", default=None, help=URL_HELP)
@click.option("--api-key", default=None, help="API key (default TIDINGS_API_KEY; dev needs none).")
def events(name: str | None, limit: int, url: str | None, api_key: str | None) -> None:
    """List recent events of a running server."""
    base = (url or os.environ.get("TIDINGS_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    token = api_key or os.environ.get("TIDINGS_API_KEY")
    params: dict[str, Any] = {"limit": limit}
    if name:
        params["name"] = name
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        reply = httpx.get(f"{base}/v1/events", params=params, headers=headers, timeout=30)
    except httpx.TransportError as exc:
        raise click.ClickException(f"cannot reach Tidings at {base}: {exc}") from None
    try:
        body = reply.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or reply.status_code != 200:
        error = body.get("error") if isinstance(body, dict) else None
        raise click.ClickException(f"{base} answered {reply.status_code}: "
                                   f"{error or reply.text[:200]}")
    table = Table(Column("id", no_wrap=True), "name", Column("time", no_wrap=True), "data")
    for event in body["data"]:
        text = json.dumps(event["data"], separators=(",", ":"), ensure_ascii=False)
        table.add_row(event["id"], event["name"], event["timestamp"],
                      text if len(text) <= 60 else text[:59] + "…")
    _print_table(table)


def _safe_url(url: str) -> str:
    """A database URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def _time(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _load_apps(specs: tuple[str, ...]) -> list[Any]:
    import importlib

    from tidings.sdk.client import Tidings as Client

    if specs and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    apps = []
    for spec in specs:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise click.BadParameter(f"cannot import {module_name!r}: {exc}") from None
        client = getattr(module, attr or "client", None)
        if not isinstance(client, Client):
            raise click.BadParameter(f"{spec!r} is not a tidings.Tidings client")
        apps.append(client)
    return apps


def _engine(*, retry_interval: float | None = None, concurrency: int | None = None) -> Any:
    from dataclasses import replace

    from tidings.engine.backoff import Backoff
    from tidings.engine.executor import EngineSettings

    settings = EngineSettings()
    lease = os.environ.get("TIDINGS_LEASE_SECONDS")
    if lease:
        lease_ms = max(500, int(float(lease) * 1000))
        settings = replace(settings, lease_ms=lease_ms, heartbeat_ms=max(100, lease_ms // 3))
    if retry_interval is not None:
        settings = replace(settings, backoff=Backoff.fixed(int(retry_interval * 1000)))
    if concurrency is not None:
        settings = replace(settings, concurrency=concurrency)
    return settings


@main.command()
@click.argument("apps", nargs=-1, required=True, metavar="MODULE:CLIENT...")
@db_option
@click.option("--env", default=None, help="Environment (default: dev for SQLite, else "
              "production).")
@click.option("--concurrency", default=100, show_default=True, type=int,
              help="Calls in flight at once.")
@click.option("--retry-interval", type=float, default=None, metavar="SECONDS")
@click.option("--grace", default=30.0, show_default=True, type=float,
              help="Seconds in-flight calls get to finish on SIGTERM before being handed back.")
def worker(apps: tuple[str, ...], db: str | None, env: str | None, concurrency: int,
           retry_interval: float | None, grace: float) -> None:
    """Run the functions of one or more clients against a shared database, without HTTP."""
    import signal

    from tidings.core import Core
    from tidings.engine.runtime import Runtime

    clients = _load_apps(apps)
    settings = _settings("serve" if os.environ.get("TIDINGS_ENCRYPTION_KEY") else "dev", db)
    name = env or ("dev" if settings.database_url.startswith("sqlite") else "production")

    async def run() -> None:
        core = await Core.start(settings)
        runtime = Runtime(core, clients, env=name,
                          settings=_engine(retry_interval=retry_interval,
                                           concurrency=concurrency))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await runtime.start()
        console.print(f"[bold]Tidings worker[/] {', '.join(apps)} (env {name}, "
                      f"db {_safe_url(settings.database_url)})")
        await stop.wait()
        await runtime.stop(grace)
        await core.close()

    _run(run)
