"""CEL expressions (``if`` on triggers, waits and cancellations; keys of flow control).

Variables are ``event`` (the triggering event) and ``async`` (the incoming event, for waits and
cancellations). A missing field or a type error makes a condition false rather than failing
the run: an event without the field simply does not match. What can be known before any event
arrives is refused at registration instead (``router/cel_check.py``).

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

The limits are read once per process from the environment, not from ``Settings``: expressions
are checked where no settings exist (a native function's decorator, at import) and one cache
serves the whole process.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

import cel

from tidings.errors import ConfigError
from tidings.settings import ExpressionLimits

log = logging.getLogger("tidings.router")
LIMITS = ExpressionLimits.from_env()
BYTES_PER_CHAR = 64
BYTES_PER_PROGRAM = 1024
_QUOTES = "'\""
_OPEN, _CLOSE = "([{", ")]}"


class ExpressionError(ConfigError):
    """The expression is not valid CEL."""


def compile_expression(source: str) -> Any:
    """The compiled program of an expression; ``ExpressionError`` names what is wrong."""
    if len(source) > LIMITS.max_chars:  # not cached: the text alone would fill the cache
        raise ExpressionError(f"the expression {shown(source)} is longer than "
                              f"{LIMITS.max_chars} characters")
    found = _PROGRAMS.get(source)
    if found is None:
        found = _compile(source, LIMITS)
        _PROGRAMS.put(source, found)
    if isinstance(found, ExpressionError):
        raise ExpressionError(found.message)  # a fresh one: the cached one holds no traceback
    return found


def evaluate(source: str, variables: dict[str, Any]) -> Any:
    """The value of an expression, or None when it cannot be evaluated for these variables
    (or is not a valid expression at all: it was checked when it was registered, so that is
    one stored before a limit changed, and it is logged, once)."""
    try:
        program = compile_expression(source)
    except ExpressionError as exc:
        if len(_WARNED) < MAX_WARNED and source not in _WARNED:
            _WARNED.add(source)
            log.warning("an expression of a registered function never matches: %s",
                        exc.message)
        return None
    try:
        return program.execute(variables)
    except Exception:
        return None
    except BaseException as exc:
        if not is_panic(exc):
            raise
        log.warning("the CEL library panicked evaluating %s", shown(source))
        return None


def matches(source: str | None, variables: dict[str, Any]) -> bool:
    """True when there is no condition, or it evaluates to exactly ``true``."""
    if not source:
        return True
    return evaluate(source, variables) is True


def is_panic(exc: BaseException) -> bool:
    """A Rust panic surfaced by pyo3 (``pyo3_runtime.PanicException``, not importable)."""
    return type(exc).__name__ == "PanicException"


def shown(source: str, limit: int = 80) -> str:
    """An expression as an error message quotes it: whole when short, else its start."""
    return repr(source) if len(source) <= limit else repr(source[:limit]) + f"… ({len(source)} "\
        "characters)"


def nesting(source: str) -> int:
    """How deep brackets nest in ``source``, not counting those inside string literals."""
    depth = deepest = 0
    index, end = 0, len(source)
    while index < end:
        char = source[index]
        if char in _QUOTES:
            index = _after_string(source, index)
            continue
        if char in _OPEN:
            depth += 1
            deepest = max(deepest, depth)
        elif char in _CLOSE:
            depth -= 1
        index += 1
    return deepest


def _after_string(source: str, start: int) -> int:
    """The index just past the string literal opening at ``start`` (or the end of the text)."""
    quote = source[start]
    if source.startswith(quote * 3, start):
        quote *= 3
    raw = start > 0 and source[start - 1] in "rR"
    index = start + len(quote)
    while index < len(source) and not source.startswith(quote, index):
        index += 2 if source[index] == "\\" and not raw else 1
    return index + len(quote)


def _compile(source: str, limits: ExpressionLimits) -> Any:
    if nesting(source) > limits.max_depth:
        return ExpressionError(f"the expression {shown(source)} nests brackets more than "
                               f"{limits.max_depth} levels deep")
    try:
        return cel.compile(source)
    except Exception as exc:
        return ExpressionError(f"invalid expression {shown(source)}: {_first_line(exc)}")
    except BaseException as exc:
        if not is_panic(exc):
            raise
        return ExpressionError(f"invalid expression {shown(source)}: the CEL library cannot "
                               "read it")


def _first_line(exc: BaseException) -> str:
    # The library's parse errors quote the whole expression after the first line.
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


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
MAX_WARNED = 1000
