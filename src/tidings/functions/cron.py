"""Cron schedules: 5 fields, optionally prefixed ``TZ=Zone`` (or ``CRON_TZ=Zone``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from tidings.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Schedule:
    expression: str
    fields: str
    zone: ZoneInfo | None

    def next_after(self, ms: int) -> int:
        """The first firing strictly after ``ms`` (milliseconds since the epoch)."""
        tz = self.zone or UTC
        start = datetime.fromtimestamp(ms / 1000, tz=tz)
        following: datetime = croniter(self.fields, start).get_next(datetime)
        return int(following.timestamp() * 1000)


def parse_cron(expression: str) -> Schedule:
    text = expression.strip()
    if len(text) > 255:
        raise ConfigError("a cron expression has at most 255 characters")
    zone = None
    if text.startswith(("TZ=", "CRON_TZ=")):
        head, _, text = text.partition(" ")
        name = head.split("=", 1)[1]
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"cron {expression!r}: unknown time zone {name!r}") from None
    fields = text.strip()
    if len(fields.split()) != 5 or not croniter.is_valid(fields):
        raise ConfigError(f"cron {expression!r}: expected 5 fields (minute hour day month "
                          "weekday), optionally after TZ=Zone")
    return Schedule(expression, fields, zone)
