"""A person's data and how long data is kept, straight against the database: export and
erase a person (``tidings users``), retention settings (``tidings settings``), and giving the
space of deleted rows back (``tidings vacuum``)."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click
from rich.console import Console

from tidings.cli.common import db_option, safe_url, settings_for, with_storage
from tidings.core import keyring_for
from tidings.errors import TidingsError
from tidings.ids import now_ms
from tidings.settings import MIB, Limits


@click.group()
def users() -> None:
    """The people behind events (user.external_id): export or erase a person."""


@users.command("erase")
@click.argument("external_id")
@click.option("--env", "env", default=None,
              help="Environment name (default: dev in dev; required with "
                   "TIDINGS_ENCRYPTION_KEY set).")
@click.option("--events", "events", type=click.Choice(["keep", "delete"]), default="keep",
              show_default=True,
              help="keep: destroy the person's key only; delete: their events too, and the "
                   "outputs of the runs those events started (cancelled first if active).")
@db_option
def users_erase(external_id: str, env: str | None, events: str, db: str | None) -> None:
    """Erase a person: every user object of theirs becomes unreadable (in backups too), and
    with --events delete their events go. Prints the counts as JSON."""
    from tidings.core import open_vault
    from tidings.privacy.erase import EventsMode, env_by_name, erase

    serve = bool(os.environ.get("TIDINGS_ENCRYPTION_KEY"))
    env = _person_env(env, serve)
    if not external_id or len(external_id) > Limits().max_id_chars:
        raise click.BadParameter(f"an external_id has 1 to {Limits().max_id_chars} "
                                 "characters", param_hint="EXTERNAL_ID")
    mode: EventsMode = "delete" if events == "delete" else "keep"
    settings = settings_for("serve" if serve else "dev", db)
    keyring = keyring_for(settings)

    async def run(store: Any) -> dict[str, Any]:
        env_id = await store.read(lambda tx: env_by_name(tx, env))
        if env_id is None:
            raise click.ClickException(f"no environment named {env!r}")
        vault = await open_vault(settings, store, keyring)
        try:
            done = await erase(store, vault, env_id, external_id, events=mode,
                               actor=f"cli:{os.environ.get('USER', '?')}")
        finally:
            await vault.close()
        return {"env": env, **done.to_json()}

    click.echo(json.dumps(with_storage(db, run)))


@users.command("export")
@click.argument("external_id")
@click.option("--env", "env", default=None,
              help="Environment name (default: dev in dev; required with "
                   "TIDINGS_ENCRYPTION_KEY set).")
@db_option
def users_export(external_id: str, env: str | None, db: str | None) -> None:
    """Every event of a person, newest first, user decrypted, with the runs each started: one
    JSON object per line on stdout (tidings users export ID > person.jsonl); progress on
    stderr."""
    from rich.progress import Progress

    from tidings.core import open_vault
    from tidings.privacy.erase import env_by_name
    from tidings.privacy.export import count, export_page

    serve = bool(os.environ.get("TIDINGS_ENCRYPTION_KEY"))
    env = _person_env(env, serve)
    settings = settings_for("serve" if serve else "dev", db)
    keyring = keyring_for(settings)

    async def run(store: Any) -> int:
        env_id = await store.read(lambda tx: env_by_name(tx, env))
        if env_id is None:
            raise click.ClickException(f"no environment named {env!r}")
        vault = await open_vault(settings, store, keyring)
        written = 0
        try:
            subject = vault.subject(env_id, external_id)
            total = await store.read(lambda tx: count(tx, env_id, subject))
            with Progress(console=Console(stderr=True), transient=True) as progress:
                task = progress.add_task("exporting", total=total)
                cursor: str | None = None
                while True:
                    page = await export_page(store, vault, env_id, external_id,
                                             cursor=cursor, limit=500)
                    for event in page.events:
                        sys.stdout.write(json.dumps(event) + "\n")
                    written += len(page.events)
                    progress.update(task, completed=written)
                    cursor = page.cursor
                    if cursor is None:
                        break
        finally:
            await vault.close()
        return written

    written = with_storage(db, run)
    click.echo(f"{written} events of {external_id!r} in {env!r}", err=True)


def _person_env(env: str | None, serve: bool) -> str:
    if env is not None:
        return env
    if serve:
        raise click.UsageError("--env is required when TIDINGS_ENCRYPTION_KEY is set")
    return "dev"




@click.group("settings")
def settings_group() -> None:
    """An environment's settings: retention (events_ttl, runs_ttl, dedup_window) and
    encrypt_data."""


def _retention_of(env: str | None, db: str | None, changes: dict[str, Any] | None,
                  encrypt: bool | None = None) -> dict[str, Any]:
    from tidings.events import env_settings, retention
    from tidings.privacy.erase import env_by_name

    serve = bool(os.environ.get("TIDINGS_ENCRYPTION_KEY"))
    name = _person_env(env, serve)
    base = retention.defaults(dev=not serve)

    async def run(store: Any) -> dict[str, Any]:
        env_id = await store.read(lambda tx: env_by_name(tx, name))
        if env_id is None:
            raise click.ClickException(f"no environment named {name!r}")

        def change(tx: Any) -> Any:
            own = retention.stored(tx, env_id)
            if changes:
                own = retention.parse_changes(changes, own, base)
                retention.save(tx, env_id, own, now_ms())
            if encrypt is not None:
                env_settings.switch_sealing(tx, env_id, encrypt, now_ms())
            return own.effective(base), env_settings.sealing_setting(tx, env_id)[0]

        effective, sealed = await store.write(change)
        return {"env": name, **effective.to_json(), "encrypt_data": sealed}

    try:
        return with_storage(db, run)
    except TidingsError as exc:
        raise click.ClickException(exc.message) from None


@settings_group.command("show")
@click.option("--env", "env", default=None, help="Environment name (default: dev in dev).")
@db_option
def settings_show(env: str | None, db: str | None) -> None:
    """The settings in effect (JSON)."""
    click.echo(json.dumps(_retention_of(env, db, None)))


@settings_group.command("set")
@click.option("--env", "env", default=None, help="Environment name (default: dev in dev).")
@click.option("--events-ttl", default=None, metavar="DURATION|forever|default",
              help="Delete events this long after they were received.")
@click.option("--runs-ttl", default=None, metavar="DURATION|forever|default",
              help="Delete ended runs, with their steps, this long after they ended.")
@click.option("--dedup-window", default=None, metavar="DURATION|default",
              help="How long an event id keeps duplicates out (at most events_ttl).")
@click.option("--encrypt-data", type=click.Choice(["on", "off"]), default=None,
              help="Store event data, event ids and step and run outputs encrypted from now "
                   "on (on), or in clear again (off); what is stored stays readable.")
@db_option
def settings_set(env: str | None, events_ttl: str | None, runs_ttl: str | None,
                 dedup_window: str | None, encrypt_data: str | None, db: str | None) -> None:
    """Change the settings of an environment (running servers take them within seconds);
    prints what is in effect (JSON)."""
    given = {"events_ttl": events_ttl, "runs_ttl": runs_ttl, "dedup_window": dedup_window}
    changes = {k: None if v == "default" else v for k, v in given.items() if v is not None}
    if not changes and encrypt_data is None:
        raise click.UsageError("name at least one of --events-ttl, --runs-ttl, "
                               "--dedup-window, --encrypt-data")
    encrypt = None if encrypt_data is None else encrypt_data == "on"
    click.echo(json.dumps(_retention_of(env, db, changes, encrypt)))


@click.command()
@db_option
def vacuum(db: str | None) -> None:
    """Give the space of deleted rows back to the file system. SQLite: the database is
    rebuilt (VACUUM, in incremental auto-vacuum mode from then on, so that housekeeping
    returns space as it deletes); it needs free disk space as large as the database, and
    holds the writer while it runs: run it when the servers are quiet. PostgreSQL: VACUUM
    (ANALYZE) of the tables retention deletes from (autovacuum does this too)."""
    url = settings_for("dev", db).database_url
    started = time.monotonic()
    if url.startswith(("postgresql:", "postgres:")):
        import psycopg

        with psycopg.connect(url, autocommit=True) as pg:
            for table in ("events", "runs", "steps", "event_idempotency"):
                pg.execute(f"VACUUM (ANALYZE) {table}")
    else:
        import sqlite3

        from tidings.storage.sqlite import path_from_url

        path = path_from_url(url)
        before = os.path.getsize(path)
        conn = sqlite3.connect(path, isolation_level=None, timeout=60)
        try:
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        after = os.path.getsize(path)
        click.echo(f"{safe_url(url)}: {before / MIB:.1f} MiB -> {after / MIB:.1f} MiB",
                   err=True)
    click.echo(f"vacuumed in {time.monotonic() - started:.1f} s", err=True)
