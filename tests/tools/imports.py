"""The import graph of ``src/tidings``, read with ``ast`` (nothing is imported or run).

``python -m tests.tools.imports`` prints the layers, then every import that points up a layer
and every circle between modules or between packages; it exits 1 when there is any.
``tests/unit/test_layers.py`` asserts the same.

Every import counts, wherever it stands: at the top, inside a function (a lazy import is still
a dependency) or under ``if TYPE_CHECKING:`` (a type is part of the contract).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "src"
TOP = "tidings"

# Lowest first. A package may import its own layer's packages and any below, never one above.
# Within a layer, packages may import each other as long as no circle forms.
LAYERS: tuple[tuple[str, ...], ...] = (
    # values, errors, ids, crypto, settings, loop supervision, observability (log set-up,
    # metrics): they know nothing of the flow
    (
        "canonical", "crypto", "durations", "errors", "ids", "json_input", "netguard",
        "observe", "outage", "sealing", "settings", "signing", "supervision", "version",
    ),
    ("storage",),
    ("keys", "passwords", "vault"),  # event keys, dashboard passwords, the user vault
    ("events",),
    ("functions",),  # definitions, registry, expressions, filters
    ("runs",),
    ("flow",),
    ("router",),
    ("ingest",),
    ("privacy",),  # a person's data: erase, export
    ("core",),  # storage, keys, vault and ingest wired once for a process
    ("calls",),  # one call of a function: the host the engine gives it, the outcomes it ends in
    ("sdk",),
    ("engine", "apps", "triggerdev", "connect"),  # triggerdev: Trigger.dev v2 keys, events,
    # Jobs; connect: the Connect gateway, and the hub the HTTP driver calls
    ("server",),
    ("cli",),
    ("__init__",),  # the public surface re-exports the SDK
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Edge:
    """``source`` imports ``target`` (both dotted module names) at ``line``."""

    source: str
    target: str
    line: int


def modules(root: Path = ROOT) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted((root / TOP).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_package(name: str, known: dict[str, Path]) -> bool:
    return known[name].name == "__init__.py"


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` names or lies in."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def edges(known: dict[str, Path] | None = None) -> list[Edge]:
    """Every import between two modules of the tree, once per pair (the first line)."""
    known = modules() if known is None else known
    found: dict[tuple[str, str], Edge] = {}
    for source, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        package = source if _is_package(source, known) else source.rpartition(".")[0]
        for node in ast.walk(tree):
            for target in _targets(node, package, known):
                if target != source and (source, target) not in found:
                    found[source, target] = Edge(source=source, target=target, line=node.lineno)
    return sorted(found.values(), key=lambda edge: (edge.source, edge.line, edge.target))


def _targets(node: ast.AST, package: str, known: dict[str, Path]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == TOP:
                resolved = _resolve(alias.name, known)
                if resolved:
                    yield resolved
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            stem = ".".join([*base, node.module] if node.module else base)
        else:
            stem = node.module or ""
        if stem.split(".")[0] != TOP:
            return
        for alias in node.names:
            resolved = _resolve(f"{stem}.{alias.name}", known)
            if resolved:
                yield resolved


def package_of(module: str) -> str:
    """``tidings.engine.executor`` → ``engine``; ``tidings.ingest`` → ``ingest``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(package: str) -> int:
    for index, layer in enumerate(LAYERS):
        if package in layer:
            return index
    raise KeyError(f"package {package!r} is in no layer: add it to LAYERS in {__file__}")


def upward(found: Iterable[Edge]) -> list[Edge]:
    """Imports from a package to one in a higher layer."""
    return [
        edge
        for edge in found
        if layer_of(package_of(edge.target)) > layer_of(package_of(edge.source))
    ]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def module_graph(found: Iterable[Edge]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for edge in found:
        graph.setdefault(edge.source, set()).add(edge.target)
    return graph


def package_graph(found: Iterable[Edge]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for edge in found:
        source, target = package_of(edge.source), package_of(edge.target)
        if source != target:
            graph.setdefault(source, set()).add(target)
    return graph


def problems() -> list[str]:
    """One line for each import up a layer and each circle; no line numbers, so that a list
    of known ones stays stable while code moves."""
    found = edges()
    lines = [f"up: {edge.source} -> {edge.target}" for edge in upward(found)]
    lines += ["package circle: " + " ".join(circle) for circle in cycles(package_graph(found))]
    lines += ["module circle: " + " ".join(circle) for circle in cycles(module_graph(found))]
    return lines


def main() -> int:
    for index, layer in enumerate(LAYERS):
        print(f"layer {index}: {' '.join(layer)}")
    found = edges()
    lines = {f"up: {edge.source} -> {edge.target}": edge for edge in upward(found)}
    listed = problems()
    for line in listed:
        edge = lines.get(line)
        print(line + (f"  ({ROOT / edge.source.replace('.', '/')}.py:{edge.line})" if edge else ""))
    print(f"{len(listed)} problem(s)")
    return 1 if listed else 0


if __name__ == "__main__":
    sys.exit(main())
