"""The prepared inputs of one robustness level: every eval image decoded, degraded once at one level
(`benchmark.single_degradations`) and adapted to the detector input, in memory or in a chunked store under
``<cache>/robustness`` (benchmark/array_store.py: built chunk by chunk, resumed after a kill, a damaged chunk
rebuilt). The store's key covers the manifest checksum, degradation and level, input size and strategy, the
mandatory chain's settings and library versions, so a stale entry is never read; every window and every run on
the same data and input size share it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from benchmark.array_store import Field, make_spec
from benchmark.eval_plan import EvalPlan
from benchmark.images import crops_per_image, input_crops
from benchmark.imagestore import read_image
from benchmark.manifest import Manifest
from benchmark.single_degradations import NOISE_SEED, apply_single


def level_input(root: str, path: str, kind: str, level: float, position: int, run_cfg: dict, size: int,
                strategy: str) -> np.ndarray:
    """One eval image decoded (through the image store: any source kind), degraded at one level and adapted to
    the detector input: uint8 (n_crops, 3, S, S)."""
    img = apply_single(read_image(root, path), kind, level, position, run_cfg)
    return np.ascontiguousarray(input_crops(img, size, strategy).transpose(0, 3, 1, 2))


def level_job(args: tuple) -> np.ndarray:
    return level_input(*args)


def level_jobs(manifest: Manifest, plan: EvalPlan, kind: str, level: float, size: int, strategy: str, run_cfg: dict,
               limit: int | None) -> list[tuple]:
    by_id = {s.id: s for s in manifest.split("eval")}
    ids = plan.sample_ids if limit is None else plan.sample_ids[:limit]
    return [(str(manifest.root), by_id[int(sid)].path, kind, level, pos, run_cfg, size, strategy)
            for pos, sid in enumerate(ids)]


def prepare_level(manifest: Manifest, plan: EvalPlan, kind: str, level: float, size: int, strategy: str,
                  run_cfg: dict, limit: int | None, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 (N, n_crops, 3, S, S) in memory: every eval position degraded, then adapted to the detector input.

    ``out`` (an array of that shape) is filled instead of a new array.
    """
    jobs = level_jobs(manifest, plan, kind, level, size, strategy, run_cfg, limit)
    shape = (len(jobs), crops_per_image(strategy), 3, size, size)
    if out is None:
        out = np.empty(shape, np.uint8)
    elif out.shape != shape or out.dtype != np.uint8:
        raise ValueError(f"prepare_level: out must be uint8 {shape}, got {out.dtype} {out.shape}")
    for pos, job in enumerate(jobs):
        out[pos] = level_input(*job)
    return out


def level_key(manifest: Manifest, kind: str, level: float, size: int, strategy: str, run_cfg: dict,
               limit: int | None) -> dict:
    """Everything that determines a level's prepared inputs (data, degradation, input, libraries)."""
    import PIL
    import torch

    return {"manifest": manifest.checksum, "kind": kind, "level": float(level), "size": int(size),
            "strategy": strategy, "limit": limit, "noise_seed": NOISE_SEED,
            "versions": [np.__version__, cv2.__version__, PIL.__version__, torch.__version__],
            "chain": run_cfg.get("degradation") if kind == "mandatory" else None, "format": 2}


def level_spec(manifest: Manifest, plan: EvalPlan, kind: str, level: float, size: int, strategy: str, run_cfg: dict,
               limit: int | None):
    """The chunked store of one level: one uint8 (n_crops, 3, S, S) row per eval position."""
    n = len(plan.sample_ids) if limit is None else min(limit, len(plan.sample_ids))
    key = level_key(manifest, kind, level, size, strategy, run_cfg, limit)
    return make_spec("robustness", key, n, {"pixels": Field("uint8", (crops_per_image(strategy), 3, size, size))})


def cached_level(cache_root: Path | None, manifest: Manifest, plan: EvalPlan, kind: str, level: float, size: int,
                 strategy: str, run_cfg: dict, limit: int | None, workers: int = 1):
    """prepare_level, read from / written to a chunked store under ``cache_root`` (the cache dir's parent of
    ``robustness/``) when given: rows (N, n_crops, 3, S, S), built chunk by chunk, resumed after a kill.

    The key covers manifest checksum, degradation and level, input size and strategy, the mandatory chain's
    settings and library versions, so a stale entry is never read; a damaged chunk is rebuilt.
    """
    if cache_root is None:
        return prepare_level(manifest, plan, kind, level, size, strategy, run_cfg, limit)
    from benchmark.store_build import cached_store

    spec = level_spec(manifest, plan, kind, level, size, strategy, run_cfg, limit)
    jobs = level_jobs(manifest, plan, kind, level, size, strategy, run_cfg, limit)
    arrays, _ = cached_store(Path(cache_root).parent, spec, level_job, jobs, workers)
    return arrays["pixels"]
