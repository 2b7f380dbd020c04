"""What every ``tidings`` command shares: the console, the data directory, ``--db`` and the
settings built from it, and running a coroutine to its end."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from tidings.settings import (
    Load,
    Mode,
    Observe,
    Settings,
    database_url_from,
    keystore_url_from,
)

T = TypeVar("T")
console = Console()
DATA_DIR = Path(os.environ.get("TIDINGS_DATA_DIR", ".tidings"))

db_option = click.option("--db", "db", default=None, metavar="PATH_OR_URL",
                         help="sqlite:///path, a plain path, or postgresql://... "
                              "(default: TIDINGS_DATABASE_URL, else ./.tidings/tidings.db)")


encrypt_data_option = click.option(
    "--encrypt-data/--no-encrypt-data", "encrypt_data", default=None,
    envvar="TIDINGS_ENCRYPT_DATA",
    help="Store event data, event ids and step and run outputs encrypted (or no longer) in "
         "every environment without a setting of its own (`tidings settings set "
         "--encrypt-data`); kept in the database, so every process follows it  "
         "[default: as stored, off at first]")


def settings_for(mode: Mode, db: str | None, *, load: Load | None = None,
                 allow_app_hosts: tuple[str, ...] = (), observe: Observe | None = None,
                 encrypt_data: bool | None = None) -> Settings:
    return Settings(mode=mode, database_url=database_url_from(db, data_dir=DATA_DIR),
                    data_dir=DATA_DIR, load=load or Load(), encrypt_data=encrypt_data,
                    allow_app_hosts=_host_list(allow_app_hosts), observe=observe or Observe(),
                    keystore_url=keystore_url_from(None, mode=mode, data_dir=DATA_DIR))


def _host_list(values: tuple[str, ...]) -> tuple[str, ...]:
    """``--allow-app-host`` values (or TIDINGS_ALLOW_APP_HOSTS, commas or spaces between),
    checked here so that a typo stops the start with a clear message."""
    from tidings.netguard import Policy

    hosts = tuple(h for value in values for h in value.replace(",", " ").split())
    Policy.build(hosts)
    return hosts


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(fn())  # type: ignore[arg-type]


def print_table(table: Table) -> None:
    """Print a table whole: piped output is as wide as the table, not cut at 80 columns."""
    out = console
    if not console.is_terminal:
        needed = Measurement.get(console, console.options.update_width(1000), table).maximum
        out = Console(width=max(console.width, needed))
    out.print(table)


def safe_url(url: str) -> str:
    """A database URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def with_storage(db: str | None, fn: Callable[[Any], Awaitable[T]]) -> T:
    """``fn(storage)`` on the database of ``--db``, opened for it and closed after."""
    from tidings.storage import storage_for

    async def run() -> T:
        store = storage_for(settings_for("dev", db).database_url)
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()

    return run_async(run)
