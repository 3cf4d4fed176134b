"""Checkpoints: the detector's trainable weights in safetensors, its resolved config beside them."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from benchmark.atomic import atomic_path, atomic_write_json

WEIGHTS = "checkpoint.safetensors"
META = "checkpoint.json"


def save_checkpoint(detector: torch.nn.Module, window_dir: Path, extra: dict) -> Path:
    """Write the trainable state (head only for probes) atomically, plus the detector metadata."""
    state = {k: v.detach().cpu().contiguous() for k, v in detector.trainable_state_dict().items()}
    path = Path(window_dir) / WEIGHTS
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    doc = {"detector": detector.meta.to_dict(), **extra}
    atomic_write_json(Path(window_dir) / META, doc)
    return path


def load_checkpoint(detector: torch.nn.Module, window_dir: Path) -> None:
    """Load a window's trainable state strictly; the checkpoint must belong to this detector."""
    path = Path(window_dir) / WEIGHTS
    meta_path = Path(window_dir) / META
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"{window_dir} is marked done but has no {WEIGHTS}/{META}; "
                                "delete its 'done' file to recompute the window")
    meta = json.loads(meta_path.read_text())
    if meta["detector"]["name"] != detector.meta.name:
        raise ValueError(f"{path} holds weights of {meta['detector']['name']!r}, not {detector.meta.name!r}")
    detector.load_trainable_state_dict(load_file(str(path)))
