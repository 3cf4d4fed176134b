"""Degraded eval inputs, built once per (manifest, eval order, degradation profile, libraries, input) and reused.

Every window and every detector with the same input size and strategy reads the same uint8 array
(N×3×S×S, memory-mapped) instead of decoding and degrading the eval split again (DESIGN §8). The key covers
everything that changes the pixels; `degraded_input` is the one function that makes them, cached or not.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from benchmark.array_store import cached_array, key_digest
from benchmark.degradations import degradation_key, degrade
from benchmark.images import SINGLE_CROP_STRATEGIES, adapt_to_input, crops_per_image, input_crops, to_chw
from benchmark.imagestore import read_image
from benchmark.manifest import Manifest
from benchmark.progress import counted_progress
from benchmark.worker_server import worker_context

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
) -> tuple[np.ndarray, dict]:
    """Return (uint8 array N×3×S×S — N×n_crops×3×S×S for five_crop — in position order, cache key incl. 'digest',
    'path', 'hit').

    `cache_dir=None` builds the array in memory (nothing written).
    """
    key = eval_cache_key(manifest, sample_ids, profile, base_seed, size, strategy)
    jobs = eval_jobs(manifest, sample_ids, profile, base_seed, size, strategy)

    def build() -> np.ndarray:
        n_crops = crops_per_image(strategy)
        arr = np.empty((len(jobs), *((n_crops,) if n_crops > 1 else ()), 3, size, size), dtype=np.uint8)
        run_parallel(_degrade_job, jobs, arr, workers, progress, "decoding + degrading eval images")
        return arr

    arr, info = cached_array(cache_dir, "eval", key, build)
    assert info["digest"] == key_digest(key)
    return arr, key | {"digest": info["digest"], "path": info["path"], "hit": info["hit"]}


def _worker_init() -> None:
    """One thread per worker process: the pool already uses every core."""
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def run_parallel(
    fn: Callable[[tuple], np.ndarray], jobs: list, out: np.ndarray, workers: int, progress: bool, label: str
) -> None:
    """out[i] = fn(jobs[i]) for every job, in `workers` processes (1 = in this process), with a progress bar."""
    workers = max(1, min(int(workers), os.cpu_count() or 1, len(jobs) or 1))
    with counted_progress(progress) as bar:
        task = bar.add_task(label, total=len(jobs))
        if workers == 1:
            for i, job in enumerate(jobs):
                out[i] = fn(job)
                bar.advance(task)
            return
        chunk = max(1, min(32, len(jobs) // (8 * workers)))
        # forkserver, not fork: a child forked from a parent whose OpenMP pool is running (torch, OpenCV)
        # can deadlock on its first threaded call; forkserver children start from a clean process. The server
        # imports the workers' modules once (it runs no threads), so each worker starts in milliseconds
        # instead of importing torch and torchvision again (seconds per worker, per build).
        ctx = worker_context()
        with cf.ProcessPoolExecutor(max_workers=workers, initializer=_worker_init, mp_context=ctx) as pool:
            for i, arr in enumerate(pool.map(fn, jobs, chunksize=chunk)):
                out[i] = arr
                bar.advance(task)
