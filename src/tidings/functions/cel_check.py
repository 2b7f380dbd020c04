"""Checking a CEL expression when a function is registered: what can be known before any event
arrives, so that an expression that can never match is refused with a reason instead of
accepted and silently never matching.

The CEL library (``common-expression-language``) parses and evaluates but has no type checker:
``foo(1)`` and ``1 + 'a'`` compile, then fail on every event. It does report what a program
refers to (``Program.references()``), and that is enough for the smallest honest checker:

1. **Functions.** Every function called is an operator or one this library defines (``BUILTINS``;
   a test proves each of them works). Catches an undefined function anywhere in the expression,
   taken branch or not: ``foo(1)``, ``event.data.name.lowerAscii()`` (not in this library).
2. **Variables.** Every free name is one the expression is given (``event``; ``async`` too for
   cancellations), a type name (``int``, ``map`` …), ``optional``, or a variable a macro binds
   (``.exists(x, …)``). Catches ``evnt.data.x``.
3. **A trial evaluation** against an event of the shape every event has: ``id`` and ``name``
   strings, ``ts`` an int, ``data`` an empty map. A type error there (``1 + 'a'``,
   ``event.name > 1``, ``size(event.ts)``) fails for every event, because these fields always
   have these types; an error that reaches into ``data`` (a key the sample does not have) or
   depends on values (a division by zero, a bad regex) is for real events to decide, so it
   passes. A condition must evaluate to a bool (``if: "event.name"`` never is ``true``).

4. **Cost** (``expressions.py`` says why): comprehensions nested or chained deeper than
   ``TIDINGS_EXPRESSION_MAX_MACRO_DEPTH`` (``a.map(x, b.map(…))``, ``a.filter(…).map(…)``;
   ``all``/``exists``/``exists_one`` over a field of the enclosing element do not count), and
   an expression whose literals or ``+`` chains alone would pass
   ``TIDINGS_EXPRESSION_MAX_COST`` (``[0, 0, … 1,000 items].map(x, x)``), before the trial.

What it cannot catch: a type error behind a branch the trial does not take (the right of
``||`` when the left is true, after ``has(event.data.x) &&``), or one that depends on what is
inside ``data`` (``event.data.n + 'a'`` is fine when ``n`` is a string).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tidings.functions.expression_cost import TYPE_NAMES, cost
from tidings.functions.expressions import LIMITS, ExpressionError, compiled, is_panic, shown

# Functions of the library's standard environment (each exercised in tests/unit/test_cel.py).
BUILTINS = frozenset({
    "contains", "size", "startsWith", "endsWith", "matches", "string", "bytes", "double",
    "int", "uint", "dyn", "type", "duration", "timestamp", "getFullYear", "getMonth",
    "getDayOfYear", "getDayOfMonth", "getDate", "getDayOfWeek", "getHours", "getMinutes",
    "getSeconds", "getMilliseconds", "of", "none", "ofNonZeroValue", "hasValue", "value",
    "orValue", "or",
})
SAMPLE_EVENT: dict[str, Any] = {"id": "01J0SAMPLE0000000000000000", "name": "app/sample",
                                "data": {}, "ts": 1_700_000_000_000}
_BOUND = re.compile(r"\.\s*(?:all|exists_one|exists|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
# Errors of the trial that hold for every event (the rest depend on what an event carries).
_UNDEFINED = re.compile(r"Undefined variable or function: '([^']*)'")


def check_expression(source: str, *, names: Sequence[str] = ("event",),
                     condition: bool = False) -> None:
    """Raise ``ExpressionError`` when ``source`` cannot work: too long or deep, not CEL, an
    undefined function or variable, nested comprehensions, too costly for every event, a type
    error for every event, or (a ``condition``) a value that is not a bool. ``names`` are the
    variables it is given."""
    found = compiled(source)
    program, shape = found.program, found.shape
    refs = program.references()
    unknown = sorted(f for f in refs["functions"] if not _operator(f) and f not in BUILTINS)
    if unknown:
        raise ExpressionError(f"{shown(source)}: undefined function(s) {', '.join(unknown)}")
    bound = set(_BOUND.findall(source))
    free = sorted(v for v in refs["variables"]
                  if v not in names and v not in TYPE_NAMES and v not in bound)
    if free:
        raise ExpressionError(f"{shown(source)}: undefined variable(s) {', '.join(free)} "
                              f"(it is given {', '.join(names)})")
    if shape.depth > LIMITS.max_macro_depth:
        raise ExpressionError(
            f"{shown(source)}: comprehensions (all, exists, exists_one, map, filter) nest "
            f"{shape.depth} deep, one inside or on the result of another, and their cost "
            f"multiplies: TIDINGS_EXPRESSION_MAX_MACRO_DEPTH allows {LIMITS.max_macro_depth}")
    sample = dict.fromkeys(names, SAMPLE_EVENT)
    if shape.costly and cost(shape, sample, LIMITS.max_cost) > LIMITS.max_cost:
        raise ExpressionError(
            f"{shown(source)}: its literals and '+' alone would copy more than "
            f"{LIMITS.max_cost:,} values for every event: TIDINGS_EXPRESSION_MAX_COST")
    try:
        value = program.execute(sample)
    except (TypeError, RuntimeError) as exc:
        if _for_every_event(exc):
            raise ExpressionError(f"{shown(source)}: {_explained(exc)}") from None
        return
    except Exception:
        return  # a missing key, a division by zero …: decided by each event
    except BaseException as exc:
        if not is_panic(exc):
            raise
        raise ExpressionError(f"{shown(source)}: the CEL library cannot evaluate it") from None
    if condition and not isinstance(value, bool):
        raise ExpressionError(f"{shown(source)}: a condition must be true or false, and this "
                              f"gives {type(value).__name__}")


def _operator(name: str) -> bool:
    return not name[:1].isalpha()


def _for_every_event(exc: Exception) -> bool:
    if isinstance(exc, TypeError):
        return True
    # "Function 'int' error: …" is about a value (int('x')); "Undefined …" is about types.
    return _UNDEFINED.search(str(exc)) is not None


def _explained(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    undefined = _UNDEFINED.search(text)
    if undefined and undefined.group(1) in BUILTINS:
        return f"no overload of {undefined.group(1)}() takes these argument types"
    return text[:300]
