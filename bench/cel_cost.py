"""CEL cost: how the time of each construct grows with its input in the CEL library, and, for
those bounded by ``TIDINGS_EXPRESSION_MAX_COST``, the largest input the limit lets through and
the time the library takes on it (the limit's goal: about 25 ms at worst).

In one process (the library holds the GIL, so this is the time routing stalls); best of 3.
``python -m bench.cel_cost [--sizes 250,1000,4000]``
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from typing import Any

import cel

from bench.harness import print_table
from tidings.functions.expression_cost import cost, shape_of
from tidings.functions.expressions import LIMITS

Make = Callable[[int], dict[str, Any]]


def _event(**data: Any) -> dict[str, Any]:
    return {"event": {"id": "e", "name": "a", "data": data}}


def _ints(n: int) -> dict[str, Any]:
    return _event(items=list(range(n)))


CONSTRUCTS: list[tuple[str, str, Make]] = [
    ("map, ints", "event.data.items.map(x, x + 1).size() > 0", _ints),
    ("filter, ints", "event.data.items.filter(x, x >= 0).size() > 0", _ints),
    ("map, objects of 2 keys", "event.data.items.map(x, x).size() > 0",
     lambda n: _event(items=[{"a": i, "b": "x"} for i in range(n)])),
    ("filter, objects of 10 keys", "event.data.items.filter(x, x.k1 >= 0).size() > 0",
     lambda n: _event(items=[{f"k{j}": j for j in range(10)} for _ in range(n)])),
    ("filter, strings of 800 B", "event.data.items.filter(x, true).size() > 0",
     lambda n: _event(items=["x" * 800] * n)),
    ("map over a map's keys", "event.data.m.map(k, k).size() > 0",
     lambda n: _event(m={f"k{i}": i for i in range(n)})),
    ("map making 8 values", "event.data.items.map(x, [x,x,x,x,x,x,x,x]).size() > 0", _ints),
    ("map reading the event", "event.data.items.map(i, i + event.data.user).size() > 0",
     lambda n: _event(items=list(range(n)), user=1, other=list(range(2000)))),
    ("exists, x in another list", "event.data.items.exists(i, i in event.data.other)",
     lambda n: _event(items=list(range(n)), other=[-1] * n)),
    ("10 lists concatenated", "size(" + " + ".join(["event.data.items"] * 10) + ") == 0",
     _ints),
    ("20 strings concatenated", " + ".join(["event.data.s"] * 20) + " == ''",
     lambda n: _event(s="a" * 100 * n)),
    ("exists (linear)", "event.data.items.exists(x, x < 0)", _ints),
    ("in (linear)", "-1 in event.data.items", _ints),
]


def best_ms(source: str, variables: dict[str, Any]) -> float:
    program = cel.compile(source)
    best = float("inf")
    gc.collect()
    gc.disable()  # as timeit does: a collection of the inputs is not the library's time
    try:
        for _ in range(3):
            started = time.perf_counter()
            program.execute(variables)
            best = min(best, time.perf_counter() - started)
    finally:
        gc.enable()
    return best * 1000


def largest_allowed(source: str, make: Make) -> int:
    shape, limit = shape_of(source), LIMITS.max_cost
    if not shape.costly:
        return 0
    low, high = 1, 2
    while cost(shape, make(high), limit) <= limit:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if cost(shape, make(middle), limit) <= limit else (low, middle)
    return low


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="250,1000,4000")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    growth, limited = [], []
    for label, source, make in CONSTRUCTS:
        times, slow = [], False
        for n in sizes:  # a size past 5 s is not tried bigger
            ms = float("nan") if slow else best_ms(source, make(n))
            slow = slow or ms > 5000
            times.append(f"{ms:,.1f}")
        growth.append([label, *times])
        allowed = largest_allowed(source, make)
        if allowed:
            limited.append([label, f"{allowed:,}", f"{best_ms(source, make(allowed)):.1f}"])
    print_table("ms per evaluation, by input size n", growth, ["construct", *map(str, sizes)])
    print_table(f"at TIDINGS_EXPRESSION_MAX_COST = {LIMITS.max_cost:,}", limited,
                ["construct", "largest n", "ms"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
