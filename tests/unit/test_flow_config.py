"""Flow-control settings as registered, and key values as routing and claims compute them."""

from __future__ import annotations

from typing import Any

import pytest

from tidings.errors import ConfigError
from tidings.functions.expressions import evaluate
from tidings.functions.flow_config import key_value, parse_flow, priority_seconds

EVENT = {"id": "e1", "name": "app/x", "ts": 5,
         "data": {"user": "ana", "n": 3, "f": 1.5, "ok": True, "o": {"a": [1, 2]}, "z": None}}


@pytest.mark.parametrize("expression", [
    "event.data.user", "event.data.n", "event.data.f", "event.data.ok", "event.data.o",
    "event.data.o.a", "event.data.z", "event.data.missing", "event.data.user.deeper",
    "event.name", "event.id", " event.data.user ",
    # not plain paths: evaluated by CEL
    "event.data.user + '-' + string(event.data.n)", "'constant'", "event.data.n * 2",
])
def test_plain_field_paths_give_what_cel_gives(expression: str) -> None:
    value = evaluate(expression.strip(), {"event": EVENT})
    expected = "" if value is None else value if isinstance(value, str) else None
    got = key_value(expression, EVENT)
    if expected is not None:
        assert got == expected
    else:
        import msgspec

        assert got == msgspec.json.encode(value).decode()


def test_priority_is_clamped_and_only_numbers_count() -> None:
    assert priority_seconds("event.data.n * 100000", EVENT) == 43_200
    assert priority_seconds("0 - event.data.n * 100000", EVENT) == -43_200
    assert priority_seconds("event.data.user", EVENT) == 0
    assert priority_seconds("event.data.f", EVENT) == 1


def test_shapes_as_sdks_send_them() -> None:
    flow = parse_flow({"concurrency": 3, "throttle": {"limit": 0, "period": "1m0s"},
                       "rate_limit": {"limit": 2, "period": 3_600_000},
                       "batch_events": None, "timeouts": {"start": "10s"}})
    assert flow is not None
    assert [(c.limit, c.scope) for c in flow.concurrency] == [(3, "fn")]
    assert flow.throttle is not None and flow.throttle.limit == 1  # 0 reads as 1
    assert flow.throttle.period_ms == 60_000
    assert flow.rate_limit is not None and flow.rate_limit.period_ms == 3_600_000
    assert flow.start_ms == 10_000 and flow.finish_ms is None
    assert parse_flow({"id": "x", "triggers": []}) is None
    assert parse_flow({"concurrency": 0}) is None  # 0: no limit of its own


@pytest.mark.parametrize(("config", "words"), [
    ({"concurrency": [{"limit": 1}] * 3}, "concurrency: at most 2 limits"),
    ({"concurrency": {"limit": "x"}}, "concurrency.limit: expected a whole number"),
    ({"throttle": {"limit": 1}}, "throttle.period is required"),
    ({"rateLimit": {"limit": 1, "period": "2d"}}, "rateLimit.period: at most 1d"),
    ({"debounce": {"period": "10d"}}, "debounce.period: at most 1w"),
    ({"batchEvents": {"maxSize": 2000, "timeout": "1s"}}, "batchEvents.maxSize: 2 to 1000"),
    ({"batchEvents": {"maxSize": 2}}, "batchEvents.timeout is required"),
    ({"singleton": {"mode": "queue"}}, "singleton.mode"),
    ({"cancel": [{"if": "true"}]}, "cancel.event"),
    ({"priority": {"run": "event.("}}, "priority.run"),
    ({"timeouts": {"finish": "soon"}}, "timeouts.finish"),
])
def test_out_of_bounds_settings_name_themselves(config: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        parse_flow(config)
