"""The ``tidings`` command: run the server, manage keys, send and list events."""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Column, Table

from tidings.core import keyring_for
from tidings.crypto import new_key_text, save_dev_keyring
from tidings.durations import to_ms
from tidings.errors import ConfigError, TidingsError
from tidings.ids import now_ms
from tidings.keys import CACHE_SECONDS, create_key
from tidings.runs.model import STATUSES
from tidings.runs.store import REPLAYABLE
from tidings.sdk.client import DEFAULT_BASE_URL, Event, Tidings
from tidings.settings import MIB, Load, Mode, Settings, database_url_from, parse_size
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


def _settings(mode: Mode, db: str | None, *, load: Load | None = None,
              allow_app_hosts: tuple[str, ...] = ()) -> Settings:
    return Settings(mode=mode, database_url=database_url_from(db, data_dir=DATA_DIR),
                    data_dir=DATA_DIR, load=load or Load(),
                    allow_app_hosts=_host_list(allow_app_hosts))


def _host_list(values: tuple[str, ...]) -> tuple[str, ...]:
    """``--allow-app-host`` values (or TIDINGS_ALLOW_APP_HOSTS, commas or spaces between),
    checked here so that a typo stops the start with a clear message."""
    from tidings.netguard import Policy

    hosts = tuple(h for value in values for h in value.replace(",", " ").split())
    Policy.build(hosts)
    return hosts


allow_host_option = click.option(
    "--allow-app-host", "allow_app_hosts", multiple=True, metavar="CIDR|HOST",
    envvar="TIDINGS_ALLOW_APP_HOSTS",
    help="Let calls to SDK apps reach this network, address or host name (*.domain too), "
         "although it is not public: outside dev, loopback, private, link-local, multicast "
         "and unspecified addresses are refused (repeatable; env TIDINGS_ALLOW_APP_HOSTS, "
         "comma-separated).")

_SECONDS = click.FloatRange(min=0, min_open=True)
# The admission-control and slow-client settings (``Load``): field, type, metavar, help.
_LOAD_FIELDS = [
    ("max_connections", click.IntRange(1), "N",
     "Open connections; the requests of newer ones get 503."),
    ("max_inflight_bytes", str, "SIZE",
     "Request bodies being read or handled at once (k, M, G suffixes); beyond: 503."),
    ("max_inflight_requests", click.IntRange(1), "N",
     "Requests with a body being handled at once; beyond: 503."),
    ("max_write_backlog", click.IntRange(1), "ROWS",
     "Rows waiting for the database, at most; beyond, events get 503."),
    ("max_write_wait", _SECONDS, "SECONDS",
     "How long the rows waiting for the database may take to store, at the rate they are "
     "stored; beyond, events get 503."),
    ("retry_after", click.IntRange(0), "SECONDS", "Retry-After of every 503."),
    ("keepalive", _SECONDS, "SECONDS", "Idle connections (new ones too) are closed after this."),
    ("header_timeout", _SECONDS, "SECONDS",
     "A request's headers must arrive within this; else 408 and closed."),
    ("body_timeout", _SECONDS, "SECONDS",
     "A request's body must arrive within this after its headers; else 408 and closed."),
]


def _load_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The ``Load`` options (``--max-write-wait``, env ``TIDINGS_MAX_WRITE_WAIT`` …), handed
    to the command as ``load``."""

    @functools.wraps(fn)
    def command(**kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name, _, _, _ in _LOAD_FIELDS}
        values["max_inflight_bytes"] = parse_size(values["max_inflight_bytes"])
        return fn(load=Load(**values), **kwargs)

    defaults = Load()
    for name, kind, metavar, text in reversed(_LOAD_FIELDS):
        default = getattr(defaults, name)
        if name == "max_inflight_bytes":
            default = f"{default // MIB}MiB"
        command = click.option(f"--{name.replace('_', '-')}", name, type=kind, metavar=metavar,
                               envvar=f"TIDINGS_{name.upper()}", default=default,
                               show_default=True, help=text)(command)
    return command


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


def _connect_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Where the Connect gateway listens and what workers are told, handed to the command as
    ``connect``: a ``ConnectSettings`` without its host (``_serve`` adds it)."""

    @functools.wraps(fn)
    def command(connect_gateway_port: int | None, connect_gateway_url: str | None,
                **kwargs: Any) -> Any:
        from tidings.settings import ConnectSettings

        connect = ConnectSettings(gateway_port=connect_gateway_port,
                                  gateway_port_given=connect_gateway_port is not None,
                                  gateway_url=connect_gateway_url or None,
                                  lease_seconds=ConnectSettings.lease_from_env())
        return fn(connect=connect, **kwargs)

    command = click.option(
        "--connect-gateway-url", metavar="URL", envvar="TIDINGS_CONNECT_GATEWAY_URL",
        help="The WebSocket URL Connect workers are told to dial (default: "
             "ws://<the host they asked>:<gateway port>/v0/connect).")(command)
    return click.option(
        "--connect-gateway-port", type=click.IntRange(0, 65535), metavar="PORT",
        envvar="TIDINGS_CONNECT_GATEWAY_PORT",
        help="Where Connect workers' WebSockets are taken  [default: the API port + 1]")(command)


def _serve(settings: Settings, host: str, port: int, apps: tuple[str, ...] = (),
           env: str = "dev", retry_interval: float | None = None, watch: Any = None,
           http: bool = True, connect: Any = None) -> None:
    import dataclasses

    import uvicorn

    from tidings.server import create_app
    from tidings.settings import ConnectSettings

    connect = connect or ConnectSettings()
    settings = dataclasses.replace(settings, connect=dataclasses.replace(
        connect, gateway_host=host,
        gateway_port=port + 1 if connect.gateway_port is None else connect.gateway_port))

    dead: list[str] = []

    def stop(why: str) -> None:
        # A loop died for good: stop serving, and exit with an error (below) so that the
        # process's supervisor starts a new one.
        dead.append(why)
        server.should_exit = True

    app = create_app(settings, apps=_load_apps(apps), env=env,
                     engine=_engine(retry_interval=retry_interval), watch=watch, http=http,
                     on_dead=stop)
    where = _safe_url(settings.database_url)
    console.print(f"[bold]Tidings {settings.mode}[/] on http://{host}:{port}  (db: {where})")
    from tidings.server.protocol import protocol_for

    load = settings.load
    # The protocol adds the deadlines and the connection limit uvicorn lacks (its own
    # keep-alive timer is left at least as long, so that ours decides).
    config = uvicorn.Config(app, host=host, port=port, loop="uvloop", http=protocol_for(load),
                            timeout_keep_alive=math.ceil(load.keepalive), lifespan="on",
                            access_log=False, log_level="warning")
    server = uvicorn.Server(config)
    # What is loaded by now lives as long as the process: keep the collector from walking it
    # again and again under load.
    gc.freeze()
    server.run()
    if dead:
        _died(dead)
    if not server.started:
        sys.exit(1)


def _died(dead: list[str]) -> None:
    console.print(f"[bold red]Tidings stopped:[/] {escape(dead[0])}", highlight=False)
    sys.exit(1)


retry_option = click.option(
    "--retry-interval", type=float, default=None, metavar="SECONDS",
    help="Retry failed steps and runs every N seconds instead of the backoff table.")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8288, show_default=True, type=int)
@db_option
@app_option
@retry_option
@click.option("-u", "--sdk-url", "sdk_urls", multiple=True, metavar="URL",
              help="An Inngest SDK app to sync and keep synced, e.g. "
                   "http://127.0.0.1:3000/api/inngest (repeatable).")
@click.option("--no-discovery", is_flag=True,
              help="Do not look for SDK apps on the usual local ports.")
@click.option("--poll-interval", type=float, default=5.0, show_default=True, metavar="SECONDS",
              help="How often SDK apps are synced again.")
@_load_options
@_connect_options
def dev(host: str, port: int, db: str | None, apps: tuple[str, ...],
        retry_interval: float | None, sdk_urls: tuple[str, ...], no_discovery: bool,
        poll_interval: float, load: Load, connect: Any) -> None:
    """Run a development server: SQLite under ./.tidings, any event key accepted.

    With ``-a module:client`` the client's functions run in this process; apps written with
    the Inngest SDKs (``INNGEST_DEV=1``) are synced from ``-u URL`` or found on local ports.
    """
    from tidings.server.app import AppWatch

    watch = AppWatch(urls=sdk_urls, discover=not no_discovery, interval=poll_interval,
                     own_port=port)
    _serve(_settings("dev", db, load=load), host, port, apps, retry_interval=retry_interval,
           watch=watch, connect=connect)


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=8288, show_default=True, type=int)
@db_option
@app_option
@env_option
@retry_option
@click.option("--http/--no-http", "http", default=True, show_default=True,
              help="Call the functions of Inngest SDK apps in this process; with --no-http "
                   "`tidings worker`s make those calls.")
@allow_host_option
@_load_options
@_connect_options
def serve(host: str, port: int, db: str | None, apps: tuple[str, ...], env: str,
          retry_interval: float | None, http: bool, allow_app_hosts: tuple[str, ...],
          load: Load, connect: Any) -> None:
    """Run a production server: keys required, TIDINGS_ENCRYPTION_KEY required.

    Inngest SDK apps sync with their environment's signing key (``tidings keys
    create-signing``), through ``POST /v1/apps/sync`` or a ``PUT`` to the app. Their URLs
    must be public addresses unless --allow-app-host allows others.
    """
    if not (db or os.environ.get("TIDINGS_DATABASE_URL")):
        raise click.UsageError("tidings serve needs --db URL or TIDINGS_DATABASE_URL")
    settings = _settings("serve", db, load=load, allow_app_hosts=allow_app_hosts)
    keyring_for(settings)  # fail here, with a clear message, rather than in the server's start
    _serve(settings, host, port, apps, env, retry_interval=retry_interval, http=http,
           connect=connect)


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
    """Revoke a key by id. On PostgreSQL every server stops accepting it at once; on SQLite a
    server in another process does within 1 s (docs/HTTP_API.md)."""
    if not _with_storage(db, lambda s: s.revoke_key(key_id)):
        raise click.ClickException(f"no active key with id {key_id}")
    postgres = _settings("dev", db).database_url.startswith(("postgresql:", "postgres:"))
    when = "at once" if postgres else f"within {CACHE_SECONDS:g} s (SQLite)"
    click.echo(f"revoked {key_id}; running servers stop accepting it {when}")


def _with_signing_keys(db: str | None, fn: Callable[[Any, Any], Awaitable[T]]) -> T:
    """``fn(signing_keys, storage)`` with the master keyring of this machine."""
    from tidings.keys import SigningKeys

    serve = bool(os.environ.get("TIDINGS_ENCRYPTION_KEY"))
    keyring = keyring_for(_settings("serve" if serve else "dev", db))
    return _with_storage(db, lambda store: fn(SigningKeys(store, keyring), store))


@keys.command("create-signing")
@click.option("--env", "env", required=True, help="Environment name, e.g. production.")
@db_option
def keys_create_signing(env: str, db: str | None) -> None:
    """Create the environment's signing key for Inngest SDK apps (INNGEST_SIGNING_KEY).

    It is stored encrypted with the master key (the server signs its calls with it). A key
    that existed becomes the fallback, still accepted, until `drop-signing-fallback`: give
    apps the new key as INNGEST_SIGNING_KEY and the old one as INNGEST_SIGNING_KEY_FALLBACK.
    """
    if not env or "/" in env:
        raise click.BadParameter("an environment name is non-empty and has no '/'")

    async def create(keys: Any, store: Any) -> Any:
        return await keys.create(await store.ensure_env(env))

    created = _with_signing_keys(db, create)
    click.echo(created.current)
    note = f"signing key for environment {env!r}"
    if created.fallback:
        note += "; the previous key is now the fallback"
    click.echo(f"({note})", err=True)


@keys.command("drop-signing-fallback")
@click.option("--env", "env", required=True)
@db_option
def keys_drop_signing_fallback(env: str, db: str | None) -> None:
    """End a signing key rotation: the previous key stops being accepted."""

    async def drop(keys: Any, store: Any) -> bool:
        return bool(await keys.drop_fallback((await store.ensure_env(env)).id))

    if not _with_signing_keys(db, drop):
        raise click.ClickException(f"environment {env!r} has no fallback signing key")
    click.echo(f"the fallback signing key of {env!r} is no longer accepted")


@keys.command("new-encryption-key")
def keys_new_encryption_key() -> None:
    """Print a fresh value for TIDINGS_ENCRYPTION_KEY."""
    click.echo(new_key_text())


@keys.command("rotate-encryption")
@db_option
def keys_rotate_encryption(db: str | None) -> None:
    """Make a new master key active and re-wrap every data key and signing key with it.

    In dev the key file under ./.tidings is updated. Otherwise the new TIDINGS_ENCRYPTION_KEY
    (new key first, old keys after, so old data stays readable) is printed: set it everywhere.
    """
    from tidings.keys import SigningKeys
    from tidings.vault import UserVault

    settings = _settings("dev" if not os.environ.get("TIDINGS_ENCRYPTION_KEY") else "serve", db)
    old = keyring_for(settings)
    new = old.rotated()

    async def rewrap(store: Any) -> tuple[int, int]:
        vault = UserVault(store, old)
        await vault.open()
        return await vault.rewrap(new), await SigningKeys(store, old).rewrap(new)

    # The new keyring holds the old keys too, so it is written (or shown) before any data key
    # is re-wrapped with it: a failure half-way must not leave keys wrapped by a lost key.
    if settings.dev:
        save_dev_keyring(DATA_DIR, new)
    else:
        click.echo(new.text())
    count, signing = _with_storage(db, rewrap)
    done = f"{count} data keys and the signing keys of {signing} environments re-wrapped"
    if settings.dev:
        click.echo(f"active encryption key is now {new.active}; {done}")
        click.echo("restart running servers so that they encrypt with it", err=True)
    else:
        click.echo(f"set TIDINGS_ENCRYPTION_KEY to the line above and restart the servers "
                   f"({done})", err=True)


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


api_options = [
    click.option("--url", default=None, help=URL_HELP),
    click.option("--api-key", default=None,
                 help="API key (default TIDINGS_API_KEY; dev needs none)."),
]


def _api_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(api_options):
        fn = option(fn)
    return fn


def _api(method: str, path: str, url: str | None, api_key: str | None, *,
         params: Any = None, body: Any = None, ok: tuple[int, ...] = (200,)) -> Any:
    """``data`` of a JSON API answer of a running server; a one-line error otherwise."""
    base = (url or os.environ.get("TIDINGS_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    token = api_key or os.environ.get("TIDINGS_API_KEY")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        reply = httpx.request(method, f"{base}{path}", params=params, json=body,
                              headers=headers, timeout=30)
    except httpx.TransportError as exc:
        raise click.ClickException(f"cannot reach Tidings at {base}: {exc}") from None
    try:
        answer = reply.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or reply.status_code not in ok:
        error = answer.get("error") if isinstance(answer, dict) else None
        raise click.ClickException(f"{base} answered {reply.status_code}: "
                                   f"{error or reply.text[:200]}")
    return answer["data"]


@main.command()
@click.option("--name", default=None)
@click.option("--limit", default=20, show_default=True, type=int)
@_api_options
def events(name: str | None, limit: int, url: str | None, api_key: str | None) -> None:
    """List recent events of a running server."""
    params: dict[str, Any] = {"limit": limit}
    if name:
        params["name"] = name
    table = Table(Column("id", no_wrap=True), "name", Column("time", no_wrap=True), "data")
    for event in _api("GET", "/v1/events", url, api_key, params=params):
        table.add_row(event["id"], escape(event["name"]), event["timestamp"], _short(event["data"]))
    _print_table(table)


# -- runs and replays ----------------------------------------------------------------------------

STATUS_STYLE = {"Queued": "cyan", "Running": "blue", "Sleeping": "magenta",
                "Waiting": "magenta", "Completed": "green", "Failed": "red",
                "Cancelled": "yellow"}


@main.group(invoke_without_command=True)
@click.option("--function", "function", default=None, metavar="SLUG",
              help="Only this function's runs.")
@click.option("--status", "statuses", multiple=True, metavar="STATUS",
              type=click.Choice(STATUSES, case_sensitive=False),
              help="Only runs in this status (repeatable).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@_api_options
@click.pass_context
def runs(ctx: click.Context, function: str | None, statuses: tuple[str, ...], limit: int,
         url: str | None, api_key: str | None) -> None:
    """List recent runs of a running server, newest first; ``runs show ID`` shows one."""
    if ctx.invoked_subcommand is not None:
        return
    params: dict[str, Any] = {"limit": limit}
    if function:
        params["function"] = function
    if statuses:
        params["status"] = ",".join(statuses)
    table = Table(Column("id", no_wrap=True), "function", "status",
                  Column("created", no_wrap=True), Column("took", justify="right"),
                  "result")
    for run in _api("GET", "/v1/runs", url, api_key, params=params):
        result = _short(run["output"]) if run["status"] == "Completed" else _error(run["error"])
        table.add_row(run["id"], escape(run["function"]), _status(run),
                      _clock(run["created_at"]), _took(run["started_at"], run["ended_at"]),
                      result)
    _print_table(table)


@runs.command("show")
@click.argument("run_id")
@_api_options
def runs_show(run_id: str, url: str | None, api_key: str | None) -> None:
    """One run: status, result, the step timeline and what it waits for."""
    run = _api("GET", f"/v1/runs/{run_id}", url, api_key)
    console.print(f"[bold]Run {run['id']}[/]  {escape(run['function'])}")
    event = run["event"] or {}
    facts = [("status", _status(run)),
             ("event", f"{escape(event.get('name', '?'))}  {run['event_id']}"),
             ("created", _clock(run["created_at"])), ("started", _clock(run["started_at"])),
             ("ended", _clock(run["ended_at"])),
             ("took", _took(run["started_at"], run["ended_at"])),
             ("output", _short(run["output"], 200) if run["status"] == "Completed" else ""),
             ("error", _error(run["error"])),
             ("next call", _clock(run["due_at"]) if not run["pauses"] else ""),
             ("rerun of", run["rerun_of"] or ""), ("replay", run["replay_id"] or ""),
             ("invoked by", run["parent_run_id"] or "")]
    grid = Table.grid(padding=(0, 2))
    for label, value in facts:
        if value:
            grid.add_row(f"[dim]{label}[/]", value)
    console.print(grid)
    if run["steps"]:
        steps = Table("#", "step", "status", Column("attempts", justify="right"),
                      Column("started", no_wrap=True), Column("ended", no_wrap=True),
                      Column("took", justify="right"), "output", title="Steps",
                      title_justify="left")
        for number, step in enumerate(run["steps"], start=1):
            took = "" if step["duration_ms"] is None else _duration(step["duration_ms"])
            steps.add_row(str(number), escape(step["name"]), step["status"],
                          str(step["attempts"]),
                          _clock(step["started_at"]), _clock(step["ended_at"]), took,
                          _short(step["output"]))
        _print_table(steps)
    for pause in run["pauses"]:
        console.print(f"[magenta]waiting[/] {_pause(pause)}")


@main.command()
@click.option("--function", "function", required=True, metavar="SLUG")
@click.option("--since", required=True, metavar="TIME",
              help="Runs created at or after: ISO-8601 with offset, ms, or an age like 2h.")
@click.option("--until", default=None, metavar="TIME", help="Runs created before (default now).")
@click.option("--status", "statuses", multiple=True, required=True, metavar="STATUS",
              type=click.Choice(REPLAYABLE, case_sensitive=False),
              help="Rerun runs that ended in this status (repeatable).")
@_api_options
def replay(function: str, since: str, until: str | None, statuses: tuple[str, ...],
           url: str | None, api_key: str | None) -> None:
    """Rerun every run of a function created in a time range that ended in these statuses."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    body = {"function": function, "since": _moment(since, "--since"),
            "until": _moment(until, "--until") if until else now_ms(), "statuses": statuses}
    started = _api("POST", "/v1/replays", url, api_key, body=body, ok=(201, 202))
    console.print(f"replay {started['id']}: {started['total']} runs of {function} to rerun")
    state = started
    with Progress(TextColumn("rerunning"), BarColumn(), MofNCompleteColumn(),
                  console=console) as progress:
        bar = progress.add_task("replay", total=state["total"], completed=state["created"])
        while not state["done"]:
            time.sleep(0.2)  # a person watches this: five looks a second are plenty
            state = _api("GET", f"/v1/replays/{started['id']}", url, api_key)
            progress.update(bar, completed=state["created"])
    console.print(f"replay {state['id']} done: {state['created']} of {state['total']} runs "
                  "queued again")


def _moment(text: str, option: str) -> int | str:
    """Milliseconds for ms or an age (``90m`` ago); ISO-8601 text as it is (the server reads
    it and says what is wrong with it)."""
    if text.isdigit():
        return int(text)
    try:
        return now_ms() - to_ms(text)
    except ConfigError:
        if text[:1].isdigit() and "-" in text:
            return text
        raise click.BadParameter(f"{text!r}: an ISO-8601 time, milliseconds or an age like "
                                 "2h", param_hint=option) from None


def _status(run: dict[str, Any]) -> str:
    status = run["status"]
    extra = f" (attempt {run['attempt'] + 1})" if run["attempt"] else ""
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]{extra}"


def _pause(pause: dict[str, Any]) -> str:
    until, name = _clock(pause["until"]), escape(repr(pause["name"]))
    if pause["kind"] == "sleep":
        return f"sleep {name} until {until}"
    if pause["kind"] == "invoke":
        return f"invoked run {pause['invoked_run_id']} ({name}) until {until}"
    condition = f" if {escape(pause['condition'])}" if pause["condition"] else ""
    return f"event {escape(pause['event'] or '')}{condition} ({name}) until {until}"


def _error(error: Any) -> str:
    if not isinstance(error, dict):
        return _short(error, 200) if error is not None else ""
    name, message = escape(str(error.get("name", "Error"))), escape(str(error.get("message", "")))
    return f"[red]{name}[/]: {message}"


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return escape(text if len(text) <= width else text[:width - 1] + "…")


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _clock(text: str | None) -> str:
    return "" if text is None else _parse_iso(text).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _took(start: str | None, end: str | None) -> str:
    if start is None or end is None:
        return ""
    return _duration(int((_parse_iso(end) - _parse_iso(start)).total_seconds() * 1000))


def _duration(ms: int) -> str:
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(ms // 1000, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


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
@click.argument("apps", nargs=-1, metavar="[MODULE:CLIENT...]")
@db_option
@click.option("--env", default=None, help="Environment of the clients' functions (default: "
              "dev for SQLite, else production).")
@click.option("--http/--no-http", "http", default=None,
              help="Also call the functions of Inngest SDK apps (queue http), signed with "
                   "their environments' keys. Default: on when no MODULE:CLIENT is given.")
@click.option("--concurrency", default=100, show_default=True, type=int,
              help="Calls in flight at once.")
@click.option("--retry-interval", type=float, default=None, metavar="SECONDS")
@click.option("--grace", default=30.0, show_default=True, type=float,
              help="Seconds in-flight calls get to finish on SIGTERM before being handed back.")
@allow_host_option
def worker(apps: tuple[str, ...], db: str | None, env: str | None, http: bool | None,
           concurrency: int, retry_interval: float | None, grace: float,
           allow_app_hosts: tuple[str, ...]) -> None:
    """Run functions against a shared database, next to any number of servers and workers.

    With MODULE:CLIENT arguments it runs those clients' native functions (add --http to take
    calls to Inngest SDK apps too); without, it calls the functions of the SDK apps synced
    with the servers. Outside dev (TIDINGS_ENCRYPTION_KEY set) those calls are signed.
    """
    import signal

    from tidings.core import Core
    from tidings.engine.runtime import Runtime

    calls_apps = not apps if http is None else http
    if not apps and not calls_apps:
        raise click.UsageError("nothing to run: give MODULE:CLIENT or leave out --no-http")
    clients = _load_apps(apps)
    settings = _settings("serve" if os.environ.get("TIDINGS_ENCRYPTION_KEY") else "dev", db,
                         allow_app_hosts=allow_app_hosts)
    name = env or ("dev" if settings.database_url.startswith("sqlite") else "production")
    what = [*apps, *(["SDK apps (queue http)"] if calls_apps else [])]

    async def run() -> None:
        # Handlers first: a SIGTERM while the database is still opening stops the worker
        # cleanly once it has started, rather than killing it half-way.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def died(why: str) -> None:
            dead.append(why)
            stop.set()

        core = await Core.start(settings, on_dead=died)
        runtime = Runtime(core, clients, env=name, http=calls_apps,
                          settings=_engine(retry_interval=retry_interval,
                                           concurrency=concurrency))
        await runtime.start()
        console.print(f"[bold]Tidings worker[/] {', '.join(what)} (env {name}, "
                      f"db {_safe_url(settings.database_url)})")
        await stop.wait()
        try:
            await runtime.stop(grace)
            await core.close()
        except Exception:
            if not dead:
                raise  # a dead storage cannot release leases: they expire

    dead: list[str] = []
    _run(run)
    if dead:
        _died(dead)
