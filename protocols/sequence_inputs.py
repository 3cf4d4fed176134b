"""Run inputs of the video track: landmark segments for sequence detectors (LRNet), fused back into videos.

A window trains on the segments of its training videos and scores the segments of every eval video; the
per-video score that goes into `fused_scores` is fused from them by the sequence profile (`benchmark.sequences`:
`lrnet-v1` = LRNet's segments and vote, `fixed` = every full segment and the mean). The segment scores stay in
the npz (`segment_scores`, `segment_video` = row of the fused arrays, `segment_start` = first frame).

Everything is in memory (a landmark segment is 59 × 136 float32, 32 kB): the parsed files are cached once per
manifest (`benchmark.sequence_store`); the engine sees the same batches as for images: (x, label, id) for
training, (x, position) for scoring, where a position is a segment's index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmark.manifest import Manifest, Sample
from benchmark.sequence_store import load_sequences
from benchmark.sequences import (
    SequenceProfile,
    describe_profile,
    fuse_scores,
    get_profile,
    index_segments,
    pack_segment,
    score_to_logit,
)
from protocols.config_enums import RealSampling
from protocols.config_model import ConfigLike, run_config

DETECTOR_PROFILES = {"lrnet": "lrnet-v1"}  # a family's own evaluation profile (the default of sequence.profile)


class SegmentDataset(Dataset):
    """Packed segments (float32 (2L-1, 136)) of a list of videos; items (x, label, id) or (x, position)."""

    features_in = False

    def __init__(self, frames: Sequence[np.ndarray], labels: Sequence[int], ids: Sequence[int],
                 profile: SequenceProfile, train: bool):
        index = index_segments([f.shape[0] for f in frames], profile)
        self.frames, self.labels, self.ids = list(frames), list(labels), list(ids)
        self.video, self.start = index.video, index.start
        self.length, self.train = profile.segment_length, train

    def __len__(self) -> int:
        return int(self.video.size)

    def items_per_sample(self) -> np.ndarray:
        """Segments of each video, in video order (items come video after video; continual-learning strategies)."""
        return np.bincount(self.video, minlength=len(self.ids)).astype(np.int64)

    def packed(self, i: int) -> torch.Tensor:
        v = int(self.video[i])
        return torch.from_numpy(pack_segment(self.frames[v], int(self.start[i]), self.length))

    def __getitem__(self, i: int) -> tuple:
        x = self.packed(i)
        if self.train:
            v = int(self.video[i])
            return x, torch.tensor(float(self.labels[v])), int(self.ids[v])
        return x, i


def sequence_profile(cfg: ConfigLike, detector) -> SequenceProfile:
    """The run's profile: `sequence.profile` (null = the detector family's own) with its overrides."""
    sc = run_config(cfg).sequence
    return profile_for(detector, sc.profile, sc.aggregate, sc.segment_length)


def profile_for(detector, name: str | None, aggregate: str | None = None,
                segment_length: int | None = None) -> SequenceProfile:
    """The named profile (None = the detector family's own) with its aggregate and segment length overrides."""
    name = name or DETECTOR_PROFILES.get(detector.meta.family, "fixed")
    length = segment_length or detector.meta.input_size
    return get_profile(str(name), str(aggregate) if aggregate else None, int(length))


def no_segment_videos(samples: Sequence[Sample], profile: SequenceProfile) -> list[Sample]:
    return [s for s in samples if not profile.starts(int(s.frames))]


def _by_id(manifest: Manifest, split: str) -> dict[int, Sample]:
    return {s.id: s for s in manifest.split(split)}


def eval_fusion(eval_samples: Sequence[Sample], ds: SegmentDataset, profile: SequenceProfile,
                root: Path) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, dict]]:
    """fuse(segment logits) -> (video scores, video logits, extra npz arrays) for videos in eval order."""
    n = len(eval_samples)

    def fuse(segment_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        seg_scores = (1.0 / (1.0 + np.exp(-np.asarray(segment_logits, dtype=np.float64)))).astype(np.float32)
        scores = fuse_scores(seg_scores, ds.video, n, profile.aggregate).astype(np.float32)
        extra = {
            "segment_scores": seg_scores,
            "segment_video": ds.video.astype(np.int64),
            "segment_start": ds.start.astype(np.int64),
            **video_arrays(eval_samples, root),
            "sequence_profile": np.array(profile.name),
            "sequence_aggregate": np.array(profile.aggregate),
            "segment_length": np.int64(profile.segment_length),
        }
        return scores, score_to_logit(scores), extra

    return fuse


def video_arrays(samples: Sequence[Sample], root: Path) -> dict[str, np.ndarray]:
    """Per-row arrays every video-track npz carries: compression, video id, frames, kind, source path."""
    return {
        "fused_compression": np.array([s.compression for s in samples], dtype=str),
        "fused_video": np.array([s.video for s in samples], dtype=str),
        "fused_frames": np.array([s.frames for s in samples], dtype=np.int64),
        "fused_kind": np.array([s.kind for s in samples], dtype=str),
        "fused_paths": np.array([relative_path(root, s.path) for s in samples], dtype=str),
    }


def relative_path(root: Path, path: str) -> str:
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return p.as_posix()


def prepare_sequence_inputs(cfg: ConfigLike, bench, detector, cache_dir: Path, progress: bool,
                            say: Callable[[str], None]):
    """RunInputs for a sequence detector on a landmark dataset (see the module docstring)."""
    from protocols.speed import resolve_precision
    from protocols.window_inputs import RunInputs

    cfg = run_config(cfg)
    m = bench.manifest
    if any(s.kind != "landmarks" for s in m.samples):
        kinds = sorted({s.kind for s in m.samples})
        raise ValueError(f"detector {detector.meta.name} reads landmark sequences; dataset {m.name} holds {kinds} "
                         "samples (extract landmarks from videos first, e.g. with LRNet's calibrator, and use the "
                         "landmarks: source)")
    profile = sequence_profile(cfg, detector)
    seqs = load_sequences(m, m.samples, cache_dir, progress)
    tc = cfg.to_dict()["train"]  # the train section as DetectorModule reads it
    # Sequence models run in float32 unless told otherwise: bf16 changes a GRU's scores (LRNet used fp32).
    tc["precision"] = "32-true" if tc["precision"] == "auto" else resolve_precision(tc["precision"], cfg,
                                                                                      "train.precision")
    tc["channels_last"] = False
    ep = cfg.eval.precision
    eval_precision = "32-true" if ep == "auto" else resolve_precision(ep, cfg, "eval.precision")
    eval_by_id = _by_id(m, "eval")
    eval_samples = [eval_by_id[int(i)] for i in bench.plan.sample_ids]
    empty = no_segment_videos(eval_samples, profile)
    if empty:
        listed = ", ".join(f"{s.path} ({s.frames} frames)" for s in empty[:10])
        raise ValueError(f"{len(empty)} eval video(s) have no segment under profile {profile.name} (segments of "
                         f"{profile.segment_length} frames, {describe_profile(profile)['starts']}): {listed}. "
                         "`genshift data check` lists them; skip them with --set data.skip_bad_images=true or use "
                         "--set sequence.profile=fixed")
    eval_ds = SegmentDataset([seqs[("eval", s.id)] for s in eval_samples], [s.label for s in eval_samples],
                             [s.id for s in eval_samples], profile, train=False)
    train_by_id = _by_id(m, "train")

    def make_train(ids: list[int], window: int = 0) -> Dataset:  # every window alike
        samples = [train_by_id[int(i)] for i in ids]
        return SegmentDataset([seqs[("train", s.id)] for s in samples], [s.label for s in samples],
                              [s.id for s in samples], profile, train=True)

    key = {"kind": "landmark segments", "profile": describe_profile(profile), "manifest": m.checksum,
           "segments": len(eval_ds), "videos": len(eval_samples), "digest": m.checksum[:16], "cached": False,
           "input_strategy": "segments"}
    describe = {"sequence": describe_profile(profile) | {"eval_segments": len(eval_ds)},
                "runtime": {"train_precision": tc["precision"], "eval_precision": eval_precision}}
    say(f"inputs ready: {len(eval_samples)} eval videos → {len(eval_ds)} segments of {profile.segment_length} "
        f"frames (profile {profile.name}, video score = {profile.aggregate}); precision {tc['precision']}")
    return RunInputs(eval_ds, make_train, tc, eval_precision, key, describe,
                     fuse=eval_fusion(eval_samples, eval_ds, profile, m.root))


def sequence_check_args(cfg: ConfigLike, manifest: Manifest) -> dict:
    """Arguments of benchmark.datacheck.check_source for a run's sequence samples (the run's profile) and for
    real sampling that reuses reals (then fewer reals than fakes is fine)."""
    rc = run_config(cfg)
    reused = {"reals_reused": True} if rc.benchmark.real_sampling is not RealSampling.UNIQUE else {}
    if not any(s.kind == "landmarks" for s in manifest.samples):
        return reused
    from detectors.registry import family_of

    sc = rc.sequence
    family = family_of(rc.detector) or ""
    name = sc.profile or DETECTOR_PROFILES.get(family, "fixed")
    return {"segment_length": int(sc.segment_length or 30), "profile": str(name)} | reused
