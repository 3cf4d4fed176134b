"""What identifies a probe's cached features (key) and how their store is laid out: import-light (torch is
imported by the key functions only), so a run's cache budget is checked before torch or Lightning is imported.
The extraction itself is protocols/feature_cache.py.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from benchmark.array_store import DEFAULT_CHUNK_BYTES, Field, StoreSpec, make_spec

if TYPE_CHECKING:
    import torch

FEATURE_CACHE_FORMAT = 1


def backbone_fingerprint(detector: torch.nn.Module) -> str:
    """sha256 over the backbone's state (names, dtypes, shapes, bytes): which frozen weights made the features."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(detector.backbone.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def feature_key(detector, inputs_digest: str, precision: str, channels_last: bool, device: str,
                normalize: dict | None = None) -> dict:
    """Everything that determines a probe's cached features. `normalize` (the resolved eval.normalize statistics,
    train_cfg["normalize"]) enters the key only when it differs from the backbone's own mean/std."""
    import torch

    meta = detector.meta
    key = {
        "format": FEATURE_CACHE_FORMAT, "detector": meta.name, "pretrained": meta.pretrained,
        "backbone_sha256": backbone_fingerprint(detector), "feature_dim": meta.feature_dim,
        "inputs": inputs_digest, "precision": precision, "channels_last": bool(channels_last),
        "device": device, "torch": torch.__version__,
    }
    norm = normalize or {}
    if norm and (list(norm["mean"]) != list(meta.mean) or list(norm["std"]) != list(meta.std)):
        key["normalize"] = {"mean": list(norm["mean"]), "std": list(norm["std"])}  # not the backbone's own
    return key


def feature_store_spec(key: dict, n_rows: int, feature_dim: int, batch_size: int,
                       chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> StoreSpec:
    """One float32 row per dataset item; chunks are whole batches."""
    return make_spec("features", key, n_rows, {"features": Field("float32", (int(feature_dim),))}, chunk_bytes,
                     multiple=batch_size)
