"""The installed distribution works on its own: a wheel built from a clean export of the tracked files, installed
non-editable into a throw-away folder, finds its configs and runs the smoke benchmark from another directory."""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT


def _data_file_patterns() -> dict[str, list[str]]:
    tomllib = pytest.importorskip("tomllib")
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]["data-files"]


def test_every_shipped_config_is_mapped_into_the_wheel():
    """Each YAML under configs/ is matched by a data-files line that installs it at the same relative place."""
    mapped = {}
    for target, patterns in _data_file_patterns().items():
        for pattern in patterns:
            for path in ROOT.glob(pattern):
                mapped[path.relative_to(ROOT / "configs").as_posix()] = target
    shipped = sorted(p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml"))
    assert shipped, "no YAML under configs/"
    missing = [p for p in shipped if p not in mapped]
    assert not missing, f"configs not installed with the wheel (add a [tool.setuptools.data-files] line): {missing}"
    for rel, target in mapped.items():
        want = "share/genshift/configs" + ("/" + rel.rsplit("/", 1)[0] if "/" in rel else "")
        assert target == want, f"{rel} would be installed under {target}, expected {want}"
        assert fnmatch.fnmatch(rel, "*.yaml")


def test_configs_are_found_in_the_source_tree():
    from common.configs import config_dir

    assert config_dir() == ROOT / "configs"


def _build_backend_installed() -> bool:
    """setuptools can build a wheel here without downloading anything (it needs `wheel` before 70.1)."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    from importlib.metadata import version

    found = re.match(r"(\d+)\.(\d+)", version("setuptools"))
    recent = found is not None and (int(found[1]), int(found[2])) >= (70, 1)
    return recent or importlib.util.find_spec("wheel") is not None


def _tracked_files_copy(dest: Path) -> Path:
    """Copy the files git tracks (as they are in the working tree) into dest: no build/, no caches, no .venv."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: cannot list the tracked files")
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, listing.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.mark.slow
def test_non_editable_install_runs_the_smoke_benchmark_from_another_directory(tmp_path, cache_dir):
    export = _tracked_files_copy(tmp_path / "export")
    assert not (export / "build").exists()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="offline", PIP_DISABLE_PIP_VERSION_CHECK="1")
    # Build with the installed backend when there is one; otherwise pip fetches it from the package index.
    isolation = ["--no-build-isolation"] if _build_backend_installed() else []
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(wheels),
                    str(export)], check=True, env=env, cwd=tmp_path)
    (wheel,) = wheels.glob("genshift-*.whl")
    target = tmp_path / "target"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, env=env, cwd=tmp_path)
    assert (target / "share" / "genshift" / "configs" / "base.yaml").is_file()
    assert not (target / "configs").exists()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env["PYTHONPATH"] = str(target)
    where = subprocess.run(
        [sys.executable, "-c", "import protocols, common.configs as c; print(protocols.__file__, c.__file__, c.config_dir())"],
        check=True, env=env, cwd=elsewhere, capture_output=True, text=True).stdout.split()
    for module in where[:2]:
        assert Path(module).is_relative_to(target), f"imported {module}, not the installed copy"
    assert Path(where[2]) == target / "share" / "genshift" / "configs"

    done = subprocess.run(
        [str(target / "bin" / "genshift"), "run", "--preset", "smoke", "--no-progress", "--runs-dir",
         str(tmp_path / "runs"), "--cache-dir", str(cache_dir), "--experiment", "installed", "--set", "threads=1"],
        env=env, cwd=elsewhere, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = tmp_path / "runs" / "installed"
    assert (run / "run.json").is_file()
    assert sorted(p.name for p in run.glob("window_*/done"))
    assert (run / "leaderboard.md").is_file()
