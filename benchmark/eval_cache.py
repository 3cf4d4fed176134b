"""Degraded eval inputs, built once per (manifest, degradation profile, libraries, input) and reused.

Every window and every detector with the same input size and strategy reads the same uint8 array
(N×3×S×S, memory-mapped) instead of decoding and degrading the eval split again (DESIGN §8).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmark.atomic import atomic_path, atomic_write_text
from benchmark.degradations import degradation_key, degrade
from benchmark.images import adapt_to_input, to_chw
from benchmark.imagestore import read_image
from benchmark.manifest import Manifest, sha256_file

CACHE_FORMAT = 1


def eval_cache_key(
    manifest: Manifest, sample_ids: Sequence[int], profile: str, base_seed: int, size: int, strategy: str
) -> dict:
    """Everything that determines the cached pixels."""
    ids_hash = hashlib.sha256(np.asarray(sample_ids, dtype=np.int64).tobytes()).hexdigest()
    return {
        "format": CACHE_FORMAT,
        "manifest_checksum": manifest.checksum,
        "positions_sha256": ids_hash,
        "degradation": degradation_key(profile, base_seed),
        "input_size": size,
        "input_strategy": strategy,
    }


def _degrade_one(args: tuple[str, str, int, str, int, int, str]) -> np.ndarray:
    root, path, position, profile, base_seed, size, strategy = args
    img = read_image(root, path)
    out, _ = degrade(img, position, profile=profile, base_seed=base_seed)
    return to_chw(adapt_to_input(out, size, strategy))


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
    """Return (uint8 array N×3×S×S in position order, cache key). `cache_dir=None` disables caching."""
    key = eval_cache_key(manifest, sample_ids, profile, base_seed, size, strategy)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    key = key | {"digest": digest}
    target = Path(cache_dir) / "eval" / digest if cache_dir is not None else None
    if target is not None and (target / "meta.json").is_file():
        meta = json.loads((target / "meta.json").read_text())
        npy = target / "inputs.npy"
        if npy.is_file() and meta.get("key") == key and sha256_file(npy) == meta.get("sha256"):
            return np.load(npy, mmap_mode="r"), key
        print(f"genshift: eval cache {target} is stale or corrupt; rebuilding it")
    by_id = {s.id: s for s in manifest.split("eval")}
    jobs = [
        (str(manifest.root), by_id[int(i)].path, pos, profile, base_seed, size, strategy)
        for pos, i in enumerate(sample_ids)
    ]
    arr = np.empty((len(jobs), 3, size, size), dtype=np.uint8)
    _run_jobs(jobs, arr, workers, progress)
    if target is None:
        return arr, key
    target.mkdir(parents=True, exist_ok=True)
    with atomic_path(target / "inputs.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)
    atomic_write_text(
        target / "meta.json", json.dumps({"key": key, "sha256": sha256_file(target / "inputs.npy")}, indent=1)
    )
    return np.load(target / "inputs.npy", mmap_mode="r"), key


def _run_jobs(jobs: list, out: np.ndarray, workers: int, progress: bool) -> None:
    from rich.progress import Progress

    workers = max(1, min(workers, os.cpu_count() or 1))
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("decoding + degrading eval images", total=len(jobs))
        if workers == 1:
            for i, job in enumerate(jobs):
                out[i] = _degrade_one(job)
                bar.advance(task)
            return
        with cf.ProcessPoolExecutor(max_workers=workers) as pool:
            for i, arr in enumerate(pool.map(_degrade_one, jobs, chunksize=16)):
                out[i] = arr
                bar.advance(task)
