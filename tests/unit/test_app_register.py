"""``POST /fn/register`` as SDKs call it: bodies read the way Go reads them, functions stored on
queue ``http`` with their retries, triggers and flow control, re-syncs that change nothing write
nothing, dropped functions archived, and (under ``tidings serve``) the signing key required."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import make_settings
from tests.unit.helpers import app_client
from tidings.core import Core
from tidings.functions import registration
from tidings.functions.registration import FunctionDef
from tidings.keys import SigningKeys, ensure_env
from tidings.signing import hash_key

URL = "http://127.0.0.1:3000/api/inngest"


def fn(fn_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": f"my-app-{fn_id}", "name": fn_id,
            "triggers": [{"event": f"app/{fn_id}"}],
            "steps": {"step": {"id": "step", "name": "step", "runtime": {
                "type": "http", "url": f"{URL}?fnId=my-app-{fn_id}&stepId=step"}}},
            **extra}


PY_BODY: dict[str, Any] = {  # as inngest-py sends it: appname, deploy_type
    "appname": "my-app", "deploy_type": "ping", "framework": "flask", "sdk": "py:v0.5.19",
    "url": URL, "v": "0.1",
    "capabilities": {"connect": "v1", "in_band_sync": "v1", "trust_probe": "v1"},
    "functions": [
        fn("all-config", triggers=[
            {"event": "app/user.created", "expression": "event.data.plan == 'pro'"},
            {"cron": "TZ=Europe/Paris 0 9 * * 1"}],
           concurrency=[{"key": "event.data.user_id", "limit": 5, "scope": "fn"}],
           rateLimit={"key": "event.data.user_id", "limit": 1, "period": "4h"},
           cancel=[{"event": "app/user.deleted", "if": "event.data.id == async.data.id",
                    "timeout": "1h"}],
           debounce=None),
        fn("all-config-failure", triggers=[
            {"event": "inngest/function.failed",
             "expression": "event.data.function_id == 'my-app-all-config'"}]),
    ],
}


async def register(http: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    return await http.post("/fn/register", json=body, headers=headers)


async def functions(core: Core) -> dict[str, Any]:
    rows = await core.storage.read(registration.live_functions)
    return {row.slug: row for row in rows}


async def test_inngest_py_registration(db_url: str, tmp_path: Path) -> None:
    async with app_client(make_settings(db_url, tmp_path)) as (http, core):
        answer = await register(http, PY_BODY, **{"x-inngest-expected-server-kind": "dev"})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"ok": True, "modified": True}
        found = await functions(core)
        assert set(found) == {"my-app-all-config", "my-app-all-config-failure"}
        main = found["my-app-all-config"]
        assert main.queue == "http"
        assert main.app_id == "my-app"
        assert main.url == f"{URL}?fnId=my-app-all-config&stepId=step"
        assert main.retries == 4  # no retries given: Inngest's default
        assert main.config["triggers"] == PY_BODY["functions"][0]["triggers"]
        assert main.config["concurrency"] == [{"key": "event.data.user_id", "limit": 5,
                                               "scope": "fn"}]
        assert main.config["rateLimit"]["period"] == "4h"
        assert main.config["cancel"][0]["if"] == "event.data.id == async.data.id"
        assert "debounce" not in main.config  # null is absent

        # The same body again changes nothing.
        again = await register(http, PY_BODY)
        assert again.json() == {"ok": True, "modified": False}

        apps = (await http.get("/v1/apps")).json()["data"]
        assert [(a["app_id"], a["url"], a["status"], a["functions"], a["sdk"]) for a in apps] \
            == [("my-app", URL, "synced", 2, "py:v0.5.19")]


async def test_js_keys_retries_and_archiving(db_url: str, tmp_path: Path) -> None:
    async with app_client(make_settings(db_url, tmp_path)) as (http, core):
        body = {"appName": "my-app", "deployType": "ping", "url": URL, "sdk": "js:v4.24.0",
                "functions": [fn("a", steps={"step": {
                    "id": "step", "name": "step", "retries": {"attempts": 0},
                    "runtime": {"type": "http", "url": f"{URL}?fnId=my-app-a&stepId=step"}}}),
                    fn("b"), fn("c", retries=50)]}
        assert (await register(http, body)).status_code == 200
        found = await functions(core)
        assert found["my-app-a"].retries == 0
        assert found["my-app-c"].retries == 20  # at most 20

        fewer = copy.deepcopy(body)
        fewer["functions"] = fewer["functions"][:1]
        assert (await register(http, fewer)).json() == {"ok": True, "modified": True}
        assert set(await functions(core)) == {"my-app-a"}


async def test_an_sdk_app_leaves_the_native_functions_of_its_app_id_alone(
        db_url: str, tmp_path: Path) -> None:
    async with app_client(make_settings(db_url, tmp_path)) as (http, core):
        env = await core.storage.write(lambda tx: ensure_env(tx, "dev"))
        native = FunctionDef(slug="my-app-native", name="native", url=None,
                             config={"id": "my-app-native", "triggers": [{"event": "app/n"}]})
        await core.storage.write(lambda tx: registration.register(
            tx, env_id=env.id, app_id="my-app", queue="native:my-app", defs=[native], now=1))

        assert (await register(http, PY_BODY)).status_code == 200
        live = await functions(core)
        assert set(live) == {"my-app-native", "my-app-all-config", "my-app-all-config-failure"}
        assert live["my-app-native"].queue == "native:my-app"


async def test_invalid_registrations_are_refused(db_url: str, tmp_path: Path) -> None:
    async with app_client(make_settings(db_url, tmp_path)) as (http, core):
        cases = {
            "App ID required": {**PY_BODY, "appname": ""},
            "invalid expression": {**PY_BODY, "functions": [fn("x", triggers=[
                {"event": "app/x", "expression": "event.data.plan =="}])]},
            "cron": {**PY_BODY, "functions": [fn("x", triggers=[{"cron": "every day"}])]},
            "at least one trigger": {**PY_BODY, "functions": [fn("x", triggers=[])]},
            "exactly one step": {**PY_BODY, "functions": [fn("x", steps={})]},
            "duplicate function ids": {**PY_BODY, "functions": [fn("x"), fn("x")]},
            "concurrency.key": {**PY_BODY, "functions": [fn("x", concurrency={
                "limit": 1, "key": "event.("})]},
            "batchEvents cannot be combined with cancel": {**PY_BODY, "functions": [fn(
                "x", batchEvents={"maxSize": 10, "timeout": "5s"},
                cancel=[{"event": "app/stop"}])]},
            # What PostgreSQL cannot store, and URLs no client can call, are refused (not 500).
            "NUL character": {**PY_BODY, "appname": "my\x00app"},
            "app URL 'http://[::1' is not": {**PY_BODY, "url": "http://[::1"},
            "app URL 'http://' is not": {**PY_BODY, "url": "http://"},
            "step URL": {**PY_BODY, "functions": [fn("x", steps={"step": {
                "runtime": {"type": "http", "url": "https://host:99999/"}}})]},
            "batchEvents cannot be combined with debounce": {**PY_BODY, "functions": [fn(
                "x", batch_events={"max_size": 10, "timeout": "5s"},
                debounce={"period": "5s"})]},
            "batchEvents cannot be combined with singleton": {**PY_BODY, "functions": [fn(
                "x", batchEvents={"maxSize": 10, "timeout": "5s"},
                singleton={"mode": "skip"})]},
            "batchEvents cannot be combined with priority.run": {**PY_BODY, "functions": [fn(
                "x", batchEvents={"maxSize": 10, "timeout": "5s"},
                priority={"run": "event.data.p"})]},
            "concurrency: at most 2 limits": {**PY_BODY, "functions": [fn(
                "x", concurrency=[{"limit": 1}, {"limit": 2}, {"limit": 3}])]},
            "rateLimit.period: at most 1d": {**PY_BODY, "functions": [fn(
                "x", rateLimit={"limit": 1, "period": "25h"})]},
            "debounce.period: at least 1s": {**PY_BODY, "functions": [fn(
                "x", debounce={"period": "10ms"})]},
            "cancel: at most 5": {**PY_BODY, "functions": [fn(
                "x", cancel=[{"event": f"app/e{i}"} for i in range(6)])]},
            "singleton.mode: skip or cancel": {**PY_BODY, "functions": [fn(
                "x", singleton={"mode": "later"})]},
        }
        for expected, body in cases.items():
            answer = await register(http, body)
            assert answer.status_code == 400, (expected, answer.text)
            assert expected in answer.json()["error"], (expected, answer.json())
        mismatch = await register(http, PY_BODY, **{"x-inngest-expected-server-kind": "cloud"})
        assert mismatch.status_code == 400
        assert mismatch.json()["error"] == "Expected server kind cloud, got dev"
        assert await functions(core) == {}


async def test_serve_needs_the_environments_signing_key(db_url: str, tmp_path: Path) -> None:
    # The app is on loopback, which serve only calls when allowed (tests/unit/test_netguard.py).
    settings = make_settings(db_url, tmp_path, mode="serve", allow_app_hosts=("127.0.0.1",))
    async with app_client(settings) as (http, core):
        keys = SigningKeys(core.storage, core.vault.sealer.keyring)
        production = await core.storage.write(lambda tx: ensure_env(tx, "production"))
        staging = await core.storage.write(lambda tx: ensure_env(tx, "staging"))
        key = (await keys.create(production)).current
        other = (await keys.create(staging)).current

        assert (await register(http, PY_BODY)).status_code == 401
        wrong = await register(http, PY_BODY, authorization=f"Bearer {hash_key('signkey-x-00')}")
        assert wrong.status_code == 401
        answer = await register(http, PY_BODY, authorization=f"Bearer {hash_key(key)}")
        assert answer.status_code == 200, answer.text
        assert {fn.env_id for fn in (await functions(core)).values()} == {production.id}
        # The staging key registers into staging.
        assert (await register(http, PY_BODY, authorization=f"Bearer {other}")).status_code \
            == 200
        rows = await core.storage.read(registration.live_functions)
        assert {row.env_id for row in rows} == {production.id, staging.id}


async def test_signing_key_rotation(db_url: str, tmp_path: Path) -> None:
    async with app_client(make_settings(db_url, tmp_path, mode="serve")) as (_, core):
        keys = SigningKeys(core.storage, core.vault.sealer.keyring)
        env = await core.storage.write(lambda tx: ensure_env(tx, "production"))
        first = await keys.create(env)
        assert first.current.startswith("signkey-prod-")
        assert first.fallback is None
        second = await keys.create(env)
        assert second.fallback == first.current
        # A fresh reader (another process) decrypts both.
        reader = SigningKeys(core.storage, core.vault.sealer.keyring)
        assert await reader.of_env(env.id) == second
        assert await reader.env_for_bearer(hash_key(first.current)) == env.id
        assert await keys.drop_fallback(env.id)
        assert not await keys.drop_fallback(env.id)
        assert await keys.env_for_bearer(hash_key(first.current)) is None
        assert await keys.env_for_bearer(hash_key(second.current)) == env.id
        stored = await core.storage.read(lambda tx: tx.one("signing_keys_of_env", (env.id,)))
        assert stored is not None
        assert second.current.encode() not in bytes(stored[0])  # sealed, not in the clear
