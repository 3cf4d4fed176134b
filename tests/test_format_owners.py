"""One module owns each file format (docs/design.md, file formats and their owners): no other product module
spells a layout name or a format key. Read from the source: every string constant of every module (f-string parts
included) that *is* such a name, or a path made of it (no spaces: `"window_0/done"`, `f"{run}/run.json"`), fails.

Allowed on purpose: prose (a constant with a space: docstrings, error messages, CLI help may name the files a user
sees), and the owners themselves.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from helpers import ROOT

PACKAGES = ("common", "benchmark", "detectors", "protocols", "leaderboard")
# name -> the modules allowed to spell it (its owner, and the owner of a format that records it)
OWNED: dict[str, set[str]] = {
    "predictions.npz": {"common/predictions_file.py"},
    "schema_version": {"common/predictions_file.py", "common/localization_file.py", "common/run_dir.py"},
    "localization.npz": {"common/localization_file.py"},
    "run.json": {"common/run_dir.py"},
    "done": {"common/run_dir.py"},
    "window_": {"common/run_dir.py"},
    "window_init": {"common/run_dir.py"},
    "checkpoint.safetensors": {"detectors/checkpoint.py"},
    "checkpoint.json": {"detectors/checkpoint.py"},
}
# A constant that equals a name but means something else there (module, name, why).
UNRELATED = {
    ("protocols/slurm.py", "done"),  # the `done` closing a bash `while` loop of the SLURM job script
}
_PATH_PART = re.compile(r"[^/\s{}<>'\"`]+")
_WINDOW_DIR = re.compile(r"window_(\d+|\*|)")  # a window directory, its glob, or an f-string's prefix


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants of a module, its classes and functions."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _names_in(text: str) -> set[str]:
    """The owned names a constant spells as a name or a path component (prose, with a space, spells none)."""
    if " " in text or "\n" in text:
        return set()
    parts = set(_PATH_PART.findall(text))
    found = {name for name in OWNED if name in parts}
    if any(_WINDOW_DIR.fullmatch(p) for p in parts) or text.endswith("/window_"):
        found.add("window_")
    return found


def spelled_names(root: Path = ROOT) -> list[tuple[str, str, int]]:
    """(module, name, line) of every owned name spelled outside its owners."""
    hits = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
            skip = _docstrings(tree)
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in skip:
                    continue
                for name in _names_in(node.value):
                    if rel not in OWNED[name] and (rel, name) not in UNRELATED:
                        hits.append((rel, name, node.lineno))
    return hits


def test_layout_names_and_format_keys_are_spelled_by_their_owners_only():
    hits = spelled_names()
    assert not hits, "spelled outside their owner (use the owner's constant or function):\n" + "\n".join(
        f"  {rel}:{line}: {name!r} (owner: {', '.join(sorted(OWNED[name]))})" for rel, name, line in hits)


def test_the_scan_finds_a_spelled_name(tmp_path):
    """Control: the scan sees a plain constant, a path, an f-string part, and lets prose and docstrings pass."""
    pkg = tmp_path / "leaderboard"
    pkg.mkdir()
    (pkg / "x.py").write_text('"""Reads run.json."""\n'
                              'A = "predictions.npz"\n'
                              'B = f"{1}/run.json"\n'
                              'C = f"window_{2}"\n'
                              'D = "no window_<k>/done: nothing to rank"\n'
                              'E = "schema_version"\n')
    for other in PACKAGES:
        (tmp_path / other).mkdir(exist_ok=True)
    found = sorted((name, line) for _, name, line in spelled_names(tmp_path))
    assert found == [("predictions.npz", 2), ("run.json", 3), ("schema_version", 6), ("window_", 4)]
