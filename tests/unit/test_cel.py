"""CEL expressions from outside: bounded before they reach the library, guarded against its
panics, cached within a memory budget, and checked at registration for what can never work."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

import tidings
from tidings.apps.config import parse_app
from tidings.errors import ConfigError, RequestRejected
from tidings.functions import expressions
from tidings.functions.cel_check import BUILTINS, check_expression
from tidings.functions.expression_cost import nesting
from tidings.functions.expressions import (
    LIMITS,
    ExpressionError,
    compile_expression,
    evaluate,
    matches,
)
from tidings.settings import MIB, ExpressionLimits

DEEP = "(" * 100_000 + "true" + ")" * 100_000
# One call of each function the checker admits, each of which must work in this library.
PROBES = {
    "contains": "'ab'.contains('a')", "size": "size('a') == 1",
    "startsWith": "'ab'.startsWith('a')", "endsWith": "'ab'.endsWith('b')",
    "matches": "'ab'.matches('^a')", "string": "string(1)",
    "bytes": "bytes('a')", "double": "double(1)", "int": "int(1.0)", "uint": "uint(1)",
    "dyn": "dyn(1)", "type": "type(1) == int", "duration": "duration('1s')",
    "timestamp": "timestamp('2020-01-01T00:00:00Z')",
    **{name: f"timestamp('2020-01-01T00:00:00Z').{name}()" for name in (
        "getFullYear", "getMonth", "getDayOfYear", "getDayOfMonth", "getDate", "getDayOfWeek",
        "getHours", "getMinutes", "getSeconds", "getMilliseconds")},
    "of": "optional.of(1)", "none": "optional.none()",
    "ofNonZeroValue": "optional.ofNonZeroValue(1)", "hasValue": "optional.of(1).hasValue()",
    "value": "optional.of(1).value()", "orValue": "optional.none().orValue(1)",
    "or": "optional.none().or(optional.of(1))",
}


def test_every_function_the_checker_admits_works_in_this_library() -> None:
    assert set(PROBES) == BUILTINS
    for name, source in PROBES.items():
        program = compile_expression(source)
        assert name in program.references()["functions"]
        program.execute({})  # raises if the library lacks it


@pytest.mark.parametrize("source", [
    "event.data.plan == 'pro' && event.data.n > 3",
    "has(event.data.x) && event.data.x > 1",
    "event.data.items.exists(i, i.sku == 'x')",
    "event.data.items.all(i, i > 0) && event.data.items.exists_one(j, j == 1)",
    "event.name.startsWith('app/') || event.name.matches('^billing/')",
    "type(event.data.x) == int",
    "int(event.data.n) > 1",  # a value int() cannot read fails one event, not every event
    "10 / event.data.n > 1",
    "timestamp(event.data.at) > timestamp('2020-01-01T00:00:00Z')",
    "event.ts > 0 && size(event.id) > 0",
    "'(((' + event.name == '((('",  # brackets in strings do not nest
])
def test_conditions_that_can_match_are_accepted(source: str) -> None:
    check_expression(source, condition=True)


@pytest.mark.parametrize(("source", "reason"), [
    ("foo(1)", "undefined function(s) foo"),
    ("event.data.x.lowerAscii() == 'a'", "undefined function(s) lowerAscii"),
    ("event.data.x == 1 && bar(event)", "undefined function(s) bar"),  # a branch not taken
    ("evnt.data.x == 1", "undefined variable(s) evnt"),
    ("async.data.x == 1", "undefined variable(s) async"),
    ("1 + 'a' == 2", "No such overload"),
    ("event.name > 1", "No such overload"),
    ("event.name + 1 == 2", "Unsupported operation: string + int"),
    ("event.data.x == 1 || 1 + 'a' == 2", "No such overload"),
    ("size(event.ts) > 1", "no overload of size()"),
    ("event.name", "a condition must be true or false"),
    ("event.data.(", "invalid expression"),
    ("(" * 33 + "true" + ")" * 33, "nests brackets more than 32 levels deep"),
    ("x" * 5000, "longer than 4096 characters"),
    (DEEP, "longer than 4096 characters"),
])
def test_expressions_that_can_never_work_are_refused(source: str, reason: str) -> None:
    with pytest.raises(ExpressionError, match=re.escape(reason)):
        check_expression(source, condition=True)


def test_a_cancellation_condition_is_given_async_too() -> None:
    check_expression("async.data.id == event.data.id", names=("event", "async"), condition=True)


def test_a_deeply_nested_expression_never_reaches_the_library() -> None:
    # The library panics on this one (pyo3's PanicException, a BaseException).
    started = time.monotonic()

    assert evaluate(DEEP, {}) is None
    assert matches(DEEP, {}) is False
    with pytest.raises(ExpressionError):
        compile_expression("(" * 40 + "true" + ")" * 40)
    assert time.monotonic() - started < 5


def test_a_panic_of_the_library_is_an_expression_error_or_no_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    panic = type("PanicException", (BaseException,), {})

    class Panicking:
        def execute(self, variables: Any) -> Any:
            raise panic("Formatting argument out of range")

        def references(self) -> dict[str, list[str]]:
            return {"variables": [], "functions": []}

    def compile_panics(source: str) -> Any:
        raise panic("Formatting argument out of range")

    monkeypatch.setattr(expressions.cel, "compile", compile_panics)
    with pytest.raises(ExpressionError, match="cannot read it"):
        compile_expression("1 == 1 && 2 == 2 && 3 == 3")
    monkeypatch.setattr(expressions.cel, "compile", lambda source: Panicking())
    with pytest.raises(ExpressionError, match="cannot evaluate it"):
        check_expression("event.data.panics == 1")
    assert evaluate("event.data.panics2 == 1", {"event": {}}) is None


def test_nesting_skips_string_literals() -> None:
    assert nesting("(a)") == 1
    assert nesting("'(((' + \"[[[\" + '''{{{''' + r'\\(' + (x)") == 1
    assert nesting("[[1], {'a': (2)}]") == 3


def test_the_program_cache_is_bounded_by_memory() -> None:
    cache = expressions._Programs(budget=200_000)
    for n in range(100):
        cache.put(f"event.data.n == {n} && " + "true && " * 200, object())

    assert cache.used <= 200_000
    assert 0 < len(cache) < 100
    assert cache.get("event.data.n == 99 && " + "true && " * 200) is not None  # newest kept
    assert cache.get("event.data.n == 0 && " + "true && " * 200) is None  # oldest out


def test_refused_expressions_over_the_length_limit_are_not_cached() -> None:
    before = expressions._PROGRAMS.used
    for n in range(20):
        assert evaluate(f"{n} == {n} && " + "x" * LIMITS.max_chars, {}) is None

    assert expressions._PROGRAMS.used == before


def test_limits_come_from_the_environment() -> None:
    limits = ExpressionLimits.from_env({"TIDINGS_EXPRESSION_MAX_CHARS": "100",
                                        "TIDINGS_EXPRESSION_MAX_DEPTH": "4",
                                        "TIDINGS_EXPRESSION_CACHE_MB": "2"})

    assert limits == ExpressionLimits(max_chars=100, max_depth=4, cache_bytes=2 * MIB)
    assert ExpressionLimits.from_env({}) == ExpressionLimits()
    with pytest.raises(ConfigError, match="TIDINGS_EXPRESSION_MAX_DEPTH"):
        ExpressionLimits.from_env({"TIDINGS_EXPRESSION_MAX_DEPTH": "-1"})


# -- at registration: native functions and SDK apps alike ---------------------------------------

def test_a_native_function_with_an_expression_that_never_works_is_refused() -> None:
    client = tidings.Tidings(app_id="cel")

    with pytest.raises(ConfigError, match="undefined function"):
        @client.function(id="a", trigger=tidings.TriggerEvent(event="a/b", if_="foo(1)"))
        async def a(ctx: Any) -> None: ...

    with pytest.raises(ConfigError, match=r"concurrency\.key: .*Unsupported operation"):
        @client.function(id="b", trigger=tidings.TriggerEvent(event="a/b"),
                         concurrency=tidings.Concurrency(limit=1, key="event.name - 1"))
        async def b(ctx: Any) -> None: ...


def _app(**function: Any) -> dict[str, Any]:
    step = {"step": {"id": "step", "name": "step",
                     "runtime": {"type": "http", "url": "http://127.0.0.1:9/api"}}}
    return {"appname": "cel-app", "url": "http://127.0.0.1:9/api",
            "functions": [{"id": "f", "name": "f", "steps": step,
                           "triggers": [{"event": "a/b"}], **function}]}


@pytest.mark.parametrize(("function", "reason"), [
    ({"triggers": [{"event": "a/b", "expression": "foo(1)"}]}, "if: 'foo\\(1\\)': undefined"),
    ({"triggers": [{"event": "a/b", "expression": "1 + 'a' == 2"}]}, "No such overload"),
    ({"cancel": [{"event": "a/c", "if": "event.data.x == nope"}]},
     "cancel.if: .*undefined variable"),
    ({"batchEvents": {"maxSize": 2, "timeout": "1s", "if": "event.name"}},
     "batchEvents.if: .*true or false"),
    ({"idempotency": "(" * 40 + "event.id" + ")" * 40}, "idempotency: .*nests brackets"),
    ({"triggers": [{"event": "a/b", "expression": DEEP}]}, "longer than 4096"),
])
def test_an_sdk_app_with_an_expression_that_never_works_is_refused(
    function: dict[str, Any], reason: str,
) -> None:
    with pytest.raises(RequestRejected, match=f"function 'f': .*{reason}"):
        parse_app(_app(**function))


def test_an_accepted_expression_stored_before_a_limit_changed_still_reads() -> None:
    from tidings.functions.flow_config import flow_of

    config = {"concurrency": [{"limit": 1, "key": "foo(event.data.x)"}]}

    flow = flow_of(config)

    assert flow is not None and flow.concurrency[0].key == "foo(event.data.x)"
