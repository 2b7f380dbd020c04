"""The outbound-call guard (``tidings.netguard``): which addresses a policy refuses, and that
the connect-time hooks — ``Policy.connect`` for asyncio protocols (the HTTP driver's client),
``transport`` for httpx (app syncs) — connect only to addresses they checked, whatever the name
resolved to a moment earlier.

Only loopback is ever connected to: names are stubbed by replacing ``netguard.resolve``, and
the addresses refused are refused before any connection is attempted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings
from tests.unit.helpers import app_client
from tidings import netguard
from tidings.core import Core
from tidings.engine.http_client import AppClient, CallFailed
from tidings.errors import ConfigError
from tidings.functions.registration import live_functions
from tidings.keys import SigningKeys, create_key, ensure_env
from tidings.netguard import Policy, Refused
from tidings.settings import Mode

GUARDED = Policy.build()
PUBLIC = "93.184.215.14"  # a public address: resolved to in stubs, never connected to


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections are made here, not by a proxy from the environment."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("127.9.9.9", "loopback"), ("::1", "loopback"),
    ("10.0.0.5", "private"), ("172.16.3.4", "private"), ("192.168.1.1", "private"),
    ("fc00::1", "private"), ("fd12:3456::1", "private"),
    ("169.254.169.254", "link-local"), ("169.254.0.1", "link-local"), ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"), ("239.1.2.3", "multicast"), ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("100.64.0.1", "non-public"), ("240.0.0.1", "private"),
    # IPv4 inside IPv6: mapped, NAT64, 6to4.
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "link-local"),
    ("64:ff9b::a00:1", "private"), ("2002:a9fe:a9fe::1", "link-local"),
])
def test_addresses_that_are_not_public_are_refused(address: str, kind: str) -> None:
    reason = GUARDED.why_refused(address)
    assert reason is not None
    assert kind in reason
    assert "--allow-app-host" in reason
    with pytest.raises(Refused):
        GUARDED.check(address)
    assert Policy.open().why_refused(address) is None  # dev


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert GUARDED.why_refused(address) is None


def test_allow_entries_open_networks_addresses_and_names() -> None:
    policy = Policy.build(["10.1.0.0/16", "192.168.1.7", "fd00::/8", "App.Internal.",
                           "*.svc.cluster.local"])
    assert policy.why_refused("10.1.200.3") is None
    assert policy.why_refused("::ffff:10.1.0.9") is None  # mapped into an allowed network
    assert policy.why_refused("10.2.0.1") is not None
    assert policy.why_refused("192.168.1.7") is None
    assert policy.why_refused("192.168.1.8") is not None
    assert policy.why_refused("fd00::5") is None
    assert policy.why_refused("169.254.169.254") is not None
    assert policy.allows_name("app.internal")
    assert policy.allows_name("orders.shop.svc.cluster.local")
    assert not policy.allows_name("svc.cluster.local.evil.com")
    assert not policy.allows_name("internal")
    for junk in ("10.0.0.0/33", "http://x", "a b", "x/y"):
        with pytest.raises(ConfigError, match="--allow-app-host"):
            Policy.build([junk])


# -- a name stub and a loopback listener ----------------------------------------------------------


@dataclass
class Names:
    """A resolver stub: each name answers its next list of addresses (the last one again once
    they are used up); every look-up is recorded."""

    answers: dict[str, list[list[str]]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if netguard._literal(host) is not None:
            return [host.strip("[]")]
        queue = self.answers.get(host)
        if not queue:
            raise OSError(f"stub: {host} does not resolve")
        return queue.pop(0) if len(queue) > 1 else queue[0]


@pytest.fixture
def names(monkeypatch: pytest.MonkeyPatch) -> Names:
    stub = Names()
    monkeypatch.setattr(netguard, "resolve", stub)
    return stub


@dataclass
class Listener:
    """A loopback HTTP server answering every request with ``answer``; counts connections."""

    port: int
    connections: int = 0
    answer: bytes = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                     b"content-length: 2\r\n\r\n{}")


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    found = Listener(0)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        found.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            writer.write(found.answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    found.port = server.sockets[0].getsockname()[1]
    async with server:
        yield found


# -- connect-time checks -------------------------------------------------------------------------


async def test_connect_refuses_a_name_resolving_to_loopback_before_connecting(
        names: Names, listener: Listener) -> None:
    names.answers["app.invalid"] = [["127.0.0.1"]]
    with pytest.raises(Refused, match=r"app.invalid: 127.0.0.1 is a loopback address"):
        await GUARDED.connect(asyncio.Protocol, "app.invalid", listener.port)
    assert listener.connections == 0


async def test_connect_goes_to_the_checked_address_when_allowed(
        names: Names, listener: Listener) -> None:
    names.answers["app.invalid"] = [["127.0.0.1"]]
    transport, _ = await Policy.build(["127.0.0.0/8"]).connect(
        asyncio.Protocol, "app.invalid", listener.port)
    assert transport.get_extra_info("peername")[0] == "127.0.0.1"
    transport.close()
    # A name trusted by name is connected to by name: the stub is not asked.
    names.asked.clear()
    transport, _ = await Policy.build(["localhost"]).connect(
        asyncio.Protocol, "localhost", listener.port)
    transport.close()
    assert names.asked == []


async def test_connect_skips_refused_addresses_of_a_mixed_answer(
        names: Names, listener: Listener) -> None:
    names.answers["mixed.invalid"] = [["169.254.169.254", "127.0.0.1"]]
    transport, _ = await Policy.build(["127.0.0.1"]).connect(
        asyncio.Protocol, "mixed.invalid", listener.port)
    assert transport.get_extra_info("peername")[0] == "127.0.0.1"
    transport.close()
    assert listener.connections <= 1


async def rebinding(names: Names, name: str) -> Callable[[], None]:
    """``name`` resolves to a public address when first asked, to loopback after."""
    names.answers[name] = [[PUBLIC], ["127.0.0.1"]]
    assert await GUARDED.vet_url(f"http://{name}/api/inngest") is None  # looks fine at first

    def rebound() -> None:
        assert names.asked.count(name) == 2
    return rebound


async def test_the_http_driver_client_refuses_a_rebound_name_at_connect(
        names: Names, listener: Listener) -> None:
    rebound = await rebinding(names, "rebind.invalid")
    client = AppClient(timeout=10, guard=GUARDED)
    try:
        with pytest.raises(CallFailed, match=r"127.0.0.1 is a loopback address"):
            await client.post(f"http://rebind.invalid:{listener.port}/api/inngest", b"{}", {})
    finally:
        await client.aclose()
    rebound()
    assert listener.connections == 0


async def test_the_httpx_transport_refuses_a_rebound_name_at_connect(
        names: Names, listener: Listener) -> None:
    rebound = await rebinding(names, "rebind.invalid")
    async with httpx.AsyncClient(transport=netguard.transport(GUARDED)) as http:
        with pytest.raises(httpx.ConnectError, match=r"127.0.0.1 is a loopback address"):
            await http.put(f"http://rebind.invalid:{listener.port}/api/inngest", content=b"{}")
    rebound()
    assert listener.connections == 0


async def test_the_httpx_transport_reaches_allowed_addresses(
        names: Names, listener: Listener) -> None:
    names.answers["app.invalid"] = [["127.0.0.1"]]
    allowed = Policy.build(["127.0.0.0/8"])
    async with httpx.AsyncClient(transport=netguard.transport(allowed)) as http:
        reply = await http.put(f"http://app.invalid:{listener.port}/api/inngest", content=b"{}")
    assert reply.status_code == 200
    assert listener.connections == 1
    assert netguard.transport(Policy.open()) is None  # dev: httpx's own transport


async def test_through_a_proxy_only_the_name_is_checked(monkeypatch: pytest.MonkeyPatch,
                                                         names: Names) -> None:
    """httpx ignores the environment's proxy when given a transport: with a proxy set, the
    guard leaves httpx its own (the proxy connects) and checks names only."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert netguard.transport(GUARDED) is None
    names.answers["db.invalid"] = [["10.0.0.5"]]
    assert "10.0.0.5 is a private address" in (await GUARDED.vet_url("https://db.invalid/x")
                                                or "")


# -- app URLs through the API (both backends) ----------------------------------------------------

APP = {"appname": "my-app", "framework": "flask", "sdk": "py:v0.5.19", "v": "0.1"}


def registration(url: str, step_url: str | None = None) -> dict[str, object]:
    step = step_url or f"{url}?fnId=my-app-f&stepId=step"
    return {**APP, "url": url, "functions": [{
        "id": "my-app-f", "name": "f", "triggers": [{"event": "app/f"}],
        "steps": {"step": {"id": "step", "name": "step",
                           "runtime": {"type": "http", "url": step}}}}]}


@contextlib.asynccontextmanager
async def serving(db_url: str, tmp_path: Path, *, mode: Mode = "serve",
                  allow: tuple[str, ...] = ()) -> AsyncIterator[Api]:
    settings = make_settings(db_url, tmp_path, mode=mode, allow_app_hosts=allow)
    async with app_client(settings) as (http, core):
        api_key = signing = None
        if mode == "serve":
            api_key, _ = await create_key(core.storage, "production", "api")
            keys = SigningKeys(core.storage, core.vault.sealer.keyring)
            production = await core.storage.write(lambda tx: ensure_env(tx, "production"))
            signing = (await keys.create(production)).current
        yield Api(http, core, api_key, signing)


@dataclass
class Api:
    http: httpx.AsyncClient
    core: Core
    api_key: str | None
    signing_key: str | None

    def _auth(self, key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"} if key else {}

    async def sync(self, url: str) -> httpx.Response:
        return await self.http.post("/v1/apps/sync", json={"url": url},
                                    headers=self._auth(self.api_key))

    async def apps(self) -> list[dict[str, object]]:
        reply = await self.http.get("/v1/apps", headers=self._auth(self.api_key))
        assert reply.status_code == 200, reply.text
        data: list[dict[str, object]] = reply.json()["data"]
        return data

    async def register(self, body: dict[str, object]) -> httpx.Response:
        return await self.http.post("/fn/register", json=body,
                                    headers=self._auth(self.signing_key))

    async def functions(self) -> list[str]:
        return [row.slug for row in await self.core.storage.read(live_functions)]


async def test_serve_refuses_app_urls_that_are_not_public(
        db_url: str, tmp_path: Path, names: Names, listener: Listener) -> None:
    names.answers.update({
        "metadata.invalid": [["169.254.169.254"]], "db.invalid": [["10.0.0.5"]],
        "v6.invalid": [["fd00::1"]], "self.invalid": [["127.0.0.1"]],
        "public.invalid": [[PUBLIC]]})
    refused = {
        "http://169.254.169.254/latest/meta-data/": "link-local",
        "http://metadata.invalid/computeMetadata/v1/": "link-local",
        "http://db.invalid:8080/admin": "private",
        "http://v6.invalid/api/inngest": "private",
        f"http://self.invalid:{listener.port}/api/inngest": "loopback",
        f"http://127.0.0.1:{listener.port}/api/inngest": "loopback",
        f"http://[::ffff:127.0.0.1]:{listener.port}/api/inngest": "loopback",
        f"http://0.0.0.0:{listener.port}/api/inngest": "unspecified",
        "http://224.0.0.1/": "multicast",
    }
    async with serving(db_url, tmp_path) as api:
        for url, kind in refused.items():
            answer = await api.sync(url)
            assert answer.status_code == 400, (url, answer.text)
            error = answer.json()["error"]
            assert error.startswith("url: ") and kind in error, (url, error)
            registered = await api.register(registration(url))
            assert registered.status_code == 400, (url, registered.text)
            assert registered.json()["error"].startswith("Invalid request: url: ")
        # A public app whose function steps point inside is refused too, naming the function.
        inside = await api.register(registration("https://public.invalid/api/inngest",
                                                 "http://metadata.invalid/latest"))
        assert inside.status_code == 400
        assert "functions['my-app-f'] step URL: metadata.invalid: 169.254.169.254 is a " \
               "link-local" in inside.json()["error"]
        assert await api.apps() == []
        assert await api.functions() == []
    assert listener.connections == 0


async def test_allow_app_host_lets_them_through(
        db_url: str, tmp_path: Path, names: Names, listener: Listener) -> None:
    names.answers["app.invalid"] = [["127.0.0.1"]]
    url = f"http://app.invalid:{listener.port}/api/inngest"
    async with serving(db_url, tmp_path, allow=("127.0.0.0/8",)) as api:
        assert (await api.register(registration(url))).status_code == 200
        assert await api.functions() == ["my-app-f"]
        assert (await api.sync(url)).status_code == 200  # the listener answers 200 {}
    assert listener.connections == 1


async def test_answers_are_not_echoed_to_callers(
        db_url: str, tmp_path: Path, names: Names, listener: Listener) -> None:
    names.answers["app.invalid"] = [["127.0.0.1"]]
    url = f"http://app.invalid:{listener.port}/api/inngest"
    secret = b'{"error": "db password is hunter2", "keys": ["AKIA-SECRET"]}'
    listener.answer = (b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json"
                       b"\r\ncontent-length: %d\r\n\r\n%s" % (len(secret), secret))
    async with serving(db_url, tmp_path, allow=("127.0.0.1",)) as api:
        answer = await api.sync(url)
        assert answer.status_code == 422
        assert answer.json()["error"] == "the app answered 500 Internal Server Error"
        assert b"hunter2" not in answer.content and b"AKIA" not in answer.content
        [app] = await api.apps()
        assert app["error"] == "the app answered 500 Internal Server Error"
        # An Inngest SDK's own error message is kept: one printable line, cut short.
        message = b'{"message": "bad signature\\u001b[2J\\r\\nX-Injected: 1 ' + b"x" * 500 + b'"}'
        listener.answer = (b"HTTP/1.1 401 Unauthorized\r\nx-inngest-sdk: js:v4.24.0\r\n"
                           b"content-length: %d\r\n\r\n%s" % (len(message), message))
        error = (await api.sync(url)).json()["error"]
        assert error.startswith("the app answered 401 Unauthorized: bad signature [2J "
                                "X-Injected: 1 xxx")
        assert len(error) < 260 and error.endswith("…")
        assert not any(ord(c) < 32 for c in error)
        [app] = await api.apps()
        assert app["error"] == error


async def test_dev_calls_apps_on_loopback(db_url: str, tmp_path: Path,
                                          listener: Listener) -> None:
    listener.answer = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
    async with serving(db_url, tmp_path, mode="dev") as api:
        answer = await api.sync(f"http://127.0.0.1:{listener.port}/api/inngest")
        assert answer.status_code == 422
        assert answer.json()["error"] == "the app answered 404 Not Found"
        url = f"http://127.0.0.1:{listener.port}/api/inngest"
        assert (await api.register(registration(url))).status_code == 200
    assert listener.connections == 1


async def test_a_name_rebound_to_loopback_is_refused_at_connect(
        db_url: str, tmp_path: Path, names: Names, listener: Listener) -> None:
    # Public when the request is checked, loopback when the sync connects.
    names.answers["rebind.invalid"] = [[PUBLIC], ["127.0.0.1"]]
    async with serving(db_url, tmp_path) as api:
        answer = await api.sync(f"http://rebind.invalid:{listener.port}/api/inngest")
        assert answer.status_code == 422, answer.text
        data = answer.json()["data"]
        assert data["status"] == "unreachable"
        assert "rebind.invalid: 127.0.0.1 is a loopback address" in data["error"]
    assert names.asked.count("rebind.invalid") == 2
    assert listener.connections == 0
