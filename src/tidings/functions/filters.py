"""Payload and context filters on triggers, with Trigger.dev's EventFilter semantics.

A filter is an object whose keys must all match. A nested object recurses (and matches any element
of an array of objects); a leaf is an array: plain values match by equality with strict types
(OR), operator objects must all match (AND). An empty leaf matches anything.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tidings.errors import ConfigError

_MISSING = object()
MAX_DEPTH = 32
OPERATORS = frozenset({
    "$startsWith", "$endsWith", "$ignoreCaseEquals", "$exists", "$isNull", "$anythingBut",
    "$gt", "$gte", "$lt", "$lte", "$between", "$includes", "$not",
})


def check_filter(pattern: Any, where: str = "filter", depth: int = 0) -> None:
    """Raise ``ConfigError`` when ``pattern`` is not a valid EventFilter (nesting more than
    ``MAX_DEPTH`` objects deep included: matching recurses as deep as the filter does)."""
    if not isinstance(pattern, dict):
        raise ConfigError(f"{where}: a filter is an object of keys to arrays or nested objects")
    if depth >= MAX_DEPTH:
        raise ConfigError(f"{where.split('.')[0]}: nested more than {MAX_DEPTH} objects deep")
    for key, leaf in pattern.items():
        path = f"{where}.{key}"
        if isinstance(leaf, dict):
            check_filter(leaf, path, depth + 1)
        elif isinstance(leaf, list):
            for item in leaf:
                if isinstance(item, dict):
                    unknown = set(item) - OPERATORS
                    if len(item) != 1 or unknown:
                        raise ConfigError(f"{path}: an operator object has exactly one of "
                                          f"{', '.join(sorted(OPERATORS))}")
        else:
            raise ConfigError(f"{path}: expected an array of values/operators or an object")


def filter_matches(pattern: dict[str, Any] | None, value: Any) -> bool:
    """True when ``value`` (a payload or context) satisfies ``pattern``."""
    if not pattern:
        return True
    if not isinstance(value, dict):
        return False
    return _object(pattern, value)


def _object(pattern: dict[str, Any], value: dict[str, Any]) -> bool:
    for key, leaf in pattern.items():
        actual = value.get(key, _MISSING)
        if isinstance(leaf, dict):
            if isinstance(actual, list):
                if not any(isinstance(a, dict) and _object(leaf, a) for a in actual):
                    return False
            elif not isinstance(actual, dict) or not _object(leaf, actual):
                return False
        elif not _leaf(leaf, actual):
            return False
    return True


def _leaf(leaf: list[Any], actual: Any) -> bool:
    if not leaf:
        return True
    operators = [item for item in leaf if isinstance(item, dict)]
    if operators:
        return all(_operator(next(iter(op.items())), actual) for op in operators)
    if actual is _MISSING or isinstance(actual, list):
        return False
    return any(_same(actual, item) for item in leaf)


def _same(a: Any, b: Any) -> bool:
    if _number(a) and _number(b):
        return bool(a == b)
    return type(a) is type(b) and bool(a == b)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _operator(op: tuple[str, Any], actual: Any) -> bool:
    name, arg = op
    present = actual is not _MISSING
    if name == "$exists":
        return present == bool(arg)
    if name == "$isNull":
        return present and (actual is None) == bool(arg)
    if not present:
        return False
    if name in ("$startsWith", "$endsWith", "$ignoreCaseEquals"):
        if not isinstance(actual, str) or not isinstance(arg, str):
            return False
        if name == "$startsWith":
            return actual.startswith(arg)
        if name == "$endsWith":
            return actual.endswith(arg)
        return actual.casefold() == arg.casefold()
    if name in ("$gt", "$gte", "$lt", "$lte"):
        if not _number(actual) or not _number(arg):
            return False
        return bool({"$gt": actual > arg, "$gte": actual >= arg, "$lt": actual < arg,
                     "$lte": actual <= arg}[name])
    if name == "$between":
        low, high = arg
        return _number(actual) and bool(low <= actual <= high)
    if name == "$anythingBut":
        options = arg if isinstance(arg, list) else [arg]
        return not any(_same(actual, o) for o in options)
    if name == "$includes":
        return isinstance(actual, list) and any(_same(a, arg) for a in actual)
    if name == "$not":
        if isinstance(actual, list):
            return not any(_same(a, arg) for a in actual)
        return not _same(actual, arg)
    return False


# A wait whose condition is an event filter rather than an expression (Trigger.dev v2's
# ``io.waitForEvent``): the text after this marker is the JSON of ``source``, ``filter``,
# ``context_filter`` and ``account_id``, each optional. CEL cannot begin with ``@``, so no
# expression is mistaken for one.
FILTER_CONDITION = "@event-filter "


def filter_condition(spec: dict[str, Any]) -> str:
    return FILTER_CONDITION + msgspec.json.encode(spec).decode()


def filter_spec(condition: str | None) -> dict[str, Any] | None:
    """The spec of a filter condition; None for an expression (or no condition)."""
    if not condition or not condition.startswith(FILTER_CONDITION):
        return None
    try:
        spec = msgspec.json.decode(condition[len(FILTER_CONDITION):])
    except msgspec.DecodeError:
        spec = None
    # Not one Tidings wrote (an SDK's wait may say anything): it matches no event.
    return spec if isinstance(spec, dict) else {"source": None, "filter": {"": [[]]}}


def spec_accepts(spec: dict[str, Any], data: Any, source: str | None, context: Any) -> bool:
    """Whether an event passes a filter condition (all but its ``account_id``, which the
    caller checks: it is not among what routing reads)."""
    if "source" in spec and spec["source"] != source:
        return False
    try:
        if "filter" in spec and not filter_matches(spec["filter"], data):
            return False
        return "context_filter" not in spec or filter_matches(spec["context_filter"], context)
    except (AttributeError, TypeError, ValueError):
        return False  # a filter not checked by ``check_filter``: no match
