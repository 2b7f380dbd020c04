"""Scenario: the official ``inngest`` Python SDK (0.5.x) sends events to a live ``tidings dev``;
the ids it returns are the ids ``/v1/events`` shows, and a retried request (same
``x-inngest-event-id-seed`` header) stores nothing twice."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator, Iterator

import httpx
import inngest
import pytest

from tests.acceptance.sdk_apps import listed_ids, stored
from tests.conftest import LiveServer
from tidings.ids import now_ms

# Variables the SDK reads at construction that would send events to another environment.
ENVIRONMENT_VARIABLES = (
    "INNGEST_DEV", "INNGEST_ENV", "INNGEST_EVENT_KEY", "INNGEST_EVENT_API_BASE_URL",
    "INNGEST_BASE_URL", "RAILWAY_GIT_BRANCH", "RENDER_GIT_BRANCH", "VERCEL_GIT_COMMIT_REF",
)
SEED_HEADER = "x-inngest-event-id-seed"


def new_client(server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> inngest.Inngest:
    for name in ENVIRONMENT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return inngest.Inngest(
        app_id="tidings-acceptance", is_production=False, event_api_base_url=server.url
    )


# The SDK has no close(): its pooled connections would be reported as a ResourceWarning, an
# error under our pytest settings, so the fixtures close its two httpx clients themselves.
@pytest.fixture
def sync_client(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[inngest.Inngest]:
    client = new_client(live_server, monkeypatch)
    yield client
    client._http_client._http_client_sync.close()


@pytest.fixture
async def async_client(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[inngest.Inngest]:
    client = new_client(live_server, monkeypatch)
    yield client
    await client._http_client._http_client.aclose()
    client._http_client._http_client_sync.close()


def test_send_sync_returns_the_stored_id(
    live_server: LiveServer, sync_client: inngest.Inngest
) -> None:
    before = now_ms()
    ids = sync_client.send_sync(
        inngest.Event(name="py/user.signup", data={"email": "py@example.com", "plan": "pro"})
    )
    after = now_ms()

    [event_id] = ids
    record = stored(live_server, event_id)
    assert record["id"] == event_id
    assert record["name"] == "py/user.signup"
    assert record["data"] == {"email": "py@example.com", "plan": "pro"}
    assert record["user"] == {}
    assert record["event_id"] == event_id
    assert record["idempotency_key"] is None
    assert before <= record["ts"] <= after
    assert listed_ids(live_server, "py/user.signup") == [event_id]


async def test_async_send_of_several_events_returns_their_stored_ids(
    live_server: LiveServer, async_client: inngest.Inngest
) -> None:
    before = now_ms()
    ids = await async_client.send([
        inngest.Event(name="py/order.created", data={"order": 1}),
        inngest.Event(name="py/order.created", data={"order": 2}, id="py-order-2",
                      ts=1700000000000),
        inngest.Event(name="py/order.shipped", data={"order": 1, "carrier": "post"}),
    ])
    after = now_ms()

    assert len(ids) == len(set(ids)) == 3
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        records = [(await http.get(f"/v1/events/{event_id}")).json()["data"] for event_id in ids]
        created = (await http.get("/v1/events", params={"name": "py/order.created"})).json()

    first, second, third = records
    assert [r["id"] for r in records] == ids
    assert (first["name"], first["data"]) == ("py/order.created", {"order": 1})
    assert first["event_id"] == ids[0]
    assert first["idempotency_key"] is None
    assert before <= first["ts"] <= after

    assert (second["name"], second["data"]) == ("py/order.created", {"order": 2})
    assert second["event_id"] == "py-order-2"
    assert second["idempotency_key"] == "py-order-2"
    assert second["ts"] == 1700000000000

    assert (third["name"], third["data"]) == ("py/order.shipped", {"order": 1, "carrier": "post"})
    assert before <= third["ts"] <= after

    assert sorted(r["id"] for r in created["data"]) == sorted(ids[:2])


def test_a_retried_request_with_the_same_seed_is_stored_once(
    live_server: LiveServer, sync_client: inngest.Inngest
) -> None:
    """The SDK's retry loop resends one built request, seed header included; replay it."""
    events = [inngest.Event(name="py/retried", data={"position": n}) for n in range(3)]
    request = sync_client._build_send_request(events)
    assert isinstance(request, httpx.Request), request
    seed = request.headers[SEED_HEADER]
    millis, _, entropy = seed.partition(",")
    assert millis.isdigit()
    assert entropy

    with httpx.Client(timeout=10) as http:
        first = http.send(request)
        retry = http.send(request)

    assert first.status_code == retry.status_code == 200
    ids = first.json()["ids"]
    assert len(ids) == len(set(ids)) == 3
    assert retry.json()["ids"] == ids
    assert sorted(listed_ids(live_server, "py/retried")) == sorted(ids)
    for position, event_id in enumerate(ids):
        record = stored(live_server, event_id)
        assert record["data"] == {"position": position}

    # The same events under a fresh seed (a new send, not a retry) are new events.
    again = sync_client.send_sync(events)
    assert set(again).isdisjoint(ids)
    assert sorted(listed_ids(live_server, "py/retried")) == sorted([*ids, *again])


def test_a_hand_made_seed_header_gives_the_same_ids_on_every_attempt(
    live_server: LiveServer,
) -> None:
    """The same property over plain httpx: a body and seed shaped as the SDK makes them
    (``"<millis>,<base64 of 10 random bytes>"``, see ``client_lib.client._seed``)."""
    body = [
        {"name": "py/manual", "data": {"position": 0}, "ts": now_ms()},
        {"name": "py/manual", "data": {"position": 1}, "ts": now_ms()},
    ]
    seed = f"{now_ms()},{base64.b64encode(secrets.token_bytes(10)).decode()}"
    headers = {"content-type": "application/json", SEED_HEADER: seed}
    url = f"{live_server.url}/e/NO_EVENT_KEY_SET"

    with httpx.Client(timeout=10) as http:
        answers = [http.post(url, json=body, headers=headers) for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 200]
    ids = answers[0].json()["ids"]
    assert len(ids) == len(set(ids)) == 2
    assert all(a.json()["ids"] == ids for a in answers)
    assert sorted(listed_ids(live_server, "py/manual")) == sorted(ids)
    assert [stored(live_server, i)["data"] for i in ids] == [{"position": 0}, {"position": 1}]
