"""CEL expressions (``if`` on triggers, waits and cancellations; keys of flow control).

Variables are ``event`` (the triggering event) and ``async`` (the incoming event, for waits and
cancellations). A missing field or a type error makes a condition false rather than failing
the run: an event without the field simply does not match. What can be known before any event
arrives is refused at registration instead (``functions/cel_check.py``).

Expressions come from outside (an app's registration, a wait's ``if``) and the CEL library is a
Rust extension with sharp edges: its parser panics on a few hundred thousand brackets (a pyo3
``PanicException``, which derives from ``BaseException``, so ``except Exception`` misses it),
and a 2 MB expression compiles for 9 s into 580 MiB. So:

* an expression is refused before compiling when it is longer than ``max_chars`` or nests
  brackets deeper than ``max_depth`` (``ExpressionLimits``: environment variables
  ``TIDINGS_EXPRESSION_MAX_CHARS``, ``..._MAX_DEPTH``); within them a compile takes
  milliseconds, so it may run wherever it is needed, the event loop included;
* every call into the library is guarded: a panic is an ``ExpressionError`` when checking and
  "does not match" when evaluating, never a crash of the caller;
* compiled programs are cached by an estimate of their memory (measured: about 25 bytes per
  character of source plus 1 KiB; estimated at 64 and 1 KiB), within ``cache_bytes``
  (``TIDINGS_EXPRESSION_CACHE_MB``), least recently used first out. Refused expressions are
  cached too (as their error), so a stored bad one is not recompiled for every event.
* evaluation holds the GIL, and its cost is not always linear: ``map`` and ``filter`` copy
  the list they build at every step (time ∝ items * size: 1,000 ints 24 ms, 16,000 ints
  6.7 s; 1,000 maps of 10 keys 0.86 s), and so does a chain of ``+`` (∝ terms² * size), and
  comprehensions nested in one another multiply. So each expression's structure is read once,
  with its program (``Shape``): registration refuses comprehensions nested deeper than
  ``max_macro_depth`` (``cel_check``), and an expression with a costly part is evaluated only
  when ``cost`` — an estimate, from above, of the values it would copy, from the sizes of what
  it iterates over — stays within ``max_cost``; past it, the expression is not evaluated (as
  any evaluation error: no match, an empty key) and that is logged. Expressions without such
  parts (``exists``, ``all``, ``in``, ``size``: linear) are evaluated as before, unmeasured.

The limits are read once per process from the environment, not from ``Settings``: expressions
are checked where no settings exist (a native function's decorator, at import) and one cache
serves the whole process.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cel

from tidings.errors import ConfigError
from tidings.functions.expression_cost import Shape, cost, nesting, shape_of
from tidings.settings import ExpressionLimits

log = logging.getLogger("tidings.router")
LIMITS = ExpressionLimits.from_env()
BYTES_PER_CHAR = 64
BYTES_PER_PROGRAM = 1024


class ExpressionError(ConfigError):
    """The expression is not valid CEL."""


@dataclass(frozen=True, slots=True)
class Compiled:
    """An expression's program and the shape of its cost."""

    program: Any
    shape: Shape


def compile_expression(source: str) -> Any:
    """The compiled program of an expression; ``ExpressionError`` names what is wrong."""
    return compiled(source).program


def compiled(source: str) -> Compiled:
    """An expression compiled, with its shape; ``ExpressionError`` names what is wrong."""
    if len(source) > LIMITS.max_chars:  # not cached: the text alone would fill the cache
        raise ExpressionError(f"the expression {shown(source)} is longer than "
                              f"{LIMITS.max_chars} characters")
    found = _PROGRAMS.get(source)
    if found is None:
        found = _compile(source, LIMITS)
        _PROGRAMS.put(source, found)
    if isinstance(found, ExpressionError):
        raise ExpressionError(found.message)  # a fresh one: the cached one holds no traceback
    return found  # type: ignore[no-any-return]


def evaluate(source: str, variables: dict[str, Any], who: str = "") -> Any:
    """The value of an expression, or None when it cannot be evaluated for these variables:
    an error, or a cost past ``max_cost`` (logged once per event, naming ``who`` asked: a
    function, a run). An expression that is not valid at all was checked when it was
    registered, so it is one stored before a limit changed: logged, once."""
    try:
        found = compiled(source)
    except ExpressionError as exc:
        if len(_WARNED) < MAX_WARNED and source not in _WARNED:
            _WARNED.add(source)
            log.warning("an expression of a registered function never matches: %s",
                        exc.message)
        return None
    if found.shape.costly:
        spent = cost(found.shape, variables, LIMITS.max_cost)
        if spent > LIMITS.max_cost:
            _refused(source, variables, who, spent)
            return None
    try:
        return found.program.execute(variables)
    except Exception:
        return None
    except BaseException as exc:
        if not is_panic(exc):
            raise
        log.warning("the CEL library panicked evaluating %s", shown(source))
        return None


def matches(source: str | None, variables: dict[str, Any], who: str = "") -> bool:
    """True when there is no condition, or it evaluates to exactly ``true``."""
    if not source:
        return True
    return evaluate(source, variables, who) is True


def is_panic(exc: BaseException) -> bool:
    """A Rust panic surfaced by pyo3 (``pyo3_runtime.PanicException``, not importable)."""
    return type(exc).__name__ == "PanicException"


def shown(source: str, limit: int = 80) -> str:
    """An expression as an error message quotes it: whole when short, else its start."""
    return repr(source) if len(source) <= limit else repr(source[:limit]) + f"… ({len(source)} "\
        "characters)"


def _compile(source: str, limits: ExpressionLimits) -> Compiled | ExpressionError:
    if nesting(source) > limits.max_depth:
        return ExpressionError(f"the expression {shown(source)} nests brackets more than "
                               f"{limits.max_depth} levels deep")
    try:
        program = cel.compile(source)
    except Exception as exc:
        return ExpressionError(f"invalid expression {shown(source)}: {_first_line(exc)}")
    except BaseException as exc:
        if not is_panic(exc):
            raise
        return ExpressionError(f"invalid expression {shown(source)}: the CEL library cannot "
                               "read it")
    return Compiled(program, shape_of(source))


def _first_line(exc: BaseException) -> str:
    # The library's parse errors quote the whole expression after the first line.
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


def _refused(source: str, variables: Mapping[str, Any], who: str, spent: int) -> None:
    about = variables.get("async") or variables.get("event")
    event_id = about.get("id") if isinstance(about, Mapping) else None
    key = (source, who, event_id)
    with _LOCK:
        if key in _REFUSED:
            return
        _REFUSED[key] = None
        if len(_REFUSED) > MAX_WARNED:
            _REFUSED.popitem(last=False)
    log.warning("%s: event %s: the expression %s is not evaluated (as if it failed): it would "
                "copy about %s values or more, past TIDINGS_EXPRESSION_MAX_COST (%s)",
                who or "an expression", event_id, shown(source), f"{spent:,}",
                f"{LIMITS.max_cost:,}")


class _Programs:
    """Compiled programs by source, within a budget of estimated bytes (thread-safe: routing
    runs in storage threads too)."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._used = 0
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, source: str) -> Any:
        with self._lock:
            found = self._items.get(source)
            if found is not None:
                self._items.move_to_end(source)
            return found

    def put(self, source: str, program: Any) -> None:
        cost = _cost(source)
        if cost > self._budget:
            return
        with self._lock:
            if source in self._items:
                return
            self._items[source] = program
            self._used += cost
            while self._used > self._budget:
                oldest, _ = self._items.popitem(last=False)
                self._used -= _cost(oldest)

    @property
    def used(self) -> int:
        return self._used

    def __len__(self) -> int:
        return len(self._items)


def _cost(source: str) -> int:
    return BYTES_PER_PROGRAM + BYTES_PER_CHAR * len(source)


_PROGRAMS = _Programs(LIMITS.cache_bytes)
_WARNED: set[str] = set()
_REFUSED: OrderedDict[tuple[str, str, Any], None] = OrderedDict()
_LOCK = threading.Lock()
MAX_WARNED = 1000
