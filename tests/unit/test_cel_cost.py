"""The cost of CEL expressions: ``map``/``filter``, nested comprehensions and ``+`` chains cost
more than linear time in this library, so registration refuses what explodes whatever the data,
and evaluation declines (logged, as an error) what the data would make explode."""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path
from typing import Any

import pytest

import tidings
from tests.conftest import make_settings
from tests.unit.helpers import app_client
from tests.unit.test_app_register import PY_BODY, fn, functions
from tidings.apps.config import parse_app
from tidings.errors import ConfigError, RequestRejected
from tidings.functions import cel_check, expressions
from tidings.functions.cel_check import check_expression
from tidings.functions.expression_cost import cost, shape_of
from tidings.functions.expressions import LIMITS, evaluate, matches
from tidings.settings import ExpressionLimits

NESTED = "event.data.a.map(x, event.data.b.map(y, x + y)).size() > 0"
LITERAL = "[" + ",".join(["0"] * 1000) + "]"
# Nested comprehensions over literals: 642 characters that evaluate for 12 s.
EXPLODING = "[" + ",".join(["1"] * 100) + "].map(a, [" + ",".join(["1"] * 100) \
    + "].map(b, [" + ",".join(["1"] * 100) + "].map(c, c))).size() > 0"


def huge(n: int = 100_000) -> dict[str, Any]:
    return {"event": {"id": "01HUGE", "name": "load", "data": {"items": list(range(n))}}}


@pytest.mark.parametrize(("source", "costly", "depth"), [
    ("event.data.n > 1 && event.name == 'a'", False, 0),
    ("event.data.items.exists(i, i.sku == 'x')", False, 1),
    ("event.data.items.all(i, i > 0) && event.data.items.exists_one(i, i == 1)", False, 1),
    ("event.data.orders.exists(o, o.items.exists(i, i.sku == 'x'))", False, 1),
    ("event.data.items.exists(i, i in event.data.allowed)", True, 1),  # n x |allowed|
    ("event.data.items.map(i, i.sku).exists(s, s == 'x')", True, 1),
    ("event.data.items.filter(i, i > 0).size() > 0", True, 1),
    ("event.data.items.filter(i, i > 0).map(i, i * 2).size() > 0", True, 2),
    ("event.data.orders.exists(o, o.items.map(i, i).size() > 1)", True, 2),
    (NESTED, True, 2),
    ("'x.map(a, b.map(c, c))' == event.name", False, 0),  # inside a string literal
    (" + ".join(["event.name"] * 8) + " == ''", True, 0),  # 7 "+"
    (" + ".join(["event.name"] * 7) + " == ''", False, 0),
])
def test_the_shape_says_what_can_cost_more_than_linear(source: str, costly: bool,
                                                       depth: int) -> None:
    shape = shape_of(source)

    assert (shape.costly, shape.depth) == (costly, depth)


def test_the_cost_of_a_map_grows_with_the_size_of_what_it_iterates() -> None:
    shape = shape_of("event.data.items.map(i, i * 2).size() > 0")
    small, large = cost(shape, huge(100), 10**9), cost(shape, huge(1_000), 10**9)

    assert 10_000 <= small <= 20_000 and 1_000_000 <= large <= 2_000_000
    assert cost(shape, huge(), LIMITS.max_cost) > LIMITS.max_cost
    objects = {"event": {"data": {"items": [{"a": n, "b": "x"} for n in range(100)]}}}
    assert cost(shape, objects, 10**9) > 4 * small  # each item is copied whole
    elsewhere = shape_of("event.data.items.exists(i, i in event.data.allowed)")
    assert cost(elsewhere, {"event": {"data": {"items": list(range(100)),
                                               "allowed": list(range(50))}}}, 10**9) >= 5_000


def test_a_costly_expression_is_not_evaluated_and_is_logged_once_per_event(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    executed: list[Any] = []

    class Spy:
        def execute(self, variables: Any) -> Any:
            executed.append(variables)
            return True

    monkeypatch.setattr(expressions.cel, "compile", lambda source: Spy())
    source = "event.data.items.map(i, i * 3).size() > 0"
    caplog.set_level(logging.WARNING, logger="tidings.router")

    assert matches(source, huge(), "function app-f") is False
    assert evaluate(source, huge(), "function app-f") is None
    assert evaluate(source, huge(500), "function app-f") is True

    assert len(executed) == 1  # the small list only
    (logged,) = [r.getMessage() for r in caplog.records]
    assert logged.startswith("function app-f: event 01HUGE: the expression ")
    assert "TIDINGS_EXPRESSION_MAX_COST (300,000)" in logged


@pytest.mark.parametrize(("source", "variables", "value"), [
    ("event.data.items.map(i, i.sku)", {"items": [{"sku": "a"}, {"sku": "b"}]}, ["a", "b"]),
    ("event.data.items.filter(i, i > event.data.min)", {"items": [1, 5, 9], "min": 4}, [5, 9]),
    ("event.data.items.exists(i, i in event.data.allowed)", {"items": [1], "allowed": [1]},
     True),
    ("event.data.o.exists(o, o.items.exists(i, i == 2))", {"o": [{"items": [1, 2]}]}, True),
    ("event.data.m.map(k, k)", {"m": {"a": 1}}, ["a"]),
    (" + ".join(["event.data.s"] * 8), {"s": "ab"}, "ab" * 8),
])
def test_costly_expressions_of_usual_size_evaluate_as_before(source: str,
                                                             variables: dict[str, Any],
                                                             value: Any) -> None:
    check_expression(source)
    assert evaluate(source, {"event": {"data": variables}}) == value


@pytest.mark.parametrize(("source", "reason"), [
    (NESTED, "nest 2 deep, one inside or on the result of another, and their cost multiplies: "
             "TIDINGS_EXPRESSION_MAX_MACRO_DEPTH allows 1"),
    ("event.data.a.filter(x, x > 1).map(x, x).size() > 0", "TIDINGS_EXPRESSION_MAX_MACRO_DEPTH"),
    (EXPLODING, "nest 3 deep"),
    (LITERAL + ".map(x, x).size() > 0",
     "would copy more than 300,000 values for every event: TIDINGS_EXPRESSION_MAX_COST"),
])
def test_expressions_that_explode_whatever_the_data_are_refused(source: str,
                                                               reason: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(reason)):
        check_expression(source, condition=True)


def test_a_long_chain_of_concatenations_is_bounded_by_what_it_concatenates() -> None:
    chain = "size(" + " + ".join(["event.data.items"] * 8) + ") > 0"

    check_expression(chain, condition=True)
    assert evaluate(chain, huge(1000)) is True
    assert evaluate(chain, huge()) is None  # 8 terms of 100,000: 3.6 million copies


def test_a_large_literal_that_costs_linear_time_is_accepted() -> None:
    check_expression(f"event.data.n in {LITERAL}", condition=True)


def test_the_nesting_allowed_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    raised = ExpressionLimits(max_macro_depth=2)
    monkeypatch.setattr(expressions, "LIMITS", raised)
    monkeypatch.setattr(cel_check, "LIMITS", raised)

    check_expression(NESTED, condition=True)
    # Still bounded when evaluated: the cost of nesting is the product of the lists.
    variables = {"event": {"id": "e", "data": {"a": list(range(1000)), "b": list(range(1000))}}}
    assert evaluate(NESTED, variables) is None
    variables["event"]["data"] = {"a": [1, 2], "b": [3]}
    assert evaluate(NESTED, variables) is True
    assert evaluate(EXPLODING, variables) is None  # literals alone: 12 s if evaluated


def test_the_limits_come_from_the_environment() -> None:
    limits = ExpressionLimits.from_env({"TIDINGS_EXPRESSION_MAX_MACRO_DEPTH": "2",
                                        "TIDINGS_EXPRESSION_MAX_COST": "1000"})

    assert (limits.max_macro_depth, limits.max_cost) == (2, 1000)
    with pytest.raises(ConfigError, match="TIDINGS_EXPRESSION_MAX_COST"):
        ExpressionLimits.from_env({"TIDINGS_EXPRESSION_MAX_COST": "0"})


# -- at registration: native functions and SDK apps alike ---------------------------------------

def test_a_native_function_with_nested_comprehensions_is_refused() -> None:
    client = tidings.Tidings(app_id="cost")

    with pytest.raises(ConfigError, match="TIDINGS_EXPRESSION_MAX_MACRO_DEPTH allows 1"):
        @client.function(id="a", trigger=tidings.TriggerEvent(event="a/b", if_=NESTED))
        async def a(ctx: Any) -> None: ...

    with pytest.raises(ConfigError, match=r"idempotency: .*TIDINGS_EXPRESSION_MAX_MACRO_DEPTH"):
        @client.function(id="b", trigger=tidings.TriggerEvent(event="a/b"),
                         idempotency="event.data.a.map(x, event.data.b.map(y, y))")
        async def b(ctx: Any) -> None: ...


def test_an_sdk_app_with_nested_comprehensions_is_refused() -> None:
    app = {"appname": "cost", "url": "http://127.0.0.1:9/api",
           "functions": [fn("f", triggers=[{"event": "a/b", "expression": NESTED}])]}

    with pytest.raises(RequestRejected, match="TIDINGS_EXPRESSION_MAX_MACRO_DEPTH allows 1"):
        parse_app(app)


async def test_fn_register_refuses_nested_comprehensions(db_url: str, tmp_path: Path) -> None:
    body = copy.deepcopy(PY_BODY)
    body["functions"][0]["triggers"][0]["expression"] = NESTED
    async with app_client(make_settings(db_url, tmp_path)) as (http, core):
        answer = await http.post("/fn/register", json=body)

        assert answer.status_code == 400, answer.text
        assert "TIDINGS_EXPRESSION_MAX_MACRO_DEPTH allows 1" in answer.text
        assert "function 'my-app-all-config': trigger 'app/user.created': if:" in answer.text
        assert await functions(core) == {}  # nothing stored
