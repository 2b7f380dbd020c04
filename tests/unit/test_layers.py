"""The house rule: no package imports one above it, and no circles between modules or
packages. Run ``python -m tests.tools.imports`` to see the layers and what breaks them."""

from __future__ import annotations

from pathlib import Path

from tests.tools import imports

# Known breaks, each to be removed by the change that ends it: none left (issue 12). A new
# break fails; so would an entry here that no longer breaks anything.
KNOWN: frozenset[str] = frozenset()


def test_every_package_has_a_layer() -> None:
    packages = {imports.package_of(module) for module in imports.modules()}
    for package in packages:
        imports.layer_of(package)  # raises KeyError naming the package


def test_no_import_points_up_and_no_circles_beyond_the_known_ones() -> None:
    found = set(imports.problems())
    assert sorted(found - KNOWN) == []
    assert sorted(KNOWN - found) == [], "fixed: remove these from KNOWN"


def test_the_checker_sees_lazy_imports_and_circles(tmp_path: Path) -> None:
    package = tmp_path / "tidings"
    (package / "storage").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "storage" / "__init__.py").write_text("")
    (package / "storage" / "a.py").write_text("from tidings.storage import b\n")
    (package / "storage" / "b.py").write_text("def f():\n    from . import a\n")
    (package / "errors.py").write_text("from tidings.storage.a import x\n")
    known = imports.modules(tmp_path)
    found = imports.edges(known)
    assert [edge.source for edge in imports.upward(found)] == ["tidings.errors"]
    assert imports.cycles(imports.module_graph(found)) == [
        ["tidings.storage.a", "tidings.storage.b"]
    ]
