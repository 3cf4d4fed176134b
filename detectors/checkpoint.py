"""The checkpoint format of a window directory: the detector's trainable weights in safetensors (WEIGHTS_FILE) and
its metadata beside them (META_FILE). The engine saves and reloads through `save_checkpoint`, `complete_checkpoint`
and `load_checkpoint`; `load_detector_from_checkpoint` rebuilds a trained detector from it.

Needs only this package: no harness, no Lightning. A tune checkpoint holds every weight, so the detector is
built with pretrained='none' and filled from the file; a probe checkpoint holds only the head, so the frozen
backbone is rebuilt from the pretrained source recorded in the metadata (which must still be available).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from common import run_dir as layout
from common.atomic import atomic_path, atomic_write_json

from .registry import create_detector

if TYPE_CHECKING:
    import torch

    from .base import Detector

WEIGHTS_FILE = "checkpoint.safetensors"
META_FILE = "checkpoint.json"
_MUST_MATCH = ("family", "backbone", "mode", "input_size", "mean", "std", "feature_dim", "n_params")


class CheckpointError(ValueError):
    """A window directory does not hold a usable detector checkpoint; the message says what is wrong."""


def _sha256(path: Path) -> str:
    from benchmark.manifest import sha256_file

    return sha256_file(path)


def save_checkpoint(detector: torch.nn.Module, window_dir: Path, extra: dict) -> Path:
    """Write the trainable state (head only for probes) atomically, plus the detector metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in detector.trainable_state_dict().items()}
    path = Path(window_dir) / WEIGHTS_FILE
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    # The metadata is written last and names the weights' sha256: a pair torn by a crash is never taken
    # for a finished window (see `complete_checkpoint`).
    doc = {"detector": detector.meta.to_dict(), "weights_sha256": _sha256(path), **extra}
    atomic_write_json(Path(window_dir) / META_FILE, doc)
    return path


def complete_checkpoint(window_dir: Path, identity: dict) -> bool:
    """True if the window's weights are finished and belong to this run: the metadata names the same
    identity (run id, config hash, window, …) and the weights file has the recorded sha256."""
    path, meta_path = Path(window_dir) / WEIGHTS_FILE, Path(window_dir) / META_FILE
    if not path.is_file() or not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return False
    if not meta.get("training_complete") or any(meta.get(k) != v for k, v in identity.items()):
        return False
    return meta.get("weights_sha256") == _sha256(path)


def load_checkpoint(detector: torch.nn.Module, window_dir: Path) -> None:
    """Load a window's trainable state strictly; the checkpoint must belong to this detector and its weights must
    be the bytes its metadata recorded (a swapped or damaged file is refused with what to do)."""
    from safetensors.torch import load_file

    path = Path(window_dir) / WEIGHTS_FILE
    meta_path = Path(window_dir) / META_FILE
    redo = f"delete {layout.done_marker(window_dir)} to recompute the window"
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"{window_dir} is marked done but has no {WEIGHTS_FILE}/{META_FILE}; {redo}")
    try:
        meta = json.loads(meta_path.read_text())
        name = meta["detector"]["name"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{meta_path} is unreadable ({type(e).__name__}: {e}); {redo}") from None
    if name != detector.meta.name:
        raise CheckpointError(f"{path} holds weights of {name!r}, not {detector.meta.name!r}; {redo}")
    if meta.get("weights_sha256") not in (None, _sha256(path)):
        raise CheckpointError(f"{path} is not the file this window wrote (sha256 differs from {META_FILE}'s); "
                              f"{redo}")
    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors' own error type: a damaged file, reported as such
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); {redo}") from None
    detector.load_trainable_state_dict(state)


def read_checkpoint_meta(window_dir: str | os.PathLike) -> dict:
    """The parsed checkpoint.json of ``window_dir``, with the detector metadata normalised under 'detector'.

    The metadata is DetectorMeta.to_dict() under 'detector' (or 'detector_meta' when 'detector' holds only the
    name). Without it, the detector is described by the resolved config ('detector' name, 'pretrained' source)
    and marked ``"from_config": True``: nothing can then be checked against the rebuilt detector.
    """
    meta_path = Path(window_dir) / META_FILE
    if not meta_path.is_file():
        raise CheckpointError(f"{meta_path} not found: {window_dir} is not a finished window of a genshift run "
                              f"(expected {WEIGHTS_FILE} and {META_FILE})")
    try:
        doc = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise CheckpointError(f"{meta_path} must hold a JSON object, found {type(doc).__name__}")
    det = doc.get("detector")
    if not isinstance(det, dict):
        det = doc.get("detector_meta")
    if not isinstance(det, dict):
        cfg = doc.get("config") if isinstance(doc.get("config"), dict) else {}
        name = doc.get("detector") if isinstance(doc.get("detector"), str) else cfg.get("detector")
        if not isinstance(name, str) or "pretrained" not in cfg:
            raise CheckpointError(f"{meta_path} names no detector: expected 'detector' metadata (name, pretrained, "
                                  f"mode, ...) or a 'config' with 'detector' and 'pretrained'; found {sorted(doc)}")
        det = {"name": name, "pretrained": cfg["pretrained"], "mode": name.rpartition("_")[2], "from_config": True}
    if not {"name", "pretrained", "mode"} <= set(det):
        raise CheckpointError(f"{meta_path}: detector metadata lacks name/pretrained/mode; found {sorted(det)}")
    return {**doc, "detector": det}


def load_detector_from_checkpoint(window_dir: str | os.PathLike, **factory_kwargs) -> Detector:
    """Build the detector recorded in ``window_dir/checkpoint.json`` and load its weights strictly.

    ``factory_kwargs`` (or a 'detector_kwargs' entry of checkpoint.json) go to the factory, for detectors built
    with extra arguments. The rebuilt metadata must match the recorded one (size, normalisation, parameters).
    Returns the detector in eval mode.
    """
    from safetensors.torch import load_file

    window_dir = Path(window_dir)
    doc = read_checkpoint_meta(window_dir)
    recorded = doc["detector"]
    weights = window_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights} not found next to {META_FILE}; the window's weights are missing")
    kwargs = {**doc.get("detector_kwargs", {}), **factory_kwargs}
    is_probe = recorded["mode"] == "probe"
    source = recorded["pretrained"] if is_probe else "none"  # a tune checkpoint holds every weight
    try:
        detector = create_detector(recorded["name"], pretrained=source, **kwargs)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"{window_dir} is a probe checkpoint (head only); its frozen backbone comes from {source!r}, which "
            f"is not available here: {exc}") from exc
    rebuilt = detector.meta.to_dict()
    diffs = [f"{k}: recorded {recorded[k]!r}, rebuilt {rebuilt[k]!r}"
             for k in _MUST_MATCH if k in recorded and recorded[k] != rebuilt[k]]
    if diffs:
        raise CheckpointError(f"{window_dir}: detector {recorded['name']!r} rebuilt differently from the one "
                              f"that was trained (library versions or factory arguments changed?): {diffs}")
    try:
        state = load_file(str(weights))
    except Exception as e:  # noqa: BLE001 - safetensors' own error type: a damaged or foreign file
        raise CheckpointError(f"{weights} is not a readable safetensors file ({e})") from None
    detector.load_trainable_state_dict(state)
    detector.meta.pretrained = recorded["pretrained"]
    return detector.eval()
