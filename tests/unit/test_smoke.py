import httpx


async def test_send_then_read_back(client: httpx.AsyncClient) -> None:
    reply = await client.post("/e/key", json={"name": "app/x", "data": {"a": 1}})
    assert reply.status_code == 200, reply.text
    (event_id,) = reply.json()["ids"]
    got = await client.get(f"/v1/events/{event_id}")
    assert got.json()["data"]["data"] == {"a": 1}


def test_live_server_health(live_server) -> None:  # type: ignore[no-untyped-def]
    assert httpx.get(f"{live_server.url}/health").json()["status"] == 200
