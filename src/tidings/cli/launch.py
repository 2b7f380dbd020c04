"""The launchers: ``tidings dev`` and ``tidings serve`` (the HTTP server, with a runtime) and
``tidings worker`` (a runtime alone), with the options they share."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import logging
import math
import os
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.markup import escape

from tidings.cli.common import (
    console,
    db_option,
    encrypt_data_option,
    run_async,
    safe_url,
    settings_for,
)
from tidings.core import keyring_for
from tidings.observe import tracing
from tidings.observe.options import observe_options
from tidings.settings import MIB, ConnectSettings, Load, Observe, Settings, parse_size
from tidings.version import VERSION

app_option = click.option("-a", "--app", "apps", multiple=True, metavar="MODULE:CLIENT",
                          help="A tidings.Tidings client whose functions run here (repeatable).")
env_option = click.option("--env", default="production", show_default=True,
                          help="Environment the native functions belong to.")
allow_host_option = click.option(
    "--allow-app-host", "allow_app_hosts", multiple=True, metavar="CIDR|HOST",
    envvar="TIDINGS_ALLOW_APP_HOSTS",
    help="Let calls to SDK apps reach this network, address or host name (*.domain too), "
         "although it is not public: outside dev, loopback, private, link-local, multicast "
         "and unspecified addresses are refused (repeatable; env TIDINGS_ALLOW_APP_HOSTS, "
         "comma-separated).")

log = logging.getLogger("tidings.cli")
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


def _connect_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Where the Connect gateway listens and what workers are told, handed to the command as
    ``connect``: a ``ConnectSettings`` without its host (``_serve`` adds it)."""

    @functools.wraps(fn)
    def command(connect_gateway_port: int | None, connect_gateway_url: str | None,
                **kwargs: Any) -> Any:
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
        help="Where Connect workers' WebSockets are taken; 0: any free port  "
             "[default: the API port + 1]")(command)


def _serve(settings: Settings, host: str, port: int, apps: tuple[str, ...] = (),
           env: str = "dev", retry_interval: float | None = None, watch: Any = None,
           http: bool = True, connect: ConnectSettings | None = None,
           grace: float = 30.0) -> None:
    import uvicorn

    from tidings.server import create_app

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
                     on_dead=stop, grace=grace)
    where = safe_url(settings.database_url)
    from dataclasses import asdict

    # Settings only: keys and the master key are never among them.
    log.info("Tidings %s on http://%s:%d (db: %s)", settings.mode, host, port, where,
             extra={"mode": settings.mode, "host": host, "port": port, "db": where, "env": env,
                    "http": http, "apps": list(apps), "version": VERSION,
                    "allow_app_hosts": list(settings.allow_app_hosts),
                    "observe": asdict(settings.observe), "load": asdict(settings.load)})
    from tidings.server.protocol import protocol_for

    load = settings.load
    # The protocol adds the deadlines and the connection limit uvicorn lacks (its own
    # keep-alive timer is left at least as long, so that ours decides).
    config = uvicorn.Config(app, host=host, port=port, loop="uvloop", http=protocol_for(load),
                            timeout_keep_alive=math.ceil(load.keepalive), lifespan="on",
                            access_log=False, log_config=None)
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


@click.command()
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
@encrypt_data_option
@click.option("--poll-interval", type=float, default=5.0, show_default=True, metavar="SECONDS",
              help="How often SDK apps are synced again.")
@_load_options
@observe_options(lambda: "text", tokens=False)
@_connect_options
def dev(host: str, port: int, db: str | None, apps: tuple[str, ...],
        retry_interval: float | None, sdk_urls: tuple[str, ...], no_discovery: bool,
        poll_interval: float, load: Load, observe: Observe, connect: ConnectSettings,
        encrypt_data: bool | None) -> None:
    """Run a development server: SQLite under ./.tidings, any event key accepted.

    With ``-a module:client`` the client's functions run in this process; apps written with
    the Inngest SDKs (``INNGEST_DEV=1``) are synced from ``-u URL`` or found on local ports.
    """
    from tidings.server.app import AppWatch

    watch = AppWatch(urls=sdk_urls, discover=not no_discovery, interval=poll_interval,
                     own_port=port)
    _serve(settings_for("dev", db, load=load, observe=observe, encrypt_data=encrypt_data),
           host, port, apps,
           retry_interval=retry_interval, watch=watch, connect=connect)


@click.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=8288, show_default=True, type=int)
@db_option
@app_option
@env_option
@retry_option
@click.option("--http/--no-http", "http", default=True, show_default=True,
              help="Call the functions of Inngest SDK apps in this process; with --no-http "
                   "`tidings worker`s make those calls.")
@click.option("--grace", default=30.0, show_default=True, type=click.FloatRange(0),
              envvar="TIDINGS_GRACE", metavar="SECONDS",
              help="Seconds in-flight calls get to finish on SIGTERM before their runs are "
                   "handed back (keep it under the orchestrator's own grace period).")
@allow_host_option
@encrypt_data_option
@_load_options
@observe_options(lambda: "json")
@_connect_options
def serve(host: str, port: int, db: str | None, apps: tuple[str, ...], env: str,
          retry_interval: float | None, http: bool, grace: float,
          allow_app_hosts: tuple[str, ...], load: Load, observe: Observe,
          connect: ConnectSettings, encrypt_data: bool | None) -> None:
    """Run a production server: keys required, TIDINGS_ENCRYPTION_KEY required.

    Inngest SDK apps sync with their environment's signing key (``tidings keys
    create-signing``), through ``POST /v1/apps/sync`` or a ``PUT`` to the app. Their URLs
    must be public addresses unless --allow-app-host allows others.
    """
    if not (db or os.environ.get("TIDINGS_DATABASE_URL")):
        raise click.UsageError("tidings serve needs --db URL or TIDINGS_DATABASE_URL")
    settings = settings_for("serve", db, load=load, allow_app_hosts=allow_app_hosts,
                            observe=observe, encrypt_data=encrypt_data)
    keyring_for(settings)  # fail here, with a clear message, rather than in the server's start
    _serve(settings, host, port, apps, env, retry_interval=retry_interval, http=http,
           connect=connect, grace=grace)


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


@click.command()
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
@observe_options(lambda: "json" if os.environ.get("TIDINGS_ENCRYPTION_KEY") else "text",
                 http=False, port=True)
def worker(apps: tuple[str, ...], db: str | None, env: str | None, http: bool | None,
           concurrency: int, retry_interval: float | None, grace: float,
           allow_app_hosts: tuple[str, ...], observe: Observe) -> None:
    """Run functions against a shared database, next to any number of servers and workers.

    With MODULE:CLIENT arguments it runs those clients' native functions (add --http to take
    calls to Inngest SDK apps too); without, it calls the functions of the SDK apps synced
    with the servers. Outside dev (TIDINGS_ENCRYPTION_KEY set) those calls are signed.
    """
    import signal
    from dataclasses import asdict

    from tidings.connect.hub import Hub
    from tidings.connect.relay import Relay
    from tidings.connect.request_ids import RequestIds
    from tidings.core import Core
    from tidings.engine.runtime import Runtime

    calls_apps = not apps if http is None else http
    if not apps and not calls_apps:
        raise click.UsageError("nothing to run: give MODULE:CLIENT or leave out --no-http")
    clients = _load_apps(apps)
    settings = settings_for("serve" if os.environ.get("TIDINGS_ENCRYPTION_KEY") else "dev", db,
                            allow_app_hosts=allow_app_hosts, observe=observe)
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
        # Calls of Connect apps go to workers connected to the servers, through the database.
        connect = Hub(lease_seconds=ConnectSettings.lease_from_env(),
                      relay=Relay(core.storage, wakers=core.wakers),
                      ids=RequestIds.of(core.vault.sealer.keyring)) if calls_apps else None
        runtime = Runtime(core, clients, env=name, http=calls_apps, connect=connect,
                          settings=_engine(retry_interval=retry_interval,
                                           concurrency=concurrency))
        await runtime.start()
        probes = None
        if observe.metrics_port is not None:
            from tidings.server.metrics_api import ProbeServer

            # Probes come from outside the machine under serve; in dev, loopback will do.
            probes = ProbeServer(core, "127.0.0.1" if settings.dev else "0.0.0.0",
                                 observe.metrics_port, connect)
            await probes.start()
        where = safe_url(settings.database_url)
        log.info("Tidings worker: %s (env %s, db %s)", ", ".join(what), name, where,
                 extra={"mode": settings.mode, "env": name, "db": where, "apps": list(apps),
                        "http": calls_apps, "concurrency": concurrency, "grace": grace,
                        "version": VERSION, "observe": asdict(observe),
                        "allow_app_hosts": list(settings.allow_app_hosts)})
        await stop.wait()
        if probes is not None:
            await probes.stop()
        try:
            await runtime.stop(grace)
            await core.close()
        except Exception:
            if not dead:
                raise  # a dead storage cannot release leases: they expire
        await asyncio.to_thread(tracing.flush)  # the spans of what stopped above

    dead: list[str] = []
    run_async(run)
    if dead:
        _died(dead)
