"""`genshift strategies new <name>`: write a ready-to-install plugin package registering one strategy.

The package declares its Strategy subclass under the entry-point group ``genshift.strategies``; after
``pip install -e`` the name is known to `genshift strategies list` and `--cl-strategy`.
"""

from __future__ import annotations

import re
from pathlib import Path

from detectors.scaffold import write_package
from protocols.config import ConfigError

from .registry import ENTRY_POINT_GROUP, list_strategies

TEMPLATE_DIR = Path(__file__).with_name("templates")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
# template file -> path inside the package directory ($pkg is replaced)
FILES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "strategy.py.tmpl": "$pkg/strategy.py",
    "init.py.tmpl": "$pkg/__init__.py",
    "test_strategy.py.tmpl": "tests/test_$pkg.py",
    "README.md.tmpl": "README.md",
}


class ScaffoldError(ConfigError):
    """The plugin cannot be written (bad name, name taken, target not empty)."""


def plugin_names(name: str) -> dict[str, str]:
    """Substitutions for the templates: strategy name, Python package, distribution name, class name."""
    slug = re.sub(r"[^0-9A-Za-z_]", "_", name).lower()
    pkg = "genshift_strategy_" + slug
    cls = "".join(part.capitalize() for part in re.split(r"[^0-9A-Za-z]+", name) if part) or "Plugin"
    return {"name": name, "pkg": pkg, "dist": pkg.replace("_", "-"), "group": ENTRY_POINT_GROUP,
            "cls": f"{cls}Strategy"}


def write_plugin(name: str, parent: str | Path = ".", force: bool = False) -> Path:
    """Write the plugin package for ``name`` under ``parent``; returns its directory."""
    if not _NAME.match(name):
        raise ScaffoldError(f"strategy name {name!r} must start with a letter and use only letters, digits, '_' "
                            "and '-'")
    if name in list_strategies():
        raise ScaffoldError(f"strategy {name!r} is already registered; choose another name")
    return write_package(TEMPLATE_DIR, FILES, plugin_names(name), parent, force, error=ScaffoldError)
