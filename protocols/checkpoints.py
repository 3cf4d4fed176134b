"""Checkpoints: the detector's trainable weights in safetensors, its resolved config beside them."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from benchmark.manifest import sha256_file
from common.atomic import atomic_path, atomic_write_json
from detectors.checkpoint import CheckpointError

WEIGHTS = "checkpoint.safetensors"
META = "checkpoint.json"


def save_checkpoint(detector: torch.nn.Module, window_dir: Path, extra: dict) -> Path:
    """Write the trainable state (head only for probes) atomically, plus the detector metadata."""
    state = {k: v.detach().cpu().contiguous() for k, v in detector.trainable_state_dict().items()}
    path = Path(window_dir) / WEIGHTS
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    # The metadata is written last and names the weights' sha256: a pair torn by a crash is never taken
    # for a finished window (see `complete_checkpoint`).
    doc = {"detector": detector.meta.to_dict(), "weights_sha256": sha256_file(path), **extra}
    atomic_write_json(Path(window_dir) / META, doc)
    return path


def complete_checkpoint(window_dir: Path, identity: dict) -> bool:
    """True if the window's weights are finished and belong to this run: the metadata names the same
    identity (run id, config hash, window, …) and the weights file has the recorded sha256."""
    path, meta_path = Path(window_dir) / WEIGHTS, Path(window_dir) / META
    if not path.is_file() or not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return False
    if not meta.get("training_complete") or any(meta.get(k) != v for k, v in identity.items()):
        return False
    return meta.get("weights_sha256") == sha256_file(path)


def load_checkpoint(detector: torch.nn.Module, window_dir: Path) -> None:
    """Load a window's trainable state strictly; the checkpoint must belong to this detector and its weights must
    be the bytes its metadata recorded (a swapped or damaged file is refused with what to do)."""
    path = Path(window_dir) / WEIGHTS
    meta_path = Path(window_dir) / META
    redo = f"delete {Path(window_dir) / 'done'} to recompute the window"
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"{window_dir} is marked done but has no {WEIGHTS}/{META}; {redo}")
    try:
        meta = json.loads(meta_path.read_text())
        name = meta["detector"]["name"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{meta_path} is unreadable ({type(e).__name__}: {e}); {redo}") from None
    if name != detector.meta.name:
        raise CheckpointError(f"{path} holds weights of {name!r}, not {detector.meta.name!r}; {redo}")
    if meta.get("weights_sha256") not in (None, sha256_file(path)):
        raise CheckpointError(f"{path} is not the file this window wrote (sha256 differs from {META}'s); {redo}")
    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors' own error type: a damaged file, reported as such
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); {redo}") from None
    detector.load_trainable_state_dict(state)
