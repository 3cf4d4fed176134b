"""Parsed landmark sequences of a manifest, read once and cached (float64, as LRNet's `np.loadtxt` gives them).

The cache file (`<cache>/sequences/<digest>.npz`, one flat float64 array plus per-sample offsets) is keyed by
the listed samples' paths and sha256, so an edited file is parsed again. Parsing uses numpy's `loadtxt`
(LRNet's own reader); a file it rejects is parsed again by `benchmark.sequences.parse_landmarks` for a precise
message (empty, ragged, wrong width, NaN/inf).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmark.imagestore import read_bytes
from benchmark.manifest import Manifest, Sample
from benchmark.sequences import LANDMARK_WIDTH, landmarks_from_bytes
from common.atomic import atomic_path

STORE_VERSION = 1


def read_landmarks(root: str | Path, path: str) -> np.ndarray:
    """(T, 136) float64 frames of one landmark file; SequenceError names what is wrong with it."""
    where = str(Path(path) if Path(path).is_absolute() else Path(root) / path)
    return landmarks_from_bytes(read_bytes(str(root), path), where)


def _key(manifest: Manifest, samples: Sequence[Sample]) -> str:
    h = hashlib.sha256(json.dumps({"v": STORE_VERSION, "root": str(manifest.root)}).encode())
    for s in samples:
        h.update(f"{s.split}|{s.id}|{s.path}|{s.sha256}\n".encode())
    return h.hexdigest()[:24]


def load_sequences(manifest: Manifest, samples: Sequence[Sample], cache_dir: Path | None = None,
                   progress: bool = False) -> dict[tuple[str, int], np.ndarray]:
    """(split, id) → (T, 136) float64 frames of every given landmark sample; cached under cache_dir."""
    samples = [s for s in samples if s.kind == "landmarks"]
    keys = [(s.split, s.id) for s in samples]
    target = Path(cache_dir) / "sequences" / f"{_key(manifest, samples)}.npz" if cache_dir else None
    if target is not None and target.is_file():
        try:
            with np.load(target, allow_pickle=False) as z:
                flat, offsets = z["frames"], z["offsets"]
            if offsets.size == len(samples) + 1:
                return {k: flat[offsets[i]:offsets[i + 1]].reshape(-1, LANDMARK_WIDTH) for i, k in enumerate(keys)}
        except (OSError, ValueError, KeyError):
            pass
    from benchmark.progress import counted_progress

    arrays = []
    with counted_progress(progress) as bar:
        task = bar.add_task("reading landmark files", total=len(samples))
        for s in samples:
            arrays.append(read_landmarks(manifest.root, s.path))
            bar.advance(task)
    if target is not None and samples:
        offsets = np.cumsum([0] + [a.size for a in arrays]).astype(np.int64)
        with atomic_path(target) as tmp, open(tmp, "wb") as f:
            np.savez(f, frames=np.concatenate([a.ravel() for a in arrays]), offsets=offsets)
    return dict(zip(keys, arrays, strict=True))
