"""The package order of the design, read from the source: every import statement of every module (those inside
functions and `if TYPE_CHECKING:` blocks included) is an arrow between top-level packages, and no arrow may point
against the order or close a circle. Between modules no import statement, wherever it stands, closes a circle,
and no module imports another module's private (`_name`) names."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

# What each product package may import (besides itself). `protocols` is the engine and may import the rest;
# `common` holds the shared helpers and imports none of them.
ALLOWED: dict[str, set[str]] = {
    "common": set(),
    "leaderboard": {"common"},
    "benchmark": {"common"},
    "detectors": {"benchmark", "common"},
    "protocols": {"benchmark", "detectors", "leaderboard", "common"},
}


def _imported_names(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """(line, dotted module name) of every import in the tree, relative imports resolved against `module`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def package_arrows(root: Path = ROOT) -> list[tuple[str, str, str]]:
    """(importing package, imported package, 'file:line') for every import that crosses product packages."""
    arrows = []
    for package in ALLOWED:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            module = ".".join(rel.with_suffix("").parts)
            if path.name == "__init__.py":
                module = module.rsplit(".", 1)[0] + ".__init__"
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(rel))
            for line, name in _imported_names(tree, module):
                target = name.split(".")[0]
                if target in ALLOWED and target != package:
                    arrows.append((package, target, f"{rel}:{line}"))
    return arrows


def _cycle(edges: set[tuple[str, str]]) -> list[str] | None:
    """One directed cycle in the graph, or None."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt]
            if nxt not in state:
                found = visit(nxt, trail + [nxt])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def _product_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the product packages (a package is named by its folder)."""
    modules = {}
    for package in ALLOWED:
        for path in (root / package).rglob("*.py"):
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


def _import_targets(node: ast.AST, module: str, is_package: bool) -> tuple[str, list[str]]:
    """(the module an import statement names, the names it imports) with a relative import resolved."""
    if isinstance(node, ast.Import):
        return "", [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    return base, [alias.name for alias in node.names]


def _module_imports(root: Path = ROOT, at_import_time_only: bool = False) -> set[tuple[str, str]]:
    """(module, module) arrows of the product's imports: every import statement (inside functions and
    `if TYPE_CHECKING:` blocks too), or with `at_import_time_only` those a module runs when it is imported
    (statements of its body outside `if TYPE_CHECKING:`). `from pkg import name` counts as importing `pkg.name`
    when that is a module."""
    modules = _product_modules(root)
    arrows = set()
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if at_import_time_only:
            nodes = [n for n in tree.body if not (isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test))]
        else:
            nodes = list(ast.walk(tree))
        for node in nodes:
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            base, names = _import_targets(node, module, path.name == "__init__.py")
            targets = names if isinstance(node, ast.Import) else [base] + [f"{base}.{n}" for n in names]
            arrows |= {(module, name) for name in targets if name in modules and name != module}
    return arrows


def _module_level_imports(root: Path = ROOT) -> set[tuple[str, str]]:
    """The arrows a module runs when it is imported (see `_module_imports`)."""
    return _module_imports(root, at_import_time_only=True)


def private_reaches(root: Path = ROOT) -> list[str]:
    """'file:line: from x import _name' for every import of another module's private name."""
    modules = _product_modules(root)
    found = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            base, names = _import_targets(node, module, path.name == "__init__.py")
            found += [f"{path.relative_to(root)}:{node.lineno}: from {base} import {name}" for name in names
                      if name.startswith("_") and not name.startswith("__") and base != module]
    return found


# Circles left to the configuration's typed rewrite: `protocols.config`/`config_schema` and the strategy registry
# check each other's values (ConfigError, the coercion of `cl_strategy.*` values). Each entry is an arrow that
# closes a circle today; the test below fails when a new circle appears and when one of these is gone (then
# delete its entry).
KNOWN_CIRCLE_ARROWS = {
    ("protocols.config", "protocols.strategies.registry"),
    ("protocols.config_schema", "protocols.strategies.registry"),
}
KNOWN_PRIVATE_REACHES = {"protocols.config_schema import _coerce"}


def test_no_import_circle_between_modules_at_import_time():
    """Module-level imports inside the product form no circle."""
    circle = _cycle(_module_level_imports())
    assert circle is None, f"modules import each other at import time: {' -> '.join(circle)}"


def test_no_import_circle_between_modules_even_inside_functions():
    """No import statement, at module level or deferred into a function, closes a circle between modules (besides
    the known arrows, which must still exist)."""
    arrows = _module_imports()
    gone = KNOWN_CIRCLE_ARROWS - arrows
    assert not gone, f"these arrows are gone: delete them from KNOWN_CIRCLE_ARROWS: {sorted(gone)}"
    circle = _cycle(arrows - KNOWN_CIRCLE_ARROWS)
    assert circle is None, f"modules import each other: {' -> '.join(circle)}"
    assert _cycle(arrows) is not None, "no circle left: empty KNOWN_CIRCLE_ARROWS"


def test_no_module_imports_another_modules_private_names():
    reaches = [r for r in private_reaches() if r.split(": from ", 1)[1] not in KNOWN_PRIVATE_REACHES]
    assert not reaches, "private names imported across modules:\n" + "\n".join(reaches)
    assert len(private_reaches()) == len(KNOWN_PRIVATE_REACHES), "a known private reach is gone: delete it"


def test_every_product_package_is_checked():
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "scripts"}
    assert on_disk <= set(ALLOWED), f"packages without an import rule: {sorted(on_disk - set(ALLOWED))}"


def test_no_import_points_against_the_package_order():
    wrong = [f"{where}: {a} imports {b}" for a, b, where in package_arrows() if b not in ALLOWED[a]]
    assert not wrong, "imports against the package order:\n" + "\n".join(wrong)


def test_no_circle_between_packages():
    edges = {(a, b) for a, b, _ in package_arrows()}
    assert _cycle(edges) is None, f"import circle between packages: {' -> '.join(_cycle(edges))}"


def test_the_checker_sees_imports_inside_functions_and_relative_ones(tmp_path):
    (tmp_path / "leaderboard").mkdir()
    (tmp_path / "leaderboard" / "__init__.py").write_text("")
    (tmp_path / "leaderboard" / "x.py").write_text(
        "def f():\n    from benchmark.atomic import atomic_path\n    import protocols.engine\n")
    (tmp_path / "benchmark").mkdir()
    (tmp_path / "benchmark" / "__init__.py").write_text("from . import images\n")
    arrows = package_arrows(tmp_path)
    assert ("leaderboard", "benchmark", "leaderboard/x.py:2") in arrows
    assert ("leaderboard", "protocols", "leaderboard/x.py:3") in arrows
    assert not [a for a in arrows if a[0] == "benchmark"]  # a relative import stays inside its package
    assert _cycle({("a", "b"), ("b", "c"), ("c", "a")}) is not None
    assert _cycle({("a", "b"), ("b", "c"), ("a", "c")}) is None
    (tmp_path / "benchmark" / "images.py").write_text("from benchmark import x\n")
    (tmp_path / "benchmark" / "x.py").write_text("from .images import y\n")
    assert _cycle(_module_level_imports(tmp_path)) is not None
    (tmp_path / "benchmark" / "x.py").write_text("def f():\n    from .images import _y\n")
    (tmp_path / "benchmark" / "images.py").write_text("")
    assert ("benchmark.x", "benchmark.images") in _module_imports(tmp_path)
    assert ("benchmark.x", "benchmark.images") not in _module_level_imports(tmp_path)
    assert private_reaches(tmp_path) == ["benchmark/x.py:2: from benchmark.images import _y"]


def test_leaderboard_reads_files_only():
    """The leaderboard imports no model, data or engine code (it may use `common`)."""
    banned = {"benchmark", "detectors", "protocols"}
    hits = [where for a, b, where in package_arrows() if a == "leaderboard" and b in banned]
    assert not hits, hits
