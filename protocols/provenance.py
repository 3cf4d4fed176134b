"""What a run records about where it ran: package versions, host, git commit."""

from __future__ import annotations

import importlib.metadata as md
import platform
import socket
import subprocess
from pathlib import Path

PACKAGES = (
    "genshift", "torch", "torchvision", "lightning", "torchmetrics", "timm", "open_clip_torch", "numpy",
    "pillow", "opencv-python-headless", "albumentations", "safetensors", "datasets",
)


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for p in PACKAGES:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    return out


def git_commit(path: Path | None = None) -> str | None:
    """HEAD commit of the genshift checkout (with '+dirty' if modified), or None outside git."""
    root = path or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def host_info() -> dict[str, str]:
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version()}
