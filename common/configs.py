"""Where the shipped YAML configuration lives: `configs/` of the source tree, or its installed copy.

The source tree keeps `configs/` at its top level; a wheel installs the same files as data files under
`<prefix>/share/genshift/configs` (`pyproject.toml`, `[tool.setuptools.data-files]`). An editable install or a
checkout finds the source tree's copy; a regular install (into a venv, `--user` or `--target`) the installed one.
"""

from __future__ import annotations

import sys
import sysconfig
from functools import lru_cache
from pathlib import Path

INSTALLED_SUBDIR = Path("share") / "genshift" / "configs"
_MARKER = "base.yaml"  # every configs directory has it


def config_dir_candidates() -> list[Path]:
    """The places searched, in order: the source tree, then the installation prefixes."""
    root = Path(__file__).resolve().parent.parent  # the source tree, or site-packages (or a --target folder)
    places = [root / "configs", root / INSTALLED_SUBDIR]
    places.append(Path(sysconfig.get_path("data")) / INSTALLED_SUBDIR)  # this interpreter's prefix (a venv)
    places.append(Path(sysconfig.get_path("data", sysconfig.get_preferred_scheme("user"))) / INSTALLED_SUBDIR)
    places.append(Path(sys.prefix) / INSTALLED_SUBDIR)
    unique: list[Path] = []
    for place in places:
        if place not in unique:
            unique.append(place)
    return unique


@lru_cache(maxsize=1)
def config_dir() -> Path:
    """The directory holding `base.yaml`, `benchmark/`, `slurm/` and `timelines/`."""
    for place in config_dir_candidates():
        if (place / _MARKER).is_file():
            return place
    searched = ", ".join(str(p) for p in config_dir_candidates())
    raise FileNotFoundError(f"genshift's configs directory was not found (looked for {_MARKER} in: {searched}); "
                            "reinstall genshift (`pip install .`) or run it from its source tree")
