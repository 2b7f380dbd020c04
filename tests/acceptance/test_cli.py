"""The ``tidings`` command, run as the installed executable against real databases and servers."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import TIDINGS, LiveServer, start_server, stop_server
from tidings.storage.sql import migration_files

ULID_CHARS = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def cli(cwd: Path, *args: str, env: dict[str, str] | None = None,
        data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``tidings ARGS`` in ``cwd``; the caller's TIDINGS_* variables do not leak in."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    full = {**clean, "TIDINGS_DATA_DIR": str(data_dir or cwd / ".tidings"), **(env or {})}
    return subprocess.run([TIDINGS, *args], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=60, check=False)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def create_key(cwd: Path, db: str, kind: str = "event", env: str = "production") -> str:
    (secret,) = ok(cli(cwd, "keys", "create", "--env", env, "--kind", kind, "--db", db)).split()
    return secret


def key_id(cwd: Path, db: str, secret: str) -> str:
    """The id ``keys list`` shows on the row of a key (found by its prefix)."""
    listing = ok(cli(cwd, "keys", "list", "--db", db))
    (row,) = [line for line in listing.splitlines() if secret[:10] in line]
    return row.strip("│ ").split()[0]


def is_ulid(text: str) -> bool:
    return len(text) == 26 and set(text) <= ULID_CHARS


def send(server: LiveServer, key: str, event: dict[str, object]) -> httpx.Response:
    return httpx.post(f"{server.url}/e/{key}", json=event, timeout=10)


# -- migrate -----------------------------------------------------------------------------------


def versions_of(dialect: str) -> list[int]:
    return [version for version, _, _ in migration_files(dialect)]


def test_migrate_creates_the_sqlite_schema_and_is_idempotent(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    first = ok(cli(tmp_path, "migrate", "--db", str(db)))
    again = ok(cli(tmp_path, "migrate", "--db", str(db)))

    latest = versions_of("sqlite")[-1]
    assert f"schema is at version {latest}" in first
    assert f"schema is at version {latest}" in again
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        versions = [row[0] for row in conn.execute(
            "SELECT version FROM tidings_migrations ORDER BY version")]
    assert {"events", "api_keys", "environments", "secrets"} <= tables
    assert versions == versions_of("sqlite")


@pytest.mark.postgres
def test_migrate_creates_the_postgres_schema(tmp_path: Path, pg_url: str) -> None:
    out = ok(cli(tmp_path, "migrate", "--db", pg_url))
    ok(cli(tmp_path, "migrate", "--db", pg_url))

    assert f"schema is at version {versions_of('postgres')[-1]}" in out
    with psycopg.connect(pg_url) as conn:
        tables = {row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema()")}
        versions = [row[0] for row in conn.execute(
            "SELECT version FROM tidings_migrations ORDER BY version")]
    assert {"events", "api_keys", "environments", "secrets"} <= tables
    assert versions == versions_of("postgres")


def test_migrate_refuses_an_unsupported_database_url(tmp_path: Path) -> None:
    result = cli(tmp_path, "migrate", "--db", "mysql://localhost/tidings")

    assert result.returncode == 1
    assert "Error: unsupported database URL 'mysql://localhost/tidings'" in result.stderr
    assert "Traceback" not in result.stderr


# -- keys --------------------------------------------------------------------------------------


def test_keys_create_prints_the_key_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    result = cli(tmp_path, "keys", "create", "--env", "production", "--db", str(db))
    secret = ok(result).strip()

    assert secret.startswith("tdk_")
    assert len(secret) > 40
    assert "only time it is shown" in result.stderr
    assert secret not in result.stderr
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("keys.db*"))
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored
    assert secret.encode() not in stored


def test_keys_create_makes_api_keys_too(tmp_path: Path) -> None:
    secret = create_key(tmp_path, str(tmp_path / "keys.db"), kind="api")

    assert secret.startswith("tda_")


def test_keys_create_makes_sealed_trigger_keys_listed_and_revoked_like_the_others(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "keys.db")
    secret = create_key(tmp_path, db, kind="trigger")
    staging = create_key(tmp_path, db, kind="trigger", env="staging")

    assert re.fullmatch(r"tr_prod_[a-zA-Z0-9]{40}", secret)
    assert staging.startswith("tr_stg_")
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("keys.db*"))
    assert secret.encode() not in stored  # sealed (and hashed), never in the clear
    ident = key_id(tmp_path, db, secret)
    row = next(line for line in ok(cli(tmp_path, "keys", "list", "--db", db)).splitlines()
               if ident in line)
    assert "trigger" in row and "production" in row and secret not in row
    assert f"revoked {ident}" in ok(cli(tmp_path, "keys", "revoke", ident, "--db", db))


def test_keys_list_shows_id_kind_env_and_prefix_but_not_the_secret(tmp_path: Path) -> None:
    db = str(tmp_path / "keys.db")
    event_key = create_key(tmp_path, db, env="production")
    api_key = create_key(tmp_path, db, kind="api", env="staging")

    listing = ok(cli(tmp_path, "keys", "list", "--db", db))

    rows = {key: next(line for line in listing.splitlines() if key[:10] in line)
            for key in (event_key, api_key)}
    assert "event" in rows[event_key]
    assert "production" in rows[event_key]
    assert "api" in rows[api_key]
    assert "staging" in rows[api_key]
    assert is_ulid(key_id(tmp_path, db, event_key))
    assert event_key not in listing
    assert api_key not in listing


def test_keys_revoke_marks_the_key_revoked_once(tmp_path: Path) -> None:
    db = str(tmp_path / "keys.db")
    secret = create_key(tmp_path, db)
    ident = key_id(tmp_path, db, secret)

    out = ok(cli(tmp_path, "keys", "revoke", ident, "--db", db))
    again = cli(tmp_path, "keys", "revoke", ident, "--db", db)

    assert f"revoked {ident}" in out
    row = next(line for line in ok(cli(tmp_path, "keys", "list", "--db", db)).splitlines()
               if ident in line)
    assert row.count(time.strftime("%Y-", time.gmtime())) == 2  # created and revoked
    assert again.returncode == 1
    assert f"no active key with id {ident}" in again.stderr


def test_database_url_variable_stands_in_for_db(tmp_path: Path) -> None:
    db = tmp_path / "from-env.db"
    env = {"TIDINGS_DATABASE_URL": f"sqlite:///{db}"}

    ok(cli(tmp_path, "migrate", env=env))
    secret = create_key_with_env(tmp_path, env)
    listing = ok(cli(tmp_path, "keys", "list", env=env))

    assert secret[:10] in listing
    assert db.exists()
    assert not (tmp_path / ".tidings" / "tidings.db").exists()


def create_key_with_env(cwd: Path, env: dict[str, str]) -> str:
    return ok(cli(cwd, "keys", "create", "--env", "production", env=env)).strip()


# -- serve -------------------------------------------------------------------------------------


def serve(tmp_path: Path, db: str, *, via_env: bool = False) -> tuple[LiveServer, str]:
    """A ``tidings serve`` process and its encryption key."""
    master = ok(cli(tmp_path, "keys", "new-encryption-key")).strip()
    env = {"TIDINGS_ENCRYPTION_KEY": master}
    args: tuple[str, ...] = ("--db", db)
    if via_env:
        env["TIDINGS_DATABASE_URL"] = db
        args = ()
    return start_server(tmp_path, *args, env=env, command="serve"), master


def test_serve_accepts_created_event_keys_and_refuses_unknown_and_revoked(
    tmp_path: Path, db_url: str
) -> None:
    secret = create_key(tmp_path, db_url)
    server, _ = serve(tmp_path, db_url)
    try:
        accepted = send(server, secret, {"name": "app/signed.up", "data": {"n": 1}})
        unknown = send(server, "tdk_not-a-key", {"name": "app/signed.up"})
        ok(cli(tmp_path, "keys", "revoke", key_id(tmp_path, db_url, secret), "--db", db_url))
        # On SQLite the server believes a key it checked for up to 1 s: poll.
        deadline = time.monotonic() + 15
        revoked = send(server, secret, {"name": "app/signed.up"})
        while revoked.status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
            revoked = send(server, secret, {"name": "app/signed.up"})
    finally:
        stop_server(server)

    assert accepted.status_code == 200, accepted.text
    assert is_ulid(accepted.json()["ids"][0])
    assert accepted.headers["x-inngest-server-kind"] == "cloud"
    assert unknown.status_code == 401
    assert unknown.json() == {"ids": [], "status": 401, "error": "Event key not found"}
    assert revoked.status_code == 401
    assert revoked.json()["error"] == "Event key not found"


def test_serve_reads_need_an_api_key(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'serve.db'}"
    event_key = create_key(tmp_path, db)
    api_key = create_key(tmp_path, db, kind="api")
    server, _ = serve(tmp_path, db, via_env=True)
    try:
        sent = send(server, event_key, {"name": "app/read.me", "user": {"email": "a@b.c"}})
        anonymous = httpx.get(f"{server.url}/v1/events", timeout=10)
        with_event_key = httpx.get(f"{server.url}/v1/events", timeout=10,
                                   headers={"authorization": f"Bearer {event_key}"})
        with_api_key = httpx.get(f"{server.url}/v1/events", timeout=10,
                                 headers={"authorization": f"Bearer {api_key}"})
        listed = cli(tmp_path, "events", "--url", server.url, "--api-key", api_key)
        refused = cli(tmp_path, "events", "--url", server.url)
    finally:
        stop_server(server)

    assert sent.status_code == 200, sent.text
    assert anonymous.status_code == 401
    assert "API key" in anonymous.json()["error"]
    assert with_event_key.status_code == 401
    assert with_event_key.json()["error"] == "API key not found"
    assert with_api_key.status_code == 200
    (event,) = with_api_key.json()["data"]
    assert event["id"] == sent.json()["ids"][0]
    # An API key made without --reads-user reads user masked under serve.
    assert event["user"] == {} and event["user_masked"] is True
    assert event["id"] in ok(listed)
    assert refused.returncode == 1
    assert "401" in refused.stderr


def test_serve_without_encryption_key_exits_with_a_message(tmp_path: Path) -> None:
    result = cli(tmp_path, "serve", "--port", "1", "--db", str(tmp_path / "x.db"))

    assert result.returncode != 0
    assert "TIDINGS_ENCRYPTION_KEY is required" in result.stderr
    assert "tidings keys new-encryption-key" in result.stderr


def test_serve_with_a_malformed_encryption_key_exits_with_a_message(tmp_path: Path) -> None:
    result = cli(tmp_path, "serve", "--port", "1", "--db", str(tmp_path / "x.db"),
                 env={"TIDINGS_ENCRYPTION_KEY": "not base64!"})

    assert result.returncode != 0
    assert "Error: encryption key is not valid base64" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_without_database_exits_with_a_message(tmp_path: Path) -> None:
    master = ok(cli(tmp_path, "keys", "new-encryption-key")).strip()
    result = cli(tmp_path, "serve", "--port", "1", env={"TIDINGS_ENCRYPTION_KEY": master})

    assert result.returncode != 0
    assert "tidings serve needs --db URL or TIDINGS_DATABASE_URL" in result.stderr


def test_bad_guard_and_load_settings_stop_the_start_with_a_message(tmp_path: Path) -> None:
    master = ok(cli(tmp_path, "keys", "new-encryption-key")).strip()
    base = ("serve", "--port", "1", "--db", str(tmp_path / "x.db"))
    key = {"TIDINGS_ENCRYPTION_KEY": master}
    host = cli(tmp_path, *base, "--allow-app-host", "10.0.0.0/33", env=key)
    assert host.returncode != 0
    assert "--allow-app-host '10.0.0.0/33': not a CIDR" in host.stderr
    from_env = cli(tmp_path, *base, env={**key, "TIDINGS_ALLOW_APP_HOSTS": "10.0.0.0/8,x/y"})
    assert from_env.returncode != 0
    assert "--allow-app-host 'x/y': not a CIDR" in from_env.stderr  # read, split at commas
    size = cli(tmp_path, "dev", "--port", "1", "--max-inflight-bytes", "lots")
    assert size.returncode != 0
    assert "'lots' is not a size" in size.stderr
    timeout = cli(tmp_path, "dev", "--port", "1", "--body-timeout", "0")
    assert timeout.returncode != 0
    assert "--body-timeout" in timeout.stderr
    for result in (host, from_env, size, timeout):
        assert "Traceback" not in result.stderr


# -- send and events against tidings dev ---------------------------------------------------------


def test_send_then_events_shows_it_in_a_table(tmp_path: Path, live_server: LiveServer) -> None:
    url = live_server.url
    sent = cli(tmp_path, "send", "shop/order.placed", "--data", '{"order": 42, "total": 9.5}',
               "--user", '{"external_id": "u-7"}', "--id", "order-42",
               "--ts", "1700000000000", "--url", url)
    other = cli(tmp_path, "send", "shop/other", "--url", url)
    event_id = ok(sent).strip()
    listing = ok(cli(tmp_path, "events", "--name", "shop/order.placed", "--url", url))

    assert is_ulid(event_id)
    ok(other)
    header = next(line for line in listing.splitlines() if "id" in line and "name" in line)
    assert [word for word in header.split() if word.isalpha()] == ["id", "name", "time", "data"]
    (row,) = [line for line in listing.splitlines() if event_id in line]
    assert "shop/order.placed" in row
    assert "2023-11-14T22:13:20.000Z" in row
    assert '{"order":42,"total":9.5}' in row
    assert "shop/other" not in listing
    stored = httpx.get(f"{url}/v1/events/{event_id}", timeout=10).json()["data"]
    assert stored["user"] == {"external_id": "u-7"}
    assert stored["idempotency_key"] == "order-42"
    assert stored["ts"] == 1_700_000_000_000


def test_send_with_bad_json_exits_with_a_message(tmp_path: Path) -> None:
    result = cli(tmp_path, "send", "shop/x", "--data", "{nope", "--url", "http://127.0.0.1:9")

    assert result.returncode == 2
    assert "not JSON" in result.stderr


# -- encryption key rotation in dev --------------------------------------------------------------


def read_user(server: LiveServer, event_id: str) -> object:
    reply = httpx.get(f"{server.url}/v1/events/{event_id}", timeout=10)
    assert reply.status_code == 200, reply.text
    return reply.json()["data"]["user"]


def test_rotating_the_encryption_key_keeps_every_user_readable(tmp_path: Path) -> None:
    db = str(tmp_path / "dev.db")
    server = start_server(tmp_path, "--db", db)
    key_file = server.data_dir / "encryption.key"
    old_key = key_file.read_text().strip()
    known = {"external_id": "u-1", "email": "one@example.com"}
    anonymous = {"email": "anon@example.com"}
    try:
        before = [send(server, "any", {"name": "app/u", "user": user}).json()["ids"][0]
                  for user in (known, anonymous)]
        rotated = cli(tmp_path, "keys", "rotate-encryption", "--db", db,
                      data_dir=server.data_dir)
        after = [send(server, "any", {"name": "app/u", "user": user}).json()["ids"][0]
                 for user in (known, anonymous)]
        on_running = [read_user(server, event_id) for event_id in before + after]
    finally:
        stop_server(server)
    server = start_server(tmp_path, "--db", db)
    try:
        on_restarted = [read_user(server, event_id) for event_id in before + after]
        fresh = send(server, "any", {"name": "app/u", "user": anonymous}).json()["ids"][0]
        fresh_user = read_user(server, fresh)
    finally:
        stop_server(server)

    assert "1 data keys and the signing keys of 0 environments re-wrapped" in ok(rotated)
    new_key = key_file.read_text().strip()
    new_id, old_id = (part.split(":")[0] for part in new_key.split(","))
    assert new_key.split(",")[1] == old_key
    assert new_id in ok(rotated)
    assert on_running == [known, anonymous, known, anonymous]
    assert on_restarted == [known, anonymous, known, anonymous]
    assert fresh_user == anonymous
    with sqlite3.connect(db) as conn:
        (blob,) = conn.execute("SELECT user_data FROM events WHERE id = ?", (fresh,)).fetchone()
    assert new_id.encode() in blob  # sealed under the new active key
    assert old_id.encode() not in blob


def test_rotating_the_encryption_key_rewraps_the_signing_keys(db_url: str,
                                                              tmp_path: Path) -> None:
    """Signing keys are sealed by the master key. Rotation seals them again under the new one,
    current and fallback, so the old key can be retired: with only the new key the CLI (and a
    server) still reads them, with only the old one nothing can."""
    from tidings.crypto import new_key_text

    old_key = new_key_text()
    first = ok(cli(tmp_path, "keys", "create-signing", "--env", "production", "--db", db_url,
                   env={"TIDINGS_ENCRYPTION_KEY": old_key})).strip()
    second = ok(cli(tmp_path, "keys", "create-signing", "--env", "production", "--db", db_url,
                    env={"TIDINGS_ENCRYPTION_KEY": old_key})).strip()
    rotated = cli(tmp_path, "keys", "rotate-encryption", "--db", db_url,
                  env={"TIDINGS_ENCRYPTION_KEY": old_key})
    keyring = ok(rotated).strip()
    assert "signing keys of 1 environments re-wrapped" in rotated.stderr
    new_only, old_again = keyring.split(",")
    assert old_again == old_key

    refused = cli(tmp_path, "keys", "drop-signing-fallback", "--env", "production", "--db",
                  db_url, env={"TIDINGS_ENCRYPTION_KEY": old_key})
    assert refused.returncode == 1
    assert "not configured" in refused.stderr
    # The fallback (the first key) was readable under the new key alone: dropping it works.
    ok(cli(tmp_path, "keys", "drop-signing-fallback", "--env", "production", "--db", db_url,
           env={"TIDINGS_ENCRYPTION_KEY": new_only}))
    third = cli(tmp_path, "keys", "create-signing", "--env", "production", "--db", db_url,
                env={"TIDINGS_ENCRYPTION_KEY": new_only})
    assert "the previous key is now the fallback" in third.stderr

    server = start_server(tmp_path, "--db", db_url, "--env", "production", command="serve",
                          env={"TIDINGS_ENCRYPTION_KEY": new_only,
                               "TIDINGS_ALLOW_APP_HOSTS": "127.0.0.1"})
    try:
        body = {"appname": "a", "url": "http://127.0.0.1:1/api/inngest", "functions": []}
        answers = {key: httpx.post(f"{server.url}/fn/register", json=body, timeout=10,
                                   headers={"authorization": f"Bearer {key}"}).status_code
                   for key in (first, second, ok(third).strip())}
    finally:
        stop_server(server)
    assert answers == {first: 401, second: 200, ok(third).strip(): 200}
