"""Run inputs of the video track for image detectors: frames sampled from videos, scores fused per video.

Any registered image detector scores video files: `sequence.frames_every` (every k-th frame) or
`sequence.frames_count` (N evenly spaced frames, default 8) are decoded (PyAV or OpenCV, the source's
`?backend=`), adapted to the detector's input like eval images (its own resize/crop; no mandatory image
degradations: videos carry their own compression levels) and scored one by one; the video score is the
`sequence.aggregate` of its frames' scores (mean by default; vote = fraction >= 0.5; max). Frame scores stay in
the npz (`frame_scores`, `frame_video` = row of the fused arrays, `frame_index` = frame number). Training uses
every sampled frame of a training video as an image with the video's label (no augmentation).

Frames are decoded once per run and held in memory (uint8, 3 × S × S per frame).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmark.images import adapt_to_input, to_chw
from benchmark.manifest import Manifest, Sample
from benchmark.sequences import fuse_scores, score_to_logit
from benchmark.video_frames import read_frames, sample_frame_indices
from protocols.config_model import ConfigLike, run_config


def frame_sampling(cfg: ConfigLike) -> dict:
    """{'every': k} or {'count': N} from the `sequence` config section."""
    sc = run_config(cfg).sequence
    if sc.frames_every:
        return {"every": int(sc.frames_every)}
    return {"count": int(sc.frames_count)}


def decode_frames(manifest: Manifest, samples: Sequence[Sample], size: int, strategy: str, sampling: dict,
                  progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(uint8 (F, 3, S, S) frames, (F,) row of each frame, (F,) frame number, problems) of the given videos.

    A video that cannot be decoded contributes no frame and a problem line (its row then has no score).
    """
    from benchmark.progress import counted_progress
    from benchmark.video_frames import VideoReadError

    backend = manifest.extra.get("video_backend") or "pyav"
    if strategy == "five_crop":
        strategy = "resize_center_crop"  # one crop per frame: the frames of a video already play that role
    frames, rows, index, problems = [], [], [], []
    with counted_progress(progress) as bar:
        task = bar.add_task("decoding video frames", total=len(samples))
        for row, s in enumerate(samples):
            path = manifest.abspath(s.path)
            wanted = sample_frame_indices(int(s.frames), **sampling)
            try:
                got = read_frames(path, wanted, backend)
            except VideoReadError as e:
                problems.append(str(e))
                got, wanted = [], []
            for i, f in zip(wanted, got, strict=True):
                frames.append(to_chw(adapt_to_input(f, size, strategy)))
                rows.append(row)
                index.append(i)
            bar.advance(task)
    arr = np.stack(frames) if frames else np.zeros((0, 3, size, size), dtype=np.uint8)
    return arr, np.asarray(rows, dtype=np.int64), np.asarray(index, dtype=np.int64), problems


class FrameArray(Dataset):
    """Decoded frames; items (x, label, id) for training or (x, position) for scoring."""

    features_in = False

    def __init__(self, frames: np.ndarray, rows: np.ndarray, labels: Sequence[int] | None = None,
                 ids: Sequence[int] | None = None, per_sample: Sequence[int] | None = None):
        self.frames, self.rows = frames, rows
        self.labels, self.ids = labels, ids
        self.per_sample = per_sample  # training: frames of each requested video, in request order

    def __len__(self) -> int:
        return len(self.frames)

    def items_per_sample(self) -> np.ndarray:
        """Frames of each video the training set was built from (items come video after video)."""
        if self.per_sample is None:
            raise RuntimeError("FrameArray: frames per video are known for training sets only")
        return np.asarray(self.per_sample, dtype=np.int64)

    def __getitem__(self, i: int) -> tuple:
        x = torch.from_numpy(np.array(self.frames[i]))
        if self.labels is None:
            return x, i
        r = int(self.rows[i])
        return x, torch.tensor(float(self.labels[r])), int(self.ids[r])


def frame_fusion(n_rows: int, rows: np.ndarray, index: np.ndarray, aggregate: str,
                 extra_rows: dict[str, np.ndarray]) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, dict]]:
    """fuse(frame logits) -> (video scores, video logits, extra npz arrays)."""

    def fuse(frame_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        fs = (1.0 / (1.0 + np.exp(-np.asarray(frame_logits, dtype=np.float64)))).astype(np.float32)
        scores = fuse_scores(fs, rows, n_rows, aggregate).astype(np.float32)
        extra = {"frame_scores": fs, "frame_video": rows.astype(np.int64), "frame_index": index.astype(np.int64),
                 "frame_aggregate": np.array(aggregate), **extra_rows}
        return scores, score_to_logit(scores), extra

    return fuse


def prepare_frame_inputs(cfg: ConfigLike, bench, detector, cache_dir: Path, progress: bool, say: Callable[[str], None]):
    """RunInputs for an image detector on a `videos:` dataset (see the module docstring)."""
    from protocols.sequence_inputs import video_arrays
    from protocols.speed import resolve_precision, resolve_train_cfg
    from protocols.window_inputs import RunInputs

    cfg = run_config(cfg)
    m = bench.manifest
    if any(s.kind != "video" for s in m.samples):
        kinds = sorted({s.kind for s in m.samples})
        raise ValueError(f"detector {detector.meta.name} scores images or video frames; dataset {m.name} holds "
                         f"{kinds} samples (landmark sequences need a sequence detector such as lrnet)")
    meta = detector.meta
    strategy = str(cfg.eval.input) if cfg.eval.input else meta.eval_resize
    sampling = frame_sampling(cfg)
    aggregate = str(cfg.sequence.aggregate or "mean")
    tc = resolve_train_cfg(cfg, detector)
    if tc["channels_last"]:
        detector.to(memory_format=torch.channels_last)
    eval_precision = resolve_precision(cfg.eval.precision, cfg, "eval.precision")
    eval_by_id = {s.id: s for s in m.split("eval")}
    eval_samples = [eval_by_id[int(i)] for i in bench.plan.sample_ids]
    earr, erows, eidx, problems = decode_frames(m, eval_samples, meta.input_size, strategy, sampling, progress)
    if problems:
        raise ValueError(f"{len(problems)} eval video(s) cannot be decoded: " + "; ".join(problems[:5]))
    missing = sorted(set(range(len(eval_samples))) - set(erows.tolist()))
    if missing:
        raise ValueError(f"{len(missing)} eval video(s) have no frame: "
                         + ", ".join(eval_samples[i].path for i in missing[:10]))
    union = sorted({int(i) for ids in bench.train_sets for i in ids})
    train_by_id = {s.id: s for s in m.split("train")}
    tsamples = [train_by_id[i] for i in union]
    tarr, trows, _, tproblems = decode_frames(m, tsamples, meta.input_size, strategy, sampling, progress)
    if tproblems:
        raise ValueError(f"{len(tproblems)} training video(s) cannot be decoded: " + "; ".join(tproblems[:5]))
    first = {sid: r for r, sid in enumerate(union)}

    def make_train(ids: list[int], window: int = 0) -> Dataset:  # every window alike
        per_video = [np.flatnonzero(trows == first[int(i)]) for i in ids]
        picks = np.concatenate(per_video) if ids else np.zeros(0, int)
        return FrameArray(tarr[picks], np.asarray([int(trows[p]) for p in picks]),
                          labels=[s.label for s in tsamples], ids=[s.id for s in tsamples],
                          per_sample=[len(p) for p in per_video])

    key = {"kind": "video frames", "sampling": sampling, "aggregate": aggregate, "input_size": meta.input_size,
           "input_strategy": strategy, "digest": m.checksum[:16], "cached": False, "frames": int(len(earr))}
    describe = {"frames": {"sampling": sampling, "aggregate": aggregate, "eval_frames": int(len(earr)),
                           "backend": m.extra.get("video_backend") or "pyav"},
                "runtime": {"train_precision": tc["precision"], "eval_precision": eval_precision}}
    say(f"inputs ready: {len(eval_samples)} eval videos → {len(earr)} frames ({sampling}), training frames "
        f"{len(tarr)}; video score = {aggregate} of its frames")
    fuse = frame_fusion(len(eval_samples), erows, eidx, aggregate, video_arrays(eval_samples, m.root))
    return RunInputs(FrameArray(earr, erows), make_train, tc, eval_precision, key, describe, fuse=fuse)
