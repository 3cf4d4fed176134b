"""Degraded eval inputs, built once per (manifest, eval order, degradation profile, libraries, input) and reused.

Every window and every detector with the same input size and strategy reads the same uint8 rows (N×3×S×S, or
N·5×3×S×S for five_crop, a chunked store read with pread: benchmark/array_store.py) instead of decoding and degrading the eval split again
(DESIGN §8). The key covers everything that changes the pixels; `degraded_input` is the one function that makes
them, cached or not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from benchmark.array_store import DEFAULT_CHUNK_BYTES, StoreSpec, make_spec
from benchmark.degradations import degradation_key, degrade
from benchmark.images import SINGLE_CROP_STRATEGIES, adapt_to_input, crops_per_image, input_crops, to_chw
from benchmark.imagestore import read_image
from benchmark.manifest import Manifest
from benchmark.progress import counted_progress
from benchmark.store_build import cached_store, ordered_map
from benchmark.store_layouts import eval_fields

# Bump when the decode -> degrade -> adapt -> CHW code path changes in a way library versions do not capture.
CACHE_FORMAT = 2


def eval_cache_key(
    manifest: Manifest, sample_ids: Sequence[int], profile: str, base_seed: int, size: int, strategy: str
) -> dict:
    """Everything that determines the cached pixels (decode/degradation library versions are in `degradation`)."""
    crops_per_image(strategy)  # an unknown strategy is an error here, before any image is decoded
    ids_hash = hashlib.sha256(np.asarray(sample_ids, dtype=np.int64).tobytes()).hexdigest()
    return {
        "format": CACHE_FORMAT,
        "manifest_checksum": manifest.checksum,
        "positions_sha256": ids_hash,
        "degradation": degradation_key(profile, base_seed),
        "input_size": int(size),
        "input_strategy": strategy,
    }


def degraded_input(
    root: str, path: str, position: int, profile: str, base_seed: int, size: int, strategy: str
) -> np.ndarray:
    """Decode one eval image, degrade it (seeded by its eval position), adapt it to the input: uint8 3×S×S, or
    n_crops×3×S×S for a multi-crop strategy (five_crop)."""
    img = read_image(root, path)
    out, _ = degrade(img, position, profile=profile, base_seed=base_seed)
    if strategy not in SINGLE_CROP_STRATEGIES:
        return np.ascontiguousarray(input_crops(out, size, strategy).transpose(0, 3, 1, 2))
    return to_chw(adapt_to_input(out, size, strategy))


def _degrade_job(args: tuple) -> np.ndarray:
    return degraded_input(*args)


def eval_jobs(
    manifest: Manifest, sample_ids: Sequence[int], profile: str, base_seed: int, size: int, strategy: str
) -> list[tuple]:
    """Arguments of `degraded_input` for every eval position."""
    by_id = {s.id: s for s in manifest.split("eval")}
    return [(str(manifest.root), by_id[int(i)].path, pos, profile, base_seed, size, strategy)
            for pos, i in enumerate(sample_ids)]


def eval_store_spec(manifest: Manifest, sample_ids: Sequence[int], profile: str, base_seed: int, size: int,
                    strategy: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> StoreSpec:
    """The eval store's layout: one uint8 3×S×S row per eval position, or its 5 crops' rows for five_crop (its size
    is known before any decode)."""
    key = eval_cache_key(manifest, sample_ids, profile, base_seed, size, strategy)
    return make_spec("eval", key, len(sample_ids), eval_fields(size, crops_per_image(strategy)), chunk_bytes)


def build_or_load_eval_inputs(
    manifest: Manifest,
    sample_ids: Sequence[int],
    profile: str,
    base_seed: int,
    size: int,
    strategy: str,
    cache_dir: Path | None,
    workers: int = 2,
    progress: bool = True,
    *,
    verify: str = "sample",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    shard: tuple[int, int] | None = None,
    should_stop: Callable[[], None] | None = None,
):
    """Return (uint8 rows N×3×S×S in position order — N·5 rows for five_crop, a position's crops in order —, cache
    key incl. 'digest', 'path', 'hit', 'bytes').

    The rows are a ChunkedArray of the store under `cache_dir` (built chunk by chunk, resumed after a kill), or
    an in-memory array when `cache_dir` is None (nothing written). With `shard` (i, n) only that shard's chunks
    are built; the rows are None until every shard is done.
    """
    spec = eval_store_spec(manifest, sample_ids, profile, base_seed, size, strategy, chunk_bytes)
    jobs = eval_jobs(manifest, sample_ids, profile, base_seed, size, strategy)
    arrays, info = cached_store(cache_dir, spec, _degrade_job, jobs, workers, progress,
                                "decoding + degrading eval images", verify, shard, should_stop)
    return (None if arrays is None else arrays["pixels"]), spec.key | info


def run_parallel(
    fn: Callable[[tuple], np.ndarray], jobs: list, out, workers: int, progress: bool, label: str
) -> None:
    """out[i] = fn(jobs[i]) for every job, in order, in `workers` processes (1 = in this process), with a progress
    bar (`out` may be an array or any object that takes items in order)."""
    with counted_progress(progress) as bar:
        task = bar.add_task(label, total=len(jobs))
        for i, arr in enumerate(ordered_map(fn, jobs, workers)):
            out[i] = arr
            bar.advance(task)
