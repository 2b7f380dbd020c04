"""CEL expressions (``if`` on triggers, waits and cancellations; keys of flow control).

Variables are ``event`` (the triggering event), ``async`` (the incoming event, for waits and
cancellations) and ``vars``. A missing field or a type error makes a condition false rather than
failing the run: an event without the field simply does not match.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import cel

from tidings.errors import ConfigError


class ExpressionError(ConfigError):
    """The expression is not valid CEL."""


@lru_cache(maxsize=4096)
def compile_expression(source: str) -> Any:
    """The compiled program of an expression; ``ExpressionError`` names what is wrong."""
    try:
        return cel.compile(source)
    except (ValueError, RuntimeError) as exc:
        raise ExpressionError(f"invalid expression {source!r}: {exc}") from None


def check_expression(source: str) -> None:
    compile_expression(source)


def evaluate(source: str, variables: dict[str, Any]) -> Any:
    """The value of an expression, or None when it cannot be evaluated for these variables."""
    try:
        return compile_expression(source).execute(variables)
    except ExpressionError:
        raise
    except Exception:
        return None


def matches(source: str | None, variables: dict[str, Any]) -> bool:
    """True when there is no condition, or it evaluates to exactly ``true``."""
    if not source:
        return True
    return evaluate(source, variables) is True
