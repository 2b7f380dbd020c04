"""Trigger.dev's EventFilter semantics, and CEL conditions."""

from __future__ import annotations

from typing import Any

import pytest

from tidings.errors import ConfigError
from tidings.functions.cel_check import check_expression
from tidings.functions.expressions import ExpressionError, evaluate, matches
from tidings.functions.filters import check_filter, filter_matches

PAYLOAD: dict[str, Any] = {
    "tier": "pro", "age": 30, "name": "Johnny", "score": 70, "region": "US",
    "totalAmount": 150, "hobbies": ["reading", "chess"], "missing_value": None,
    "organizer": {"name": "Eric"}, "status": "ACCEPTED", "count": "18",
    "attendees": [{"name": "Ann"}, {"name": "Bo"}],
}


@pytest.mark.parametrize(("pattern", "expected"), [
    ({}, True),
    ({"tier": ["pro"]}, True),
    ({"tier": ["free"]}, False),
    ({"tier": ["free", "pro"]}, True),
    ({"count": [18]}, False),
    ({"count": ["18"]}, True),
    ({"age": [30]}, True),
    ({"age": [{"$gt": 20}, {"$lt": 40}]}, True),
    ({"age": [{"$gt": 20}, {"$lt": 25}]}, False),
    ({"name": [{"$startsWith": "Jo"}]}, True),
    ({"name": [{"$endsWith": "ny"}]}, True),
    ({"name": [{"$ignoreCaseEquals": "JOHNNY"}]}, True),
    ({"score": [{"$between": [50, 100]}]}, True),
    ({"score": [{"$between": [71, 100]}]}, False),
    ({"hobbies": [{"$includes": "reading"}]}, True),
    ({"hobbies": ["reading"]}, False),
    ({"hobbies": [{"$not": "golf"}]}, True),
    ({"tier": [{"$not": "pro"}]}, False),
    ({"tier": [{"$anythingBut": ["free", "trial"]}]}, True),
    ({"tier": [{"$anythingBut": "pro"}]}, False),
    ({"nope": [{"$exists": False}]}, True),
    ({"tier": [{"$exists": True}]}, True),
    ({"nope": ["x"]}, False),
    ({"missing_value": [{"$isNull": True}]}, True),
    ({"tier": [{"$isNull": True}]}, False),
    ({"region": ["US", "Canada"], "totalAmount": [{"$gt": 100}, {"$lt": 1000}]}, True),
    ({"organizer": {"name": ["Eric"]}, "status": ["ACCEPTED", "REJECTED"]}, True),
    ({"organizer": {"name": ["Ann"]}}, False),
    ({"attendees": {"name": ["Bo"]}}, True),
    ({"attendees": {"name": ["Cy"]}}, False),
    ({"tier": []}, True),
    ({"age": [{"$gt": "20"}]}, False),
])
def test_event_filter(pattern: dict[str, Any], expected: bool) -> None:
    assert filter_matches(pattern, PAYLOAD) is expected


def test_null_payload_matches_only_an_empty_filter() -> None:
    assert filter_matches({}, None)
    assert not filter_matches({"a": ["b"]}, None)


@pytest.mark.parametrize(
    "bad", [[], {"a": "b"}, {"a": [{"$nope": 1}]}, {"a": [{"$gt": 1, "$lt": 2}]}]
)
def test_invalid_filters_are_refused(bad: Any) -> None:
    with pytest.raises(ConfigError):
        check_filter(bad)


def test_cel_conditions() -> None:
    event = {"event": {"name": "a", "data": {"plan": "pro", "n": 5}}}
    assert matches("event.data.plan == 'pro' && event.data.n > 3", event)
    assert not matches("event.data.plan == 'free'", event)
    assert not matches("event.data.missing == 1", event)
    assert not matches("event.data.plan", event)  # not a boolean
    assert matches(None, event)
    both = {"event": {"data": {"id": 1}}, "async": {"data": {"id": 1}}}
    assert matches("async.data.id == event.data.id", both)
    assert evaluate("event.data.plan == 'pro' ? 120 : 0", event) == 120
    with pytest.raises(ExpressionError, match="invalid expression"):
        check_expression("event.data.(")
