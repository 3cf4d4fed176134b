"""What the eval cache holds for the reference input pipeline: every crop exactly as the reference's model sees it
before Normalize (DESIGN §8, §9).

The reference resizes or crops the degradation chain's output in its own type, so a crop is either bytes that a
uint8 store restores bit for bit (a PIL crop, or a crop of a float tensor whose values are all k/255), or floats
that are not (a resize of a float tensor, or a crop of the floats left by a bilinear/bicubic random-resized crop).
The store keeps each crop in the smaller exact form (`benchmark.model_input.encode_crop`). It is a chunked store
(benchmark/array_store.py, kind `eval_reference`) with one item per eval position and three fields
(benchmark/store_layouts.py `reference_eval_fields`):

    kinds  int8 (N, max_crops)       each crop's encoding (0 uint8 via ToDtype, 1 uint8 via to_tensor, 2 float32),
                                     -1 past a position's last crop
    u8     uint8 (n_u8, 3, S, S)     the uint8 crops, in crop order
    f32    float32 (n_f32, 3, S, S)  the float crops, in crop order

so it is built like every other store: chunk by chunk (memory holds one chunk), hashed while written, resumed
after a kill from its finished chunks (byte-identical to an uninterrupted build), built by shards, and checked
cheaply on a warm start (`cache.verify`). Crops are in position order, a position's crops in the reference's
order (FiveCrop: TL, TR, BL, BR, centre). Normalisation is applied when a batch is read (`decode_crops`, then the
detector module's ``sub(mean).div_(std)``), so one store serves every normalisation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmark.array_store import DEFAULT_CHUNK_BYTES, REFERENCE_KIND, StoreSpec, make_spec
from benchmark.degradations import degradation_key
from benchmark.imagestore import read_image
from benchmark.manifest import Manifest
from benchmark.model_input import F32, check_strategy, decode_crops, encoded_model_input
from benchmark.store_build import cached_store
from benchmark.store_layouts import reference_eval_fields

KIND = REFERENCE_KIND
CACHE_FORMAT = 2  # bump when decode -> chain -> reference crops -> encoding (or the store's layout) changes


def reference_eval_key(manifest: Manifest, sample_ids: Sequence[int], profile: str, base_seed: int, size: int,
                       strategy: str) -> dict:
    """Everything that determines the stored crops (torchvision and the chain's libraries are in `degradation`)."""
    check_strategy(strategy)
    ids_hash = hashlib.sha256(np.asarray(sample_ids, dtype=np.int64).tobytes()).hexdigest()
    return {
        "format": CACHE_FORMAT,
        "pipeline": "reference",
        "manifest_checksum": manifest.checksum,
        "positions_sha256": ids_hash,
        "degradation": degradation_key(profile, base_seed),
        "input_size": int(size),
        "input_strategy": strategy,
    }


def max_crops(strategy: str) -> int:
    """Crops per position at most: 5 for five_crop (its FiveCrop falls back to one centre crop on small images),
    else 1."""
    return 5 if strategy == "five_crop" else 1


def reference_store_spec(manifest: Manifest, sample_ids: Sequence[int], profile: str, base_seed: int, size: int,
                         strategy: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> StoreSpec:
    """The reference eval store's layout (known before any decode; the cache plan sizes it by
    store_layouts.reference_upper_bound)."""
    key = reference_eval_key(manifest, sample_ids, profile, base_seed, size, strategy)
    return make_spec(KIND, key, len(sample_ids), reference_eval_fields(size, max_crops(strategy)), chunk_bytes)


def reference_input(root: str, path: str, position: int, profile: str, base_seed: int, size: int,
                    strategy: str) -> list[tuple[int, np.ndarray]]:
    """Decode one eval image and return its reference-pipeline crops, encoded (kind, uint8 or float32 3×S×S)."""
    return encoded_model_input(read_image(root, path), position, profile, base_seed, size, strategy)


def _store_item(crops: list[tuple[int, np.ndarray]], size: int, n_max: int) -> dict[str, np.ndarray]:
    """One position's crops as the store's fields (its `kinds` row, its uint8 rows, its float32 rows)."""
    if not 1 <= len(crops) <= n_max:
        raise RuntimeError(f"reference eval store: {len(crops)} crops for a position, expected 1..{n_max}")
    kinds = np.full((1, n_max), -1, dtype=np.int8)
    kinds[0, :len(crops)] = [k for k, _ in crops]
    row = (0, 3, size, size)
    u8 = [np.ascontiguousarray(a, dtype=np.uint8) for k, a in crops if k != F32]
    f32 = [np.ascontiguousarray(a, dtype=np.float32) for k, a in crops if k == F32]
    return {"kinds": kinds, "u8": np.stack(u8) if u8 else np.zeros(row, np.uint8),
            "f32": np.stack(f32) if f32 else np.zeros(row, np.float32)}


def _reference_job(args: tuple) -> dict[str, np.ndarray]:
    *job, n_max = args
    return _store_item(reference_input(*job), int(job[5]), n_max)


@dataclass
class ReferenceStore:
    """The stored crops of every eval position; `crops(positions)` gives them as float32 tensors."""

    index: np.ndarray  # (C, 3) int64: position, kind, row
    u8: np.ndarray  # (n_u8, 3, S, S) uint8: a store field (ChunkedArray) or an in-memory array
    f32: np.ndarray  # (n_f32, 3, S, S) float32
    n_positions: int
    offsets: np.ndarray = field(init=False)  # (N + 1,): crops of position p are rows offsets[p]:offsets[p+1]

    def __post_init__(self) -> None:
        pos = self.index[:, 0] if len(self.index) else np.zeros(0, dtype=np.int64)
        if len(pos) and (np.any(np.diff(pos) < 0) or pos[0] < 0 or pos[-1] >= self.n_positions):
            raise ValueError("reference eval store: crop positions are not sorted within 0..N-1")
        counts = np.bincount(pos, minlength=self.n_positions)
        if np.any(counts == 0):
            raise ValueError(f"reference eval store: {int((counts == 0).sum())} positions have no crop")
        self.offsets = np.r_[0, np.cumsum(counts)].astype(np.int64)

    @classmethod
    def from_fields(cls, kinds: np.ndarray, u8: np.ndarray, f32: np.ndarray) -> ReferenceStore:
        """From the store's fields: the crop index (position, kind, row in its field) follows from `kinds`."""
        kinds = np.asarray(kinds)
        n_positions, n_max = kinds.shape
        flat = kinds.reshape(-1).astype(np.int64)
        valid = flat >= 0
        pos = np.repeat(np.arange(n_positions, dtype=np.int64), n_max)[valid]
        kind = flat[valid]
        is_f32 = kind == F32
        row = np.where(is_f32, np.cumsum(is_f32) - 1, np.cumsum(~is_f32) - 1)
        if int(is_f32.sum()) != len(f32) or int((~is_f32).sum()) != len(u8):
            raise ValueError(f"reference eval store: the kinds list {int((~is_f32).sum())} uint8 and "
                             f"{int(is_f32.sum())} float32 crops, the fields hold {len(u8)} and {len(f32)}")
        return cls(np.stack([pos, kind, row], axis=1), u8, f32, n_positions)

    @property
    def n_crops(self) -> int:
        return len(self.index)

    def crop_rows(self, positions: Sequence[int]) -> np.ndarray | slice:
        """Crop indices of `positions`, in order (a slice for consecutive positions: the eval order)."""
        pos = np.asarray(positions, dtype=np.int64)
        if pos.size and pos[-1] - pos[0] == pos.size - 1 and np.all(np.diff(pos) == 1):
            return slice(int(self.offsets[pos[0]]), int(self.offsets[pos[-1] + 1]))
        return np.concatenate([np.arange(self.offsets[p], self.offsets[p + 1]) for p in pos]) \
            if pos.size else np.zeros(0, dtype=np.int64)

    def crops(self, positions: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 (n, 3, S, S) crops before normalisation, int64 (n,) their positions) for `positions`."""
        idx = self.index[self.crop_rows(positions)]
        x = decode_crops(idx[:, 1], self.u8, self.f32, idx[:, 2])
        return x, torch.from_numpy(idx[:, 0].copy())


def build_or_load_reference_inputs(
    manifest: Manifest, sample_ids: Sequence[int], profile: str, base_seed: int, size: int, strategy: str,
    cache_dir: Path | None, workers: int = 2, progress: bool = True, *, verify: str = "sample",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES, shard: tuple[int, int] | None = None,
    should_stop: Callable[[], None] | None = None,
) -> tuple[ReferenceStore | None, dict]:
    """(store of every position's reference crops, cache key incl. 'digest', 'path', 'hit', 'bytes' and crop
    counts).

    The store under `cache_dir` is built chunk by chunk and resumed after a kill; `cache_dir=None` builds it in
    memory (nothing written). With `shard` (i, n) only that shard's chunks are built; the store is None (and the
    counts absent) until every shard is done.
    """
    spec = reference_store_spec(manifest, sample_ids, profile, base_seed, size, strategy, chunk_bytes)
    by_id = {s.id: s for s in manifest.split("eval")}
    n_max = max_crops(strategy)
    jobs = [(str(manifest.root), by_id[int(i)].path, pos, profile, base_seed, size, strategy, n_max)
            for pos, i in enumerate(sample_ids)]
    arrays, info = cached_store(cache_dir, spec, _reference_job, jobs, workers, progress,
                                "decoding + degrading eval images (reference pipeline)", verify, shard, should_stop)
    key = spec.key | info
    if arrays is None:
        return None, key
    kinds = np.asarray(arrays["kinds"][:])  # N × max_crops int8: small, read whole
    store = ReferenceStore.from_fields(kinds, arrays["u8"], arrays["f32"])
    return store, key | _counts(store)


def open_reference_store(path: Path, verify: str = "full") -> ReferenceStore | None:
    """The complete reference eval store at `path` as it is (`genshift inspect`-style reading, tests), checked per
    `verify`; None when it is incomplete, of another kind, or fails the check."""
    import json

    from benchmark.array_store import META, Store, verify_chunks

    try:
        meta = json.loads((Path(path) / META).read_text())
    except (OSError, ValueError):
        return None
    if meta.get("kind") != KIND or verify_chunks(Path(path), meta, verify):
        return None
    arrays = Store(Path(path), meta).arrays
    return ReferenceStore.from_fields(np.asarray(arrays["kinds"][:]), arrays["u8"], arrays["f32"])


def _counts(store: ReferenceStore) -> dict:
    """How the crops are stored: counts of uint8 and float32 rows (run.json)."""
    kinds = store.index[:, 1]
    return {"crops": store.n_crops, "uint8_crops": int((kinds != F32).sum()), "float32_crops": int((kinds == F32).sum())}


__all__ = ["KIND", "ReferenceStore", "reference_eval_key", "reference_store_spec", "reference_input", "max_crops",
           "build_or_load_reference_inputs", "open_reference_store"]
