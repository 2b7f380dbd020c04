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
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
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


# -- cost ----------------------------------------------------------------------------------

MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
BUILDING = frozenset({"map", "filter"})
# Up to 6 '+' copy less than the library spends reading the variables (about 1 µs a value).
FREE_CONCATS = 6
STRING_BYTES_PER_VALUE = 128  # copying 128 bytes of a string costs about as much as one value
TYPE_NAMES = frozenset({"bool", "bytes", "double", "int", "list", "map", "null_type", "string",
                        "type", "uint", "optional"})
_WORDS = TYPE_NAMES | {"true", "false", "null", "in"}
_TOKEN = re.compile(r"(?P<num>(?:0[xX][0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)[uU]?)"
                    r"|(?P<id>[A-Za-z_]\w*)|(?P<op>\|\||&&|[=!<>]=|\S)")
_DOT, _CALL, _PLUS = ("op", "."), ("op", "("), ("op", "+")
_NOWHERE = object()
Token = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Loop:
    """A comprehension whose cost can grow faster than what it reads."""

    builds: bool  # map or filter: the list it builds is copied at every step
    receiver: tuple[str, ...] | None  # the variable path it iterates over, when it is one
    outside: tuple[tuple[str, ...], ...]  # what its body reads besides its own element
    # A map: a bound on the values one step makes, in elements; all, exists, exists_one: 2,
    # as comparing a value (``in``, ``==``) costs about two copies.
    weight: int
    depth: int  # comprehensions stacked, this one included
    concats: int  # '+' in its receiver


@dataclass(frozen=True, slots=True)
class Shape:
    """What in an expression's structure decides its cost."""

    depth: int = 0  # comprehensions nested or chained (refused past max_macro_depth)
    loops: tuple[Loop, ...] = ()
    concats: int = 0
    literal_items: int = 0  # items of its largest list or map literal
    literal_size: int = 0  # values its literals hold

    @property
    def costly(self) -> bool:
        """Its cost is estimated before it is evaluated."""
        return bool(self.loops) or self.concats > FREE_CONCATS


def cost(shape: Shape, variables: Mapping[str, Any], limit: int) -> int:
    """At most how many values evaluating an expression of this shape copies for these
    variables (measured: one costs 10-45 ns), counted until the count passes ``limit``.
    Sizes are read until then too: a check costs at most ``limit`` steps, usually a few.

    A ``map``/``filter`` over n items of total size s copies about n * s (* what one step of a
    map makes), plus n * everything when its body reads outside its element; ``exists``,
    ``all``, ``exists_one`` reading outside their element cost n * what they read; a nested
    comprehension multiplies by the longest list; n ``+`` copy n² / 2 times their operands.
    What cannot be found by its path (a function's result, a bound variable's field) is taken
    as the longest list and everything the expression sees."""
    whole: list[int] = []

    def everything() -> tuple[int, int]:
        if not whole:
            longest, size = _measure(variables, limit)
            whole.extend((max(longest, shape.literal_items), size + shape.literal_size))
        return whole[0], whole[1]

    spent = (1 + shape.concats) ** 2 * everything()[1] // 2 \
        if shape.concats > FREE_CONCATS else 0
    for loop in shape.loops:
        if spent > limit:
            break
        value = _NOWHERE if loop.receiver is None else _at(variables, loop.receiver)
        if value is _NOWHERE:
            items, size = everything()
        elif isinstance(value, list | dict):
            items = len(value)
            size = _measure(value, limit // max(1, items * loop.weight))[1]
        else:
            items = size = 0
        if loop.builds:
            each = items * (size * loop.weight + (everything()[1] if loop.outside else 0))
        else:
            each = items * loop.weight * sum(
                _read(path, variables, limit // max(1, items), everything)
                for path in loop.outside)
        if loop.depth > 1:
            each *= everything()[0] ** (loop.depth - 1)
        spent += each * (1 + loop.concats) ** 2
    return spent


def shape_of(source: str) -> Shape:
    """The structure of an expression that decides its cost, read from its tokens (the
    library does not show its syntax tree)."""
    tokens = _tokens(source)
    pairs = _pairs(tokens)
    found = [(at, text, tokens[at + 2][1], at + 4, pairs.get(at + 1, len(tokens)),
              _receiver_start(tokens, pairs, at - 2))
             for at, (kind, text) in enumerate(tokens)
             if kind == "id" and text in MACROS and 0 < at < len(tokens) - 3
             and tokens[at - 1] == _DOT and tokens[at + 1] == _CALL
             and tokens[at + 2][0] == "id" and tokens[at + 3] == ("op", ",")]
    declared = {at + 2 for at, *_ in found}
    literal_items, in_literals = _literals(tokens, pairs)
    depths: dict[int, int] = {}
    loops = []
    for at, name, var, start, end, receiver in found:
        builds = name in BUILDING
        enclosing = [other for other in found if other[3] <= at < other[4]]
        bound = {var} | {other[2] for other in found if start <= other[0] < end}
        path = _path(tokens[receiver:at - 1])
        over_element = path is not None and path[0] in {other[2] for other in enclosing}
        if over_element:
            path = None  # a bound variable's field: not in the variables
        depth = max((depths[other[0]] for other in enclosing), default=0) \
            + (builds or not over_element)
        if builds:
            depth = max([depth] + [depths[other[0]] + 1 for other in found
                                   if other[1] in BUILDING and receiver <= other[0] < at])
        depths[at] = depth
        reads = _roots(tokens, start, end, declared)
        outside = tuple(dict.fromkeys(p for p in reads if p[0] not in bound))
        if builds or outside or depth > 1:
            made = len(reads) + sum(start <= k < end for k in in_literals)
            loops.append(Loop(builds=builds, receiver=path, outside=outside,
                              weight=max(1, made) if name == "map" else 1 + (not builds),
                              depth=depth, concats=tokens[receiver:at - 1].count(_PLUS)))
    values = [t for t in tokens if t[0] in ("num", "str")]
    return Shape(depth=max(depths.values(), default=0), loops=tuple(loops),
                 concats=tokens.count(_PLUS), literal_items=literal_items,
                 literal_size=sum(1 + len(text) // STRING_BYTES_PER_VALUE for _, text in values))


def _tokens(source: str) -> list[Token]:
    """``(kind, text)``: ``num``, ``id``, ``str`` or ``op`` (an operator or a bracket)."""
    found: list[Token] = []
    index, end = 0, len(source)
    while index < end:
        if source[index].isspace():
            index += 1
        elif source[index] in _QUOTES:
            stop = _after_string(source, index)
            if found and found[-1][0] == "id" and found[-1][1].lower() in ("r", "b", "rb", "br"):
                found.pop()  # a prefix of this string
            found.append(("str", source[index:stop]))
            index = stop
        else:
            match = _TOKEN.match(source, index)
            assert match is not None and match.lastgroup is not None  # \S takes any other
            found.append((match.lastgroup, match.group()))
            index = match.end()
    return found


def _pairs(tokens: list[Token]) -> dict[int, int]:
    """Matching brackets, both ways."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for index, (kind, text) in enumerate(tokens):
        if kind == "op" and text in _OPEN:
            stack.append(index)
        elif kind == "op" and text in _CLOSE and stack:
            start = stack.pop()
            pairs[start] = index
            pairs[index] = start
    return pairs


def _receiver_start(tokens: list[Token], pairs: dict[int, int], index: int) -> int:
    """Where the operand ending at ``index`` starts (``a.b[0]``, ``f(x)``, ``(a + b)``)."""
    while index >= 0:
        kind, text = tokens[index]
        if kind == "op" and text in ")]" and index in pairs:
            index = pairs[index] - 1
        elif kind == "op":
            break
        elif index > 0 and tokens[index - 1] == _DOT:
            index -= 2
        else:
            return index
    return index + 1


def _path(tokens: list[Token]) -> tuple[str, ...] | None:
    """``("event", "data", "items")`` for the tokens of ``event.data.items``, else None."""
    names, dots = tokens[::2], tokens[1::2]
    if len(tokens) % 2 and all(kind == "id" for kind, _ in names) and all(
            dot == _DOT for dot in dots):
        return tuple(text for _, text in names)
    return None


def _roots(tokens: list[Token], start: int, end: int, declared: set[int]) -> list[tuple[str, ...]]:
    """The paths read between ``start`` and ``end`` (``x.sku``, ``event.data``), one per use."""
    found = []
    for index in range(start, end):
        kind, text = tokens[index]
        if kind != "id" or text in _WORDS or index in declared or tokens[index - 1] == _DOT \
                or tokens[index + 1:index + 2] == [_CALL]:
            continue
        names = [text]
        while tokens[index + 1:index + 2] == [_DOT] and tokens[index + 2:index + 3][:1] \
                and tokens[index + 2][0] == "id" and tokens[index + 3:index + 4] != [_CALL]:
            index += 2
            names.append(tokens[index][1])
        found.append(tuple(names))
    return found


def _literals(tokens: list[Token], pairs: dict[int, int]) -> tuple[int, set[int]]:
    """The items of the largest list or map literal, and where the values inside them are."""
    largest, inside = 0, set[int]()
    for index, (kind, text) in enumerate(tokens):
        if kind != "op" or text not in ("[", "{") or index not in pairs:
            continue
        if text == "[" and index > 0 and (tokens[index - 1][0] != "op"
                                          or tokens[index - 1][1] in (")", "]")):
            continue  # an index: a[0]
        close, commas, at = pairs[index], 0, index + 1
        while at < close:
            commas += tokens[at] == ("op", ",")
            at = pairs[at] + 1 if tokens[at][1] in _OPEN and at in pairs else at + 1
        largest = max(largest, commas + 1 if close > index + 1 else 0)
        inside.update(k for k in range(index + 1, close) if tokens[k][0] in ("num", "str"))
    return largest, inside


def _at(variables: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value = variables.get(path[0], _NOWHERE)
    for name in path[1:]:
        if not isinstance(value, Mapping):
            return value if value is _NOWHERE else None
        value = value.get(name)
    return value


def _read(path: tuple[str, ...], variables: Mapping[str, Any], budget: int,
          everything: Any) -> int:
    value = _at(variables, path)
    return int(everything()[1]) if value is _NOWHERE else _measure(value, budget)[1]


def _measure(value: Any, budget: int) -> tuple[int, int]:
    """The longest list or map in ``value`` and how many values it holds (a string: one per
    128 bytes), read until that passes ``budget``."""
    longest = size = 0
    pending = [value]
    while pending and size <= budget:
        item = pending.pop()
        kind = type(item)  # decoded JSON: exactly these types
        size += 1
        if kind is dict or kind is list:
            longest = max(longest, len(item))
            if size + len(item) > budget:
                return longest, size + len(item)
            if kind is dict:
                size += len(item)
                pending.extend(item.values())
            else:
                pending.extend(item)
        elif kind is str or kind is bytes:
            size += len(item) // STRING_BYTES_PER_VALUE
    return longest, size


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
