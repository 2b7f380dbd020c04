"""The Python SDK: sending Inngest-style and Trigger.dev-style, errors, retries without doubles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

import tidings
from tests.conftest import LiveServer
from tests.unit.helpers import all_events
from tidings import Event, SendError, Tidings
from tidings.core import Core
from tidings.server import create_app


def sdk(core: Core, transport: httpx.AsyncBaseTransport | None = None, **kw: str) -> Tidings:
    app = create_app(core.settings, core)
    return Tidings("test-app", base_url="http://tidings",
                   transport=transport or httpx.ASGITransport(app=app), **kw)


async def test_send_events_and_dicts(core: Core, client: httpx.AsyncClient) -> None:
    client_sdk = sdk(core)
    one = await client_sdk.send(Event(name="app/one", data={"a": 1}, user={"email": "a@b.c"}))
    many = await client_sdk.send([Event(name="app/two"), {"name": "app/three", "v": "2"}])
    assert len(one) == 1 and len(many) == 2
    stored = {e["id"]: e for e in await all_events(client)}
    assert stored[one[0]]["user"] == {"email": "a@b.c"}
    assert stored[many[1]]["v"] == "2"


async def test_send_event_returns_the_record(core: Core) -> None:
    client_sdk = sdk(core)
    when = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    record = await client_sdk.send_event(
        name="invoice/due", payload={"amount": 5}, context={"by": "cron"}, id="inv-9",
        source="billing", deliver_at=when)
    assert record.name == "invoice/due" and record.payload == {"amount": 5}
    assert record.context == {"by": "cron"} and record.source == "billing"
    assert record.deliver_at == when and record.delivered_at is None
    assert record.event_id == "inv-9"
    again = await client_sdk.send_event(name="invoice/due", payload={"amount": 6}, id="inv-9")
    assert again.id == record.id and again.payload == {"amount": 5}
    later = await client_sdk.send_events([{"name": "a"}, Event(name="b")],
                                         deliver_after=timedelta(minutes=5))
    assert all(r.deliver_at is not None for r in later)
    gap = later[0].deliver_at - later[0].timestamp  # type: ignore[operator]
    assert timedelta(minutes=5) - timedelta(seconds=1) < gap <= timedelta(minutes=5)


async def test_client_errors_raise_with_the_server_message(core: Core) -> None:
    with pytest.raises(SendError, match=r"events\[0\]\.name") as caught:
        await sdk(core).send({"name": "inngest/nope"})
    assert caught.value.status == 400


class LosesFirstReplies(httpx.AsyncBaseTransport):
    """Delivers every request, but the first ``lost`` replies never reach the client."""

    def __init__(self, inner: httpx.AsyncBaseTransport, lost: int) -> None:
        self.inner, self.lost, self.seeds = inner, lost, []  # type: ignore[var-annotated]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seeds.append(request.headers.get("x-inngest-event-id-seed"))
        response = await self.inner.handle_async_request(request)
        await response.aread()
        if self.lost:
            self.lost -= 1
            raise httpx.ReadError("connection reset", request=request)
        return response


class Answers503(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, failures: int) -> None:
        self.inner, self.failures = inner, failures

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.failures:
            self.failures -= 1
            return httpx.Response(503, json={"ids": [], "status": 503, "error": "busy"})
        return await self.inner.handle_async_request(request)


async def test_a_retried_send_never_stores_twice(core: Core, client: httpx.AsyncClient) -> None:
    flaky = LosesFirstReplies(httpx.ASGITransport(app=create_app(core.settings, core)), lost=2)
    ids = await sdk(core, flaky).send([Event(name="pay/1"), Event(name="pay/2")])
    assert len(flaky.seeds) == 3 and len(set(flaky.seeds)) == 1
    assert sorted(e["id"] for e in await all_events(client)) == sorted(ids)


async def test_5xx_is_retried_and_gives_up(core: Core, client: httpx.AsyncClient) -> None:
    inner = httpx.ASGITransport(app=create_app(core.settings, core))
    assert len(await sdk(core, Answers503(inner, failures=2)).send(Event(name="a"))) == 1
    with pytest.raises(SendError, match="after 5 attempts"):
        await sdk(core, Answers503(inner, failures=10)).send(Event(name="b"))
    assert [e["name"] for e in await all_events(client)] == ["a"]


async def test_unreachable_server_is_a_send_error() -> None:
    client_sdk = Tidings("x", base_url="http://127.0.0.1:9", max_attempts=2)
    with pytest.raises(SendError, match="cannot reach Tidings"):
        await client_sdk.send(Event(name="a"))


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_BASE_URL", "http://example.test:1234/")
    monkeypatch.setenv("TIDINGS_EVENT_KEY", "secret-key")
    monkeypatch.setenv("TIDINGS_ENV", "feature-x")
    client_sdk = Tidings("app")
    assert (client_sdk.base_url, client_sdk.event_key, client_sdk.env) == (
        "http://example.test:1234", "secret-key", "feature-x")


def test_send_sync_against_a_live_server(live_server: LiveServer) -> None:
    client_sdk = Tidings("sync-app", base_url=live_server.url, env="branch-a")
    ids = client_sdk.send_sync([Event(name="sync/one"), {"name": "sync/two"}])
    listed = httpx.get(f"{live_server.url}/v1/events",
                       headers={"x-inngest-env": "branch-a"}).json()["data"]
    assert sorted(e["id"] for e in listed) == sorted(ids)


async def test_send_sync_refuses_inside_an_event_loop() -> None:
    with pytest.raises(RuntimeError, match=r"await client\.send"):
        Tidings("x").send_sync(Event(name="a"))


def test_public_api_is_explicit() -> None:
    assert tidings.__all__ == sorted(tidings.__all__)
    for name in tidings.__all__:
        value = getattr(tidings, name)
        if name != "__version__":
            assert value.__doc__, f"{name} needs a docstring"
