"""The v2 client's send bodies: renamed into Tidings events, errors named as the client wrote
the fields."""

from __future__ import annotations

import json

import pytest

from tidings.errors import PayloadTooLarge, RequestRejected
from tidings.settings import Limits
from tidings.triggerdev.wire import parse_send

NOW = 1_780_000_000_000
LIMITS = Limits()


def send(body: object, *, bulk: bool = False) -> list[object]:
    return list(parse_send(json.dumps(body).encode(), LIMITS, NOW, bulk=bulk).events)


def refused(body: object, *, bulk: bool = False) -> str:
    with pytest.raises(RequestRejected) as caught:
        send(body, bulk=bulk)
    return caught.value.message


def test_fields_are_renamed_into_tidings_events() -> None:
    [event] = send({"event": {"name": "a", "payload": {"x": 1}, "context": {"c": 2},
                              "id": "e1", "timestamp": "2026-01-01T00:00:00Z",
                              "source": "web", "payloadType": "JSON"},
                    "options": {"deliverAfter": 2, "accountId": "acc"}})
    assert (event.name, event.data, event.context, event.key, event.source) == (
        "a", b'{"x":1}', {"c": 2}, "e1", "web")
    assert event.ts == 1_767_225_600_000 and event.deliver_at == NOW + 2000
    assert event.account_id == "acc"
    [bare] = send({"event": {"name": "b"}})
    assert (bare.data, bare.key, bare.source, bare.deliver_at) == (b"{}", None, "tidings", None)
    [at] = send({"event": {"name": "c"}, "options": {"deliverAt": "2030-01-01T00:00:00Z",
                                                     "deliverAfter": 5}})
    assert at.deliver_at == 1_893_456_000_000  # deliverAt wins


def test_errors_name_fields_as_the_client_does() -> None:
    assert refused({"event": {"name": "x", "payload": [1]}}).startswith("event.payload:")
    assert refused({"event": {"name": 1}}).startswith("event.name: expected `str`")
    assert refused({"events": [{"name": "ok"}, {"name": "tidings/x"}]},
                   bulk=True).startswith("events[1].name:")
    message = refused({"events": [{"name": "a"}, {"name": "b"}],
                       "options": {"deliverAt": "later"}}, bulk=True)
    assert message.count("options.deliverAt") == 1  # once, not per event
    assert "zz" in refused({"event": {"name": "x", "zz": 1}})
    assert "zz" in refused({"event": {"name": "x"}, "options": {"zz": 1}})
    assert "zz" in refused({"event": {"name": "x"}, "zz": 1})
    assert "payloadType" in refused({"event": {"name": "x", "payloadType": "REQUEST"}})
    assert refused({"events": {}}, bulk=True).startswith("events:")
    assert refused({"options": {}}).startswith("event:")
    assert refused([1]).startswith("the body")
    with pytest.raises(PayloadTooLarge):
        send({"events": [{"name": "x"}] * (LIMITS.max_events_per_request + 1)}, bulk=True)
