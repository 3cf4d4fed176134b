"""`genshift detectors new <name>`: write a ready-to-install plugin package registering one detector.

The package declares its factory under the entry-point group ``genshift.detectors``; after ``pip install -e``
the names ``<name>_probe`` and ``<name>_tune`` are known to every genshift command.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from .registry import ENTRY_POINT_GROUP, MODES, list_detectors

TEMPLATE_DIR = Path(__file__).with_name("templates")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
# template file -> path inside the package directory ($pkg is replaced)
FILES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "detector.py.tmpl": "$pkg/detector.py",
    "init.py.tmpl": "$pkg/__init__.py",
    "test_detector.py.tmpl": "tests/test_$pkg.py",
    "README.md.tmpl": "README.md",
}


class ScaffoldError(ValueError):
    """The plugin cannot be written (bad name, name taken, target not empty)."""


def check_plugin_name(name: str) -> None:
    """A plugin name is a backbone name: letters, digits, '_' or '-', no mode suffix, not already registered."""
    if not _NAME.match(name):
        raise ScaffoldError(f"plugin name {name!r} must start with a letter and use only letters, digits, '_' "
                            "and '-' (it becomes the detector names <name>_probe and <name>_tune)")
    if name.rpartition("_")[2] in MODES:
        raise ScaffoldError(f"plugin name {name!r} must not end in a mode; give the backbone name, e.g. "
                            f"{name.rpartition('_')[0]!r}: both <name>_probe and <name>_tune are registered")
    taken = [f"{name}_{m}" for m in MODES if f"{name}_{m}" in set(list_detectors())]
    if taken:
        raise ScaffoldError(f"detector names {taken} are already registered; choose another plugin name")


def plugin_names(name: str) -> dict[str, str]:
    """Substitutions for the templates: detector name, Python package, distribution name."""
    pkg = "genshift_" + re.sub(r"[^0-9A-Za-z_]", "_", name).lower()
    return {"name": name, "pkg": pkg, "dist": pkg.replace("_", "-"), "group": ENTRY_POINT_GROUP}


def write_plugin(name: str, parent: str | Path = ".", force: bool = False) -> Path:
    """Write the plugin package for ``name`` under ``parent``; returns its directory."""
    check_plugin_name(name)
    return write_package(TEMPLATE_DIR, FILES, plugin_names(name), parent, force)


def write_package(template_dir: Path, files: dict[str, str], subs: dict[str, str], parent: str | Path,
                  force: bool, error: type[Exception] = ScaffoldError) -> Path:
    """Render `files` (template name -> path inside the package, both with $-substitutions) from `template_dir`
    into `parent`/<subs["dist"]>; refuses (`error`) a non-empty target unless `force`. Returns the directory."""
    root = Path(parent) / subs["dist"]
    if root.exists() and any(root.iterdir()) and not force:
        raise error(f"{root} exists and is not empty; remove it, choose another --dir, or pass --force")
    for tmpl, rel in files.items():
        text = Template((template_dir / tmpl).read_text()).substitute(subs)
        path = root / Template(rel).substitute(subs)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
