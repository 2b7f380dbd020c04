"""What evaluating a CEL expression may cost, known before it is evaluated: its ``Shape`` (read
once from its source, with its program) and ``cost``, an estimate from above of the values it
would copy for given variables. Why, in ``expressions.py``'s opening."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_QUOTES = "'\""
_OPEN, _CLOSE = "([{", ")]}"
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
