"""The prepared inputs of one robustness level: every eval image decoded, degraded once at one level
(`benchmark.single_degradations`) and adapted to the detector input, in memory or in a chunked store under
``<cache>/robustness`` (benchmark/array_store.py: built chunk by chunk, resumed after a kill, a damaged chunk
rebuilt). The store's key covers the manifest checksum, degradation and level, input size and strategy, the
mandatory chain's settings and library versions, so a stale entry is never read; every window and every run on
the same data and input size share it.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class LevelInputs:
    """The eval images a robustness grid scores and the detector input they are adapted to; each method takes
    one (degradation, level). ``limit``: only the first positions of the eval order."""

    manifest: Manifest
    plan: EvalPlan
    size: int  # the detector's input side
    strategy: str  # its eval crop/resize (benchmark.images.input_crops)
    run_cfg: dict  # the run's config (the mandatory chain's profile and base seed)
    limit: int | None = None

    def jobs(self, kind: str, level: float) -> list[tuple]:
        """`level_job`'s arguments for every eval position, in order."""
        by_id = {s.id: s for s in self.manifest.split("eval")}
        ids = self.plan.sample_ids if self.limit is None else self.plan.sample_ids[:self.limit]
        return [(str(self.manifest.root), by_id[int(sid)].path, kind, level, pos, self.run_cfg, self.size,
                 self.strategy) for pos, sid in enumerate(ids)]

    def prepare(self, kind: str, level: float, out: np.ndarray | None = None) -> np.ndarray:
        """uint8 (N, n_crops, 3, S, S) in memory: every eval position degraded, then adapted to the detector input.

        ``out`` (an array of that shape) is filled instead of a new array.
        """
        jobs = self.jobs(kind, level)
        shape = (len(jobs), crops_per_image(self.strategy), 3, self.size, self.size)
        if out is None:
            out = np.empty(shape, np.uint8)
        elif out.shape != shape or out.dtype != np.uint8:
            raise ValueError(f"prepare_level: out must be uint8 {shape}, got {out.dtype} {out.shape}")
        for pos, job in enumerate(jobs):
            out[pos] = level_input(*job)
        return out

    def key(self, kind: str, level: float) -> dict:
        """Everything that determines a level's prepared inputs (data, degradation, input, libraries)."""
        import PIL
        import torch

        return {"manifest": self.manifest.checksum, "kind": kind, "level": float(level), "size": int(self.size),
                "strategy": self.strategy, "limit": self.limit, "noise_seed": NOISE_SEED,
                "versions": [np.__version__, cv2.__version__, PIL.__version__, torch.__version__],
                "chain": self.run_cfg.get("degradation") if kind == "mandatory" else None, "format": 2}

    def spec(self, kind: str, level: float):
        """The chunked store of one level: one uint8 (n_crops, 3, S, S) row per eval position."""
        n = len(self.plan.sample_ids) if self.limit is None else min(self.limit, len(self.plan.sample_ids))
        return make_spec("robustness", self.key(kind, level), n,
                         {"pixels": Field("uint8", (crops_per_image(self.strategy), 3, self.size, self.size))})

    def cached(self, cache_root: Path | None, kind: str, level: float, workers: int = 1):
        """`prepare`, read from / written to a chunked store under ``cache_root`` (the cache dir's parent of
        ``robustness/``) when given: rows (N, n_crops, 3, S, S), built chunk by chunk, resumed after a kill.

        The key covers manifest checksum, degradation and level, input size and strategy, the mandatory chain's
        settings and library versions, so a stale entry is never read; a damaged chunk is rebuilt.
        """
        if cache_root is None:
            return self.prepare(kind, level)
        from benchmark.store_build import cached_store

        arrays, _ = cached_store(Path(cache_root).parent, self.spec(kind, level), level_job, self.jobs(kind, level),
                                 workers)
        return arrays["pixels"]
