"""Fixed augmented training copies, decoded and augmented once and reused by every window (DESIGN §8).

Copy `c` of sample `id` depends only on (seed, id, c) (benchmark/train_augment.py), so the uint8 pixels of
every copy a run needs are built once, in parallel, chunk by chunk into a store (benchmark/array_store.py); row
`r * factor + c` holds copy c of the r-th id of `ids` (sorted). For localization detectors (``with_masks``) each row has a 4th
channel: the pixel target (0/1) moved with the image by the same crop and flip (``train_copy_with_mask``);
which rows count in the pixel loss is derived from the manifest (``benchmark.masks.training_mask``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from benchmark.array_store import DEFAULT_CHUNK_BYTES, StoreSpec, make_spec
from benchmark.images import to_chw
from benchmark.imagestore import read_image
from benchmark.manifest import Manifest
from benchmark.masks import FULL_FAKE_TARGET, training_mask
from benchmark.store_build import cached_store
from benchmark.store_layouts import train_fields
from benchmark.train_augment import augment_train, augment_train_with_mask, copy_rng

# Bump when decode -> augment_train -> CHW changes in a way library versions do not capture.
TRAIN_CACHE_FORMAT = 1


def augmented_copy(img: np.ndarray, sample_id: int, copy: int, size: int, seed: int, profile: str,
                   resize_mode: str) -> np.ndarray:
    """Copy `copy` of an already decoded training image: uint8 3×S×S (its draws depend on (seed, id, copy))."""
    return to_chw(augment_train(img, size, copy_rng(seed, sample_id, copy), profile, resize_mode))


def augmented_copy_with_mask(img: np.ndarray, target: np.ndarray, sample_id: int, copy: int, size: int, seed: int,
                             profile: str, resize_mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 3×S×S image equal to ``augmented_copy``'s, uint8 1×S×S 0/1 target moved by its crop and flip)."""
    out, m = augment_train_with_mask(img, target, size, copy_rng(seed, sample_id, copy), profile, resize_mode)
    return to_chw(out), m[None].astype(np.uint8)


def train_copy(root: str, path: str, sample_id: int, copy: int, size: int, seed: int, profile: str,
               resize_mode: str) -> np.ndarray:
    """Copy `copy` of one training image: uint8 3×S×S (the same function serves cached and uncached paths)."""
    return augmented_copy(read_image(root, path), sample_id, copy, size, seed, profile, resize_mode)


def train_copy_with_mask(root: str, path: str, mask_path: str | None, label: int, sample_id: int, copy: int,
                         size: int, seed: int, profile: str, resize_mode: str,
                         full_fake: str = FULL_FAKE_TARGET) -> tuple[np.ndarray, np.ndarray, bool]:
    """(uint8 3×S×S image, uint8 1×S×S pixel target 0/1, counts in the pixel loss) of one training copy.

    The image equals ``train_copy``'s (same draws); the target follows its crop and flip.
    """
    img = read_image(root, path)
    target, valid = training_mask(root, mask_path, label, img.shape[:2], full_fake)
    return (*augmented_copy_with_mask(img, target, sample_id, copy, size, seed, profile, resize_mode), valid)


def _copies_job(args: tuple) -> np.ndarray:
    """All `factor` copies of one image (factor×3×S×S), decoding it once; each equals ``train_copy``'s."""
    root, path, sample_id, factor, *recipe = args
    img = read_image(root, path)
    return np.stack([augmented_copy(img, sample_id, c, *recipe) for c in range(factor)])


def _copies_with_mask_job(args: tuple) -> np.ndarray:
    """All copies of one image with their pixel targets (factor×4×S×S); each equals ``train_copy_with_mask``'s."""
    root, path, mask_path, label, sample_id, factor, *recipe = args
    img = read_image(root, path)
    target, _ = training_mask(root, mask_path, label, img.shape[:2], FULL_FAKE_TARGET)
    return np.stack([np.concatenate(augmented_copy_with_mask(img, target, sample_id, c, *recipe), axis=0)
                     for c in range(factor)])


def _library_versions() -> dict[str, str]:
    import cv2
    import PIL

    return {"numpy": np.__version__, "Pillow": PIL.__version__, "opencv": cv2.__version__}


def train_cache_key(manifest: Manifest, ids: Sequence[int], factor: int, size: int, seed: int, profile: str,
                    resize_mode: str, with_masks: bool = False) -> dict:
    """Everything that determines the cached training pixels (and masks: keys added only then, so stores
    without masks keep their digest)."""
    ids = sorted(int(i) for i in ids)
    extra = {"with_masks": True, "full_fake_mask": FULL_FAKE_TARGET} if with_masks else {}
    return extra | {
        "format": TRAIN_CACHE_FORMAT,
        "manifest_checksum": manifest.checksum,
        "ids_sha256": hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes()).hexdigest(),
        "factor": int(factor), "input_size": int(size), "seed": int(seed), "augmentation": profile,
        "resize_mode": resize_mode, "versions": _library_versions(),
    }


def train_store_spec(manifest: Manifest, ids: Sequence[int], factor: int, size: int, seed: int, profile: str,
                     resize_mode: str, with_masks: bool = False, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> StoreSpec:
    """The training-copy store's layout: `factor` uint8 C×S×S rows per image of sorted(set(ids))."""
    order = sorted({int(i) for i in ids})
    key = train_cache_key(manifest, order, factor, size, seed, profile, resize_mode, with_masks)
    return make_spec("train_inputs", key, len(order), train_fields(size, factor, with_masks), chunk_bytes)


def train_jobs(manifest: Manifest, order: Sequence[int], factor: int, size: int, seed: int, profile: str,
               resize_mode: str, with_masks: bool = False) -> list[tuple]:
    """One job per image (all its copies: the image is decoded once, not once per copy), in `order`."""
    by_id = {s.id: s for s in manifest.split("train")}
    missing = [i for i in order if i not in by_id]
    if missing:
        raise KeyError(f"training ids {missing[:5]} are not in the train split of manifest {manifest.name}")
    if with_masks:
        return [(str(manifest.root), by_id[i].path, by_id[i].mask, by_id[i].label, i, factor, size, seed, profile,
                 resize_mode) for i in order]
    return [(str(manifest.root), by_id[i].path, i, factor, size, seed, profile, resize_mode) for i in order]


def build_or_load_train_inputs(
    manifest: Manifest, ids: Sequence[int], factor: int, size: int, seed: int, profile: str, resize_mode: str,
    cache_dir: Path | None, workers: int = 2, progress: bool = True, with_masks: bool = False, *,
    verify: str = "sample", chunk_bytes: int = DEFAULT_CHUNK_BYTES, shard: tuple[int, int] | None = None,
    should_stop: Callable[[], None] | None = None,
):
    """(uint8 rows (len(ids)*factor)×C×S×S, {sample id: first row}, key incl. 'digest'/'path'/'hit'/'bytes').

    C is 3, or 4 with ``with_masks`` (channel 3: the 0/1 pixel target aligned with the copy). The rows are a
    ChunkedArray of the store under `cache_dir`, or in memory when it is None; None while other shards of a
    cluster build (`shard`) are missing.
    """
    order = sorted({int(i) for i in ids})
    spec = train_store_spec(manifest, order, factor, size, seed, profile, resize_mode, with_masks, chunk_bytes)
    jobs = train_jobs(manifest, order, factor, size, seed, profile, resize_mode, with_masks)
    arrays, info = cached_store(cache_dir, spec, _copies_with_mask_job if with_masks else _copies_job, jobs, workers,
                                progress, "decoding + augmenting training images" + (" and masks" if with_masks
                                                                                     else ""),
                                verify, shard, should_stop)
    rows = {i: r * factor for r, i in enumerate(order)}
    return (None if arrays is None else arrays["pixels"]), rows, spec.key | info
