"""Rebuild a trained detector from a run's window directory (checkpoint.safetensors + checkpoint.json).

Needs only this package: no harness, no Lightning. A tune checkpoint holds every weight, so the detector is
built with pretrained='none' and filled from the file; a probe checkpoint holds only the head, so the frozen
backbone is rebuilt from the pretrained source recorded in the metadata (which must still be available).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .registry import create_detector

if TYPE_CHECKING:
    from .base import Detector

WEIGHTS_FILE = "checkpoint.safetensors"
META_FILE = "checkpoint.json"
_MUST_MATCH = ("family", "backbone", "mode", "input_size", "mean", "std", "feature_dim", "n_params")


class CheckpointError(ValueError):
    """A window directory does not hold a usable detector checkpoint; the message says what is wrong."""


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
