"""Probe feature cache: a frozen backbone's features of the eval inputs and of every fixed training copy,
computed once (through Lightning, at the run's precision) and reused by every window (DESIGN §8).

The key names the detector, its pretrained source, a sha256 over the backbone's weights, the pixel store the
features come from, the precision, memory format, device kind and torch version: anything that changes them.
"""

from __future__ import annotations

import hashlib

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from benchmark.array_store import cached_array
from protocols.module import DetectorModule

FEATURE_CACHE_FORMAT = 1


def backbone_fingerprint(detector: torch.nn.Module) -> str:
    """sha256 over the backbone's state (names, dtypes, shapes, bytes): which frozen weights made the features."""
    h = hashlib.sha256()
    for name, t in sorted(detector.backbone.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def feature_key(detector, inputs_digest: str, precision: str, channels_last: bool, device: str) -> dict:
    """Everything that determines a probe's cached features."""
    meta = detector.meta
    return {
        "format": FEATURE_CACHE_FORMAT, "detector": meta.name, "pretrained": meta.pretrained,
        "backbone_sha256": backbone_fingerprint(detector), "feature_dim": meta.feature_dim,
        "inputs": inputs_digest, "precision": precision, "channels_last": bool(channels_last),
        "device": device, "torch": torch.__version__,
    }


class FeatureExtractor(DetectorModule):
    """predict_step -> (backbone features as float32, batch index): the exact features training_step feeds the
    head in the uncached path (same normalisation, memory format and autocast)."""

    def predict_step(self, batch, batch_idx):
        return self.detector.features(self.normalise(batch[0])).float()


def extract_features(
    detector, dataset: Dataset, train_cfg: dict, precision: str, accelerator: str, batch_size: int,
    progress: bool, workers: int = 0,
) -> np.ndarray:
    """Features (len(dataset), feature_dim) float32 in dataset order, through a Lightning predict loop."""
    if not detector.is_probe:
        raise ValueError(f"{detector.meta.name}: features are cached only for probe detectors (frozen backbone)")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=getattr(dataset, "collate", None),
                        pin_memory=torch.cuda.is_available() and workers > 0)
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=precision, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress,
                        deterministic=True)
    was_training = detector.training
    outputs = trainer.predict(FeatureExtractor(detector, train_cfg, 1), dataloaders=loader)
    detector.train(was_training)
    feats = torch.cat(outputs).cpu().numpy().astype(np.float32, copy=False)
    rows = getattr(dataset, "n_crops", None) or len(dataset)  # a dataset of crop groups: one row per crop
    if feats.shape != (rows, detector.meta.feature_dim):
        raise RuntimeError(f"feature extraction returned {feats.shape}, expected "
                           f"({rows}, {detector.meta.feature_dim})")
    return feats


def cached_features(
    cache_dir, detector, dataset: Dataset, inputs_digest: str, train_cfg: dict, precision: str, accelerator: str,
    device: str, batch_size: int, progress: bool, workers: int = 0,
) -> tuple[np.ndarray, dict]:
    """Load or compute-and-store the features of `dataset` (identified by `inputs_digest`)."""
    key = feature_key(detector, inputs_digest, precision, bool(train_cfg.get("channels_last")), device)
    norm = train_cfg.get("normalize") or {}
    meta = detector.meta
    if norm and (list(norm["mean"]) != list(meta.mean) or list(norm["std"]) != list(meta.std)):
        key["normalize"] = {"mean": list(norm["mean"]), "std": list(norm["std"])}  # not the backbone's own
    arr, info = cached_array(
        cache_dir, "features", key,
        lambda: extract_features(detector, dataset, train_cfg, precision, accelerator, batch_size, progress,
                                 workers),
    )
    return arr, key | {"digest": info["digest"], "path": info["path"], "hit": info["hit"]}
