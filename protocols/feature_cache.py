"""Probe feature cache: a frozen backbone's features of the eval inputs and of every fixed training copy,
computed once (through Lightning, at the run's precision) and reused by every window (DESIGN §8).

Features go batch by batch into a chunked store (benchmark/array_store.py): memory holds one chunk, a killed
extraction resumes at its first unfinished chunk, and chunks are whole batches so a resumed extraction sees the
same batches as an uninterrupted one.

The key names the detector, its pretrained source, a sha256 over the backbone's weights, the pixel store the
features come from, the precision, memory format, device kind and torch version: anything that changes them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from benchmark.array_store import (
    DEFAULT_CHUNK_BYTES,
    Field,
    StoreSpec,
    StoreWriter,
    make_spec,
    open_store,
    store_dir,
)
from benchmark.store_build import ChunkSink
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


class _RowsTo(L.Callback):
    """Hands every predicted batch's rows to `put(rows)` as they come (nothing is kept by Lightning)."""

    def __init__(self, put: Callable[[np.ndarray], None]):
        self.put = put

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.put(outputs.detach().cpu().numpy().astype(np.float32, copy=False))


def _predict_rows(detector, dataset: Dataset, train_cfg: dict, precision: str, accelerator: str, batch_size: int,
                  progress: bool, workers: int, put: Callable[[np.ndarray], None]) -> None:
    """Backbone features of `dataset` in order, batch by batch, through a Lightning predict loop."""
    if not detector.is_probe:
        raise ValueError(f"{detector.meta.name}: features are cached only for probe detectors (frozen backbone)")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=torch.cuda.is_available() and workers > 0)
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=precision, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress,
                        deterministic=True, callbacks=[_RowsTo(put)])
    was_training = detector.training
    trainer.predict(FeatureExtractor(detector, train_cfg, 1), dataloaders=loader, return_predictions=False)
    detector.train(was_training)


def extract_features(
    detector, dataset: Dataset, train_cfg: dict, precision: str, accelerator: str, batch_size: int,
    progress: bool, workers: int = 0,
) -> np.ndarray:
    """Features (len(dataset), feature_dim) float32 in dataset order, in memory (benches and small data)."""
    parts: list[np.ndarray] = []
    _predict_rows(detector, dataset, train_cfg, precision, accelerator, batch_size, progress, workers, parts.append)
    dim = detector.meta.feature_dim
    feats = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
    if feats.shape != (len(dataset), dim):
        raise RuntimeError(f"feature extraction returned {feats.shape}, expected ({len(dataset)}, {dim})")
    return feats


def feature_store_spec(key: dict, n_rows: int, feature_dim: int, batch_size: int,
                       chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> StoreSpec:
    """One float32 row per dataset item; chunks are whole batches."""
    return make_spec("features", key, n_rows, {"features": Field("float32", (int(feature_dim),))}, chunk_bytes,
                     multiple=batch_size)


def cached_features(
    cache_dir, detector, dataset: Dataset, inputs_digest: str, train_cfg: dict, precision: str, accelerator: str,
    device: str, batch_size: int, progress: bool, workers: int = 0, *, verify: str = "sample",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES, should_stop: Callable[[], None] | None = None,
):
    """Load or compute-and-store the features of `dataset` (identified by `inputs_digest`): (rows, key info)."""
    key = feature_key(detector, inputs_digest, precision, bool(train_cfg.get("channels_last")), device)
    spec = feature_store_spec(key, len(dataset), detector.meta.feature_dim, batch_size, chunk_bytes)
    info = key | {"digest": spec.digest, "path": None, "hit": False}
    args = (detector, train_cfg, precision, accelerator, batch_size, progress)
    if cache_dir is None:
        feats = extract_features(detector, dataset, *args[1:], workers)
        return feats, info | {"bytes": feats.nbytes}
    path = store_dir(cache_dir, "features", key)
    info["path"] = str(path)
    store = open_store(path, spec, verify)
    if store is None:
        writer = StoreWriter(path, spec)
        todo = [c for c in range(spec.n_chunks) if c not in writer.done_chunks()]
        sink = ChunkSink(writer, todo)
        items = list(sink.items())
        pending = iter(items)

        def put(rows: np.ndarray) -> None:
            for row in rows:
                if sink.put(next(pending), row) is not None and should_stop is not None:
                    should_stop()

        if items:
            _predict_rows(detector, Subset(dataset, items), *args[1:], workers, put)
        if next(pending, None) is not None:
            raise RuntimeError(f"feature extraction of {path} ended before its last row")
        writer.finalize()
        store = open_store(path, spec, "fast")
    else:
        info["hit"] = True
    return store.field("features"), info | {"bytes": store.nbytes}
