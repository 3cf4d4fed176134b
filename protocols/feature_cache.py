"""Probe feature cache: a frozen backbone's features of the eval inputs and of every fixed training copy,
computed once (through Lightning, at the run's precision) and reused by every window (DESIGN §8).

Features go batch by batch into a chunked store (benchmark/array_store.py): memory holds one chunk, a killed
extraction resumes at its first unfinished chunk, and chunks are whole batches so a resumed extraction sees the
same batches as an uninterrupted one.

The key names the detector, its pretrained source, a sha256 over the backbone's weights, the pixel store the
features come from, the precision, memory format, device kind and torch version: anything that changes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from benchmark.array_store import DEFAULT_CHUNK_BYTES, StoreWriter, open_store, store_dir
from benchmark.store_build import ChunkSink
from protocols.feature_keys import (  # re-exported: the keys live in an import-light module
    FEATURE_CACHE_FORMAT,
    backbone_fingerprint,
    feature_key,
    feature_store_spec,
)
from protocols.module import DetectorModule
from protocols.trainer import build_trainer

__all__ = ["FEATURE_CACHE_FORMAT", "Extraction", "FeatureExtractor", "backbone_fingerprint", "cached_features", "extract_features",
           "feature_key", "feature_store_spec"]


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


@dataclass(frozen=True)
class Extraction:
    """How features are computed: the run's train config (normalisation, memory format), the precision, Lightning's
    accelerator, the device kind recorded in the key (cpu/cuda), the batch size, a progress bar, loader workers."""

    train_cfg: dict
    precision: str
    accelerator: str = "auto"
    device: str = "cpu"
    batch_size: int = 64
    progress: bool = False
    workers: int = 0


def _predict_rows(detector, dataset: Dataset, how: Extraction, put: Callable[[np.ndarray], None]) -> None:
    """Backbone features of `dataset` in order, batch by batch, through a Lightning predict loop."""
    if not detector.is_probe:
        raise ValueError(f"{detector.meta.name}: features are cached only for probe detectors (frozen backbone)")
    loader = DataLoader(dataset, batch_size=how.batch_size, shuffle=False, num_workers=how.workers,
                        collate_fn=getattr(dataset, "collate", None),
                        pin_memory=torch.cuda.is_available() and how.workers > 0)
    trainer = build_trainer(how.precision, accelerator=how.accelerator, progress=how.progress,
                            callbacks=[_RowsTo(put)])
    was_training = detector.training
    trainer.predict(FeatureExtractor(detector, how.train_cfg, 1), dataloaders=loader, return_predictions=False)
    detector.train(was_training)


def extract_features(detector, dataset: Dataset, how: Extraction) -> np.ndarray:
    """Features (len(dataset), feature_dim) float32 in dataset order, in memory (benches and small data)."""
    parts: list[np.ndarray] = []
    _predict_rows(detector, dataset, how, parts.append)
    dim = detector.meta.feature_dim
    feats = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
    if feats.shape != (len(dataset), dim):
        raise RuntimeError(f"feature extraction returned {feats.shape}, expected ({len(dataset)}, {dim})")
    return feats


def cached_features(cache_dir, detector, dataset: Dataset, inputs_digest: str, how: Extraction, *,
                    verify: str = "sample", chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                    should_stop: Callable[[], None] | None = None):
    """Load or compute-and-store the features of `dataset` (identified by `inputs_digest`): (rows, key info)."""
    key = feature_key(detector, inputs_digest, how.precision, bool(how.train_cfg.get("channels_last")), how.device,
                      how.train_cfg.get("normalize"))
    spec = feature_store_spec(key, len(dataset), detector.meta.feature_dim, how.batch_size, chunk_bytes)
    info = key | {"digest": spec.digest, "path": None, "hit": False}
    if cache_dir is None:
        feats = extract_features(detector, dataset, how)
        return feats, info | {"bytes": feats.nbytes}
    path = store_dir(cache_dir, "features", key)
    info["path"] = str(path)
    t, cpu = time.perf_counter(), time.process_time()
    store = open_store(path, spec, verify)
    info |= {"verify_seconds": round(time.perf_counter() - t, 4), "verify": verify,
             "verify_cpu_seconds": round(time.process_time() - cpu, 4)}
    if store is None:
        writer = StoreWriter(path, spec)
        todo = [c for c in range(writer.spec.n_chunks) if c not in writer.done_chunks()]
        sink = ChunkSink(writer, todo)
        items = list(sink.items())
        pending = iter(items)

        def put(rows: np.ndarray) -> None:
            for row in rows:
                if sink.put(next(pending), row) is not None and should_stop is not None:
                    should_stop()

        if items:
            _predict_rows(detector, Subset(dataset, items), how, put)
        if next(pending, None) is not None:
            raise RuntimeError(f"feature extraction of {path} ended before its last row")
        writer.finalize()
        store = open_store(path, spec, "fast")
    else:
        info["hit"] = True
    return store.field("features"), info | {"bytes": store.nbytes}
