"""Durations as users write them: ``timedelta``, milliseconds, or text like ``"1h30m"``/``"2d"``."""

from __future__ import annotations

import re
from datetime import timedelta

from tidings.errors import ConfigError

_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")

Duration = timedelta | int | str


def to_ms(value: Duration, what: str = "duration") -> int:
    """Milliseconds of a duration; ``ConfigError`` naming ``what`` when it is not one."""
    if isinstance(value, timedelta):
        return int(value.total_seconds() * 1000)
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a duration, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        position, total = 0, 0.0
        for match in _PART.finditer(text):
            if match.start() != position:
                break
            total += float(match.group(1)) * _UNITS[match.group(2)]
            position = match.end()
        if text and position == len(text):
            return int(total)
    raise ConfigError(f"{what}: expected a duration like 30s, 5m, 2h, 1d or milliseconds, "
                      f"got {value!r}")


def to_text(ms: int) -> str:
    """The largest whole unit dividing ``ms`` (``90000`` → ``"90s"``), as Inngest writes them."""
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS[unit]
        if ms % size == 0 and ms >= size:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
