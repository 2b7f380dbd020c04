"""Local administration, straight against the database: migrations, event and API keys,
signing keys, the encryption keyring."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import click
from rich.table import Column, Table

from tidings import passwords
from tidings.cli.common import (
    DATA_DIR,
    T,
    db_option,
    print_table,
    safe_url,
    settings_for,
    with_storage,
)
from tidings.core import keyring_for
from tidings.crypto import new_key_text, save_dev_keyring
from tidings.ids import now_ms
from tidings.keys import CACHE_SECONDS, create_key, ensure_env, list_keys, revoke_key
from tidings.storage.migrations import schema_version


@click.command()
@db_option
def migrate(db: str | None) -> None:
    """Apply pending database migrations."""
    url = settings_for("dev", db).database_url
    # Opening a store applies what is pending (PostgreSQL cannot migrate before it connects).
    version = with_storage(db, lambda s: s.read(schema_version))
    click.echo(f"database schema is at version {version} ({safe_url(url)})")


@click.group()
def keys() -> None:
    """Event keys, API keys and encryption keys."""


@keys.command("create")
@click.option("--env", "env", required=True, help="Environment name, e.g. production.")
@click.option("--kind", type=click.Choice(["event", "api", "trigger"]), default="event",
              show_default=True, help="event: sends events; api: reads through /v1; trigger: "
              "a Trigger.dev v2 key (tr_<env>_...) for v2 clients and apps.")
@click.option("--reads-user", is_flag=True, help="An API key whose reads (/v1, and the "
              "dashboard signed in with it) carry events' user decrypted under serve; without "
              "it user is masked.")
@db_option
def keys_create(env: str, kind: str, reads_user: bool, db: str | None) -> None:
    """Create a key; it is printed once. Only the hash of an event or API key is stored; a
    trigger key is also kept sealed, because the server presents it to the environment's v2
    apps."""
    if reads_user and kind != "api":
        raise click.UsageError("--reads-user is for API keys (--kind api)")
    if kind == "trigger":
        secret, made = _with_trigger_keys(db, lambda keys: keys.create(env))
        click.echo(secret)
        click.echo(f"(trigger key {made.id} for environment {env!r}; this is the only time it "
                   "is shown)", err=True)
        return
    secret, record = with_storage(db, lambda s: create_key(
        s, env, kind, reads_user=reads_user))  # type: ignore[arg-type]
    click.echo(secret)
    click.echo(f"({kind} key {record.id} for environment {env!r}"
               f"{', reads user' if reads_user else ''}; this is the only time it is shown)",
               err=True)


@keys.command("create-dashboard")
@click.option("--env", "env", required=True, help="Environment name, e.g. production.")
@click.option("--reads-user", is_flag=True, help="Its sessions see events' user decrypted "
              "(without it the dashboard shows user masked).")
@db_option
def keys_create_dashboard(env: str, reads_user: bool, db: str | None) -> None:
    """Create a dashboard password for an environment (sign in with it under tidings serve,
    instead of an API key); it is printed once, and only a scrypt hash of it is stored."""
    secret, made = with_storage(db, lambda s: s.write(
        lambda tx: passwords.create(tx, env, reads_user=reads_user)))
    click.echo(secret)
    click.echo(f"(dashboard password {made.id} for environment {env!r}"
               f"{', reads user' if reads_user else ''}; this is the only time it is shown)",
               err=True)


@keys.command("list")
@db_option
def keys_list(db: str | None) -> None:
    """List keys (prefixes only) and dashboard passwords (lookup ids only)."""
    rows = with_storage(db, lambda s: s.read(list_keys))
    triggers = _with_trigger_keys(db, lambda keys: keys.all())
    dashboards = with_storage(db, lambda s: s.read(passwords.listed))
    table = Table(Column("id", no_wrap=True), "kind", "env", Column("prefix", no_wrap=True),
                  "created", "revoked")
    kinds = {key.id: key.kind + (" (reads user)" if key.reads_user else "") for key in rows}
    for key in [*rows, *triggers]:
        table.add_row(key.id, kinds.get(key.id, key.kind), key.env_name, key.prefix + "…",
                      _time(key.created_at), _time(key.revoked_at) if key.revoked_at else "")
    for made in dashboards:
        table.add_row(made.id, "dashboard" + (" (reads user)" if made.reads_user else ""),
                      made.env_name, f"{passwords.PREFIX}{made.lookup}_…",
                      _time(made.created_at), _time(made.revoked_at) if made.revoked_at else "")
    print_table(table)


@keys.command("revoke")
@click.argument("key_id")
@db_option
def keys_revoke(key_id: str, db: str | None) -> None:
    """Revoke a key (or a dashboard password) by id. On PostgreSQL every server stops
    accepting a key at once; on SQLite a server in another process does within 1 s
    (docs/HTTP_API.md). A dashboard password's sessions end at their next request."""
    revoked = with_storage(db, lambda s: s.write(
        lambda tx: revoke_key(tx, key_id) or passwords.revoke(tx, key_id)))
    if not revoked and not _with_trigger_keys(db, lambda keys: keys.revoke(key_id)):
        raise click.ClickException(f"no active key with id {key_id}")
    postgres = settings_for("dev", db).database_url.startswith(("postgresql:", "postgres:"))
    when = "at once" if postgres else f"within {CACHE_SECONDS:g} s (SQLite)"
    click.echo(f"revoked {key_id}; running servers stop accepting it {when}")


def _with_trigger_keys(db: str | None, fn: Callable[[Any], Awaitable[T]]) -> T:
    """``fn(trigger_keys)`` with the master keyring of this machine."""
    from tidings.triggerdev.keys import TriggerKeys

    serve = bool(os.environ.get("TIDINGS_ENCRYPTION_KEY"))
    keyring = keyring_for(settings_for("serve" if serve else "dev", db))
    return with_storage(db, lambda store: fn(TriggerKeys(store, keyring, dev=not serve)))


def _with_signing_keys(db: str | None, fn: Callable[[Any, Any], Awaitable[T]]) -> T:
    """``fn(signing_keys, storage)`` with the master keyring of this machine."""
    from tidings.keys import SigningKeys

    serve = bool(os.environ.get("TIDINGS_ENCRYPTION_KEY"))
    keyring = keyring_for(settings_for("serve" if serve else "dev", db))
    return with_storage(db, lambda store: fn(SigningKeys(store, keyring), store))


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
        return await keys.create(await store.write(lambda tx: ensure_env(tx, env)))

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
        found = await store.write(lambda tx: ensure_env(tx, env))
        return bool(await keys.drop_fallback(found.id))

    if not _with_signing_keys(db, drop):
        raise click.ClickException(f"environment {env!r} has no fallback signing key")
    click.echo(f"the fallback signing key of {env!r} is no longer accepted")


@keys.command("new-encryption-key")
def keys_new_encryption_key() -> None:
    """Print a fresh value for TIDINGS_ENCRYPTION_KEY."""
    click.echo(new_key_text())


@keys.command("rotate-encryption")
@click.option("--env", "env", default=None,
              help="Only give this environment a new key for its encrypted data "
                   "(encrypt_data); the master key stays.")
@db_option
def keys_rotate_encryption(env: str | None, db: str | None) -> None:
    """Make a new master key active and re-wrap every data key and signing key with it.

    In dev the key file under ./.tidings is updated. Otherwise the new TIDINGS_ENCRYPTION_KEY
    (new key first, old keys after, so old data stays readable) is printed: set it everywhere.
    Environments that encrypt their data (encrypt_data) seal new writes under keys derived from
    the new master key; what they sealed before stays readable under the keys it names.

    With --env, only that environment's data key changes (a new generation, for new writes;
    running servers take it within seconds); nothing is re-sealed.
    """
    if env is not None:
        _rotate_env_data_key(env, db)
        return
    from tidings.core import open_vault
    from tidings.keys import SigningKeys
    from tidings.triggerdev.keys import TriggerKeys

    settings = settings_for("dev" if not os.environ.get("TIDINGS_ENCRYPTION_KEY") else "serve", db)
    old = keyring_for(settings)
    new = old.rotated()

    async def rewrap(store: Any) -> tuple[int, int]:
        vault = await open_vault(settings, store, old)
        try:
            await TriggerKeys(store, old, dev=settings.dev).rewrap(new)
            return await vault.rewrap(new), await SigningKeys(store, old).rewrap(new)
        finally:
            await vault.close()

    # The new keyring holds the old keys too, so it is written (or shown) before any data key
    # is re-wrapped with it: a failure half-way must not leave keys wrapped by a lost key.
    if settings.dev:
        save_dev_keyring(DATA_DIR, new)
    else:
        click.echo(new.text())
    count, signing = with_storage(db, rewrap)
    done = f"{count} data keys and the signing keys of {signing} environments re-wrapped"
    if settings.dev:
        click.echo(f"active encryption key is now {new.active}; {done}")
        click.echo("restart running servers so that they encrypt with it", err=True)
    else:
        click.echo(f"set TIDINGS_ENCRYPTION_KEY to the line above and restart the servers "
                   f"({done})", err=True)


def _rotate_env_data_key(env: str, db: str | None) -> None:
    from tidings.events.env_settings import rotate_sealing
    from tidings.privacy.erase import env_by_name

    async def rotate(store: Any) -> int:
        env_id = await store.read(lambda tx: env_by_name(tx, env))
        if env_id is None:
            raise click.ClickException(f"no environment named {env!r}")
        generation: int = await store.write(
            lambda tx: rotate_sealing(tx, env_id, now_ms()))
        return generation

    generation = with_storage(db, rotate)
    click.echo(f"environment {env!r}: new writes are sealed under data key generation "
               f"{generation}; older data stays readable")


def _time(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
