"""A v2 ``intervalTrigger``'s period as the cron expression Tidings runs it by, or refused."""

from __future__ import annotations

import pytest

from tidings.apps.trigger_index import _interval_cron
from tidings.errors import ConfigError


@pytest.mark.parametrize(("seconds", "cron"), [
    (60, "* * * * *"), (300, "*/5 * * * *"), (1800, "*/30 * * * *"), (3600, "0 * * * *"),
    (7200, "0 */2 * * *"), (43200, "0 */12 * * *"), (86400, "0 0 * * *"),
    (3 * 86400, "0 0 */3 * *"),
])
def test_periods_cron_can_say(seconds: int, cron: str) -> None:
    assert _interval_cron("j", seconds) == cron


@pytest.mark.parametrize("seconds", [90, 420, 5400, 5 * 3600, 59, 30 * 86400 + 1, 60.5, True,
                                     "60", None])
def test_other_periods_are_refused_naming_the_job(seconds: object) -> None:
    with pytest.raises(ConfigError, match="job 'j'"):
        _interval_cron("j", seconds)
