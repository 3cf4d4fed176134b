"""Rows other than the benchmark's eval split that a run scores: its validation split and its test datasets.

A `ScoringSet` is a list of samples (the rows), the items a detector scores for them ((x, position) like the
eval inputs) and how item logits become one score per row. It is built the way the run's own eval inputs are:

- images: decoded, degraded by a degradation profile (seed base_seed + position in the set) and adapted to the
  detector's input, in an eval-inputs cache of their own (or streamed when `cache.eval_inputs` is off); a probe
  whose eval inputs are cached features gets the features of these images too;
- landmark sequences (sequence detectors): the run's segment profile, the video score fused from its segments;
- videos scored by an image detector: the run's sampled frames, fused per video.

Two ways to score: `score_on_device` during training (the detector stays where it is, no gradient, every submodule
back in its mode afterwards: selection's evaluation points) and `score_in_process` between windows (the engine's
scoring loop: validation with the window's final weights, test datasets).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from benchmark.manifest import Manifest, Sample
from protocols.config_model import ConfigLike, RunConfig, run_config


@dataclass
class ScoringSet:
    """Rows to score: `samples` (one per row), `items` (x, position), `fuse(item logits)` -> (row scores, row
    logits, extra per-row arrays) or None when every row is one item scored by its sigmoid."""

    name: str
    samples: list[Sample]
    items: Dataset
    fuse: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, dict]] | None = None
    describe: dict = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        return np.asarray([s.label for s in self.samples], dtype=np.int64)

    @property
    def ids(self) -> np.ndarray:
        return np.asarray([s.id for s in self.samples], dtype=np.int64)

    @property
    def features_in(self) -> bool:
        return bool(getattr(self.items, "features_in", False))

    def rows(self, item_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        """(scores P(fake) float32, logits float32, extra arrays) per row, from the items' logits."""
        logits = np.asarray(item_logits, dtype=np.float32)
        if self.fuse is not None:
            scores, row_logits, extra = self.fuse(logits)
            return np.asarray(scores, np.float32), np.asarray(row_logits, np.float32), extra
        scores = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
        return scores, logits, {}


def input_kind(detector, manifest: Manifest) -> str:
    """"sequences" (a sequence detector), "frames" (an image detector on videos) or "images"."""
    if getattr(detector.meta, "input_kind", "image") != "image":
        return "sequences"
    if any(s.kind != "image" for s in manifest.samples):
        return "frames"
    return "images"


def as_eval_manifest(manifest: Manifest, samples: Sequence[Sample], label: str) -> Manifest:
    """A manifest whose eval split is exactly `samples` (of any split): the eval-inputs cache and stream read the
    eval split, and the derived manifest's checksum names these rows, so their cache is their own."""
    rows = [dataclasses.replace(s, split="eval") for s in samples]
    ids = [s.id for s in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{label}: sample ids repeat across splits; score one split at a time")
    return Manifest(f"{manifest.name}#{label}", manifest.root, rows, dict(manifest.timeline), dict(manifest.extra))


def build_scoring_set(name: str, cfg: ConfigLike, detector, inputs, manifest: Manifest, samples: Sequence[Sample],
                      cache_dir: Path, profile: str, base_seed: int, progress: bool = False) -> ScoringSet:
    """The scoring set of `samples` for this run's detector and inputs (module docstring)."""
    samples = list(samples)
    cfg = run_config(cfg)
    kind = input_kind(detector, manifest)
    if kind == "sequences":
        return _sequence_set(name, cfg, detector, manifest, samples, cache_dir, progress)
    if kind == "frames":
        return _frame_set(name, cfg, detector, manifest, samples, progress)
    return _image_set(name, cfg, detector, inputs, manifest, samples, cache_dir, profile, base_seed, progress)


def _image_set(name, cfg: RunConfig, detector, inputs, manifest, samples, cache_dir, profile, base_seed, progress) -> ScoringSet:
    from benchmark.array_store import key_digest
    from benchmark.eval_cache import build_or_load_eval_inputs, eval_cache_key, eval_jobs
    from protocols.cached_data import ArrayEval, EvalStream

    if any(s.kind != "image" for s in samples):
        raise ValueError(f"{name}: {detector.meta.name} scores images; these rows hold "
                         f"{sorted({s.kind for s in samples})} samples")
    meta = detector.meta
    strategy = inputs.eval_key.get("input_strategy") or (cfg.eval.input and cfg.eval.input.value) or meta.eval_resize
    dm = as_eval_manifest(manifest, samples, name)
    ids = [s.id for s in samples]
    tc = inputs.train_cfg
    workers = max(1, int(tc["num_workers"]))
    describe = {"rows": len(samples), "degradation": {"profile": profile, "base_seed": int(base_seed)},
                "input_strategy": strategy}
    if cfg.cache.eval_inputs:
        arr, key = build_or_load_eval_inputs(dm, ids, profile, int(base_seed), meta.input_size, strategy, cache_dir,
                                             workers=workers, progress=progress)
        px: Dataset = ArrayEval(arr)
    else:
        key = eval_cache_key(dm, ids, profile, int(base_seed), meta.input_size, strategy)
        key = key | {"digest": key_digest(key), "path": None}
        px = EvalStream(eval_jobs(dm, ids, profile, int(base_seed), meta.input_size, strategy))
    describe["inputs"] = {"digest": key["digest"], "cached": key.get("path") is not None}
    if not getattr(inputs.eval_ds, "features_in", False):
        return ScoringSet(name, samples, px, None, describe)
    from protocols.feature_cache import Extraction, cached_features
    from protocols.speed import uses_cuda
    from protocols.window_inputs import loader_workers

    how = Extraction(tc, inputs.eval_precision, cfg.accelerator.value, "cuda" if uses_cuda(cfg) else "cpu",
                     cfg.eval.batch_size, progress, loader_workers(px, tc))
    feats, fkey = cached_features(cache_dir, detector, px, key["digest"], how)
    describe["features"] = {"digest": fkey["digest"]}
    return ScoringSet(name, samples, ArrayEval(feats, features_in=True), None, describe)


def _sequence_set(name, cfg: RunConfig, detector, manifest, samples, cache_dir, progress) -> ScoringSet:
    from benchmark.sequence_store import load_sequences
    from protocols.sequence_inputs import SegmentDataset, eval_fusion, no_segment_videos, sequence_profile

    if any(s.kind != "landmarks" for s in samples):
        raise ValueError(f"{name}: {detector.meta.name} reads landmark sequences; these rows hold "
                         f"{sorted({s.kind for s in samples})} samples")
    profile = sequence_profile(cfg, detector)
    empty = no_segment_videos(samples, profile)
    dropped = {(s.split, s.id) for s in empty}
    kept = [s for s in samples if (s.split, s.id) not in dropped]
    seqs = load_sequences(manifest, kept, cache_dir, progress)
    ds = SegmentDataset([seqs[(s.split, s.id)] for s in kept], [s.label for s in kept], [s.id for s in kept],
                        profile, train=False)
    describe = {"rows": len(kept), "profile": profile.name, "segments": len(ds)}
    if empty:
        describe["left_out"] = {"reason": f"no segment under profile {profile.name}", "n": len(empty),
                                "paths": [s.path for s in empty[:10]]}
    return ScoringSet(name, kept, ds, eval_fusion(kept, ds, profile, manifest.root), describe)


def _frame_set(name, cfg: RunConfig, detector, manifest, samples, progress) -> ScoringSet:
    from protocols.frame_inputs import FrameArray, decode_frames, frame_fusion, frame_sampling
    from protocols.sequence_inputs import video_arrays

    if any(s.kind != "video" for s in samples):
        raise ValueError(f"{name}: frames are sampled from videos; these rows hold "
                         f"{sorted({s.kind for s in samples})} samples")
    meta = detector.meta
    strategy = cfg.eval.input.value if cfg.eval.input is not None else meta.eval_resize
    sampling = frame_sampling(cfg)
    aggregate = cfg.sequence.aggregate.value if cfg.sequence.aggregate is not None else "mean"
    arr, rows, index, problems = decode_frames(manifest, samples, meta.input_size, strategy, sampling, progress)
    have = set(rows.tolist())
    kept_rows = [r for r in range(len(samples)) if r in have]
    if len(kept_rows) != len(samples):  # videos without a decodable frame are left out, and said so
        remap = {r: i for i, r in enumerate(kept_rows)}
        rows = np.asarray([remap[int(r)] for r in rows], dtype=np.int64)
    kept = [samples[r] for r in kept_rows]
    describe = {"rows": len(kept), "sampling": sampling, "aggregate": aggregate, "frames": int(len(arr))}
    if problems or len(kept) != len(samples):
        describe["left_out"] = {"reason": "no decodable frame", "n": len(samples) - len(kept),
                                "problems": problems[:10]}
    fuse = frame_fusion(len(kept), rows, index, aggregate, video_arrays(kept, manifest.root))
    return ScoringSet(name, kept, FrameArray(arr, rows), fuse, describe)


def _scoring_module(detector, train_cfg: dict, features_in: bool):
    from protocols.module import DetectorModule

    return DetectorModule(detector, {"channels_last": bool(train_cfg.get("channels_last", False)), **train_cfg}, 1,
                          features_in=features_in)


def score_on_device(detector, ss: ScoringSet, train_cfg: dict, precision: str, batch_size: int) -> np.ndarray:
    """Item logits of `ss` with the detector where it is (mid-training): eval mode and no gradient for the pass,
    every submodule's mode restored afterwards; no random number is drawn, so training continues unchanged."""
    from protocols.scoring import autocast_context

    param = next(detector.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    module = _scoring_module(detector, train_cfg, ss.features_in).to(device)
    modes = {m: m.training for m in detector.modules()}
    detector.eval()
    out = []
    try:
        with torch.no_grad(), autocast_context(precision, device):
            for lo in range(0, len(ss.items), batch_size):
                x = torch.stack([ss.items[i][0] for i in range(lo, min(len(ss.items), lo + batch_size))])
                out.append(module.logits(x.to(device)).float().cpu())
    finally:
        for m, training in modes.items():
            m.training = training
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def score_in_process(detector, ss: ScoringSet, train_cfg: dict, precision: str, device: torch.device,
                     batch_size: int, progress: bool = False, label: str = "scoring") -> np.ndarray:
    """Item logits of `ss` through the engine's scoring loop (between windows; the module ends on the CPU)."""
    from protocols.scoring import score_batches
    from protocols.window_inputs import loader_workers

    if len(ss.items) == 0:
        return np.zeros(0, np.float32)
    module = _scoring_module(detector, train_cfg, ss.features_in)
    loader = DataLoader(ss.items, batch_sampler=_AllBatches(len(ss.items), batch_size),
                        num_workers=loader_workers(ss.items, train_cfg))
    outputs = score_batches(module, loader, precision, device, progress, label)
    logits = torch.cat([o[0] for o in outputs]).float().numpy()
    positions = torch.cat([o[1] for o in outputs]).long().numpy()
    if not np.array_equal(positions, np.arange(len(ss.items))):
        raise RuntimeError(f"{label}: scored positions are not 0..{len(ss.items) - 1} in order")
    return logits


class _AllBatches(torch.utils.data.Sampler):
    """Every item in order, in batches (one process scores them all, even under DDP)."""

    def __init__(self, n: int, batch_size: int):
        self.n, self.batch_size = n, max(1, int(batch_size))

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self):
        for lo in range(0, self.n, self.batch_size):
            yield list(range(lo, min(self.n, lo + self.batch_size)))
