"""Landmark sequences: parsing LRNet's text files, cutting them into segments, and fusing segment scores.

A landmark file holds one frame per line: 136 numbers (68 (x, y) points) separated by white space, as in
LRNet's released datasets. Parsed values are float64 (numpy's `loadtxt` gives the same numbers); a segment of L
frames starting at frame i is packed as float32 (2L-1, 136): its L frames, then the L-1 differences frame
t+1 minus frame t computed in float64 and cast afterwards, which is exactly what LRNet feeds its g1 and g2
branches.

Profiles (`sequence.profile`) say how a video becomes segments and how segment scores become a video score:

| profile | segment starts | video score |
|---|---|---|
| `lrnet-v1` | `range(0, T - L, L)` (LRNet: a video of exactly L frames has no segment; when T is a multiple of L the last full segment is dropped) | `vote`: fraction of segments whose score is >= 0.5 |
| `fixed` | `range(0, T - L + 1, L)` (every full segment) | `mean` of the segment scores |

A video without any segment under the run's profile cannot be scored: `genshift data check` names it
(LRNet appended its label anyway, which shifts labels against predictions), a run refuses it and
`genshift predict` gives it a NaN score with a note.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LANDMARK_WIDTH = 136  # 68 (x, y) points per frame
AGGREGATES = ("vote", "mean", "max")


class SequenceError(ValueError):
    """A landmark file is not a usable sequence; `kind` is the data-check problem kind."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class SequenceProfile:
    """How videos become segments and segment scores a video score (see the module docstring)."""

    name: str
    segment_length: int
    last_segment: bool  # False: LRNet's range(0, T - L, L); True: every full segment
    aggregate: str  # vote | mean | max

    def starts(self, frames: int) -> list[int]:
        return segment_starts(frames, self.segment_length, self.last_segment)


PROFILES: dict[str, SequenceProfile] = {
    "lrnet-v1": SequenceProfile("lrnet-v1", 30, last_segment=False, aggregate="vote"),
    "fixed": SequenceProfile("fixed", 30, last_segment=True, aggregate="mean"),
}


def get_profile(name: str, aggregate: str | None = None, segment_length: int | None = None) -> SequenceProfile:
    """A named profile, optionally with another aggregate or segment length (recorded as given)."""
    if name not in PROFILES:
        raise ValueError(f"sequence.profile: unknown profile {name!r}; expected one of {sorted(PROFILES)}")
    p = PROFILES[name]
    if aggregate is not None and aggregate not in AGGREGATES:
        raise ValueError(f"sequence.aggregate: unknown aggregate {aggregate!r}; expected one of {AGGREGATES}")
    if segment_length is not None and int(segment_length) < 2:
        raise ValueError(f"sequence.segment_length must be >= 2, got {segment_length}")
    return SequenceProfile(p.name, int(segment_length or p.segment_length), p.last_segment, aggregate or p.aggregate)


def segment_starts(frames: int, length: int, last_segment: bool) -> list[int]:
    """First frame of every segment of a T-frame video (see the profiles)."""
    stop = frames - length + 1 if last_segment else frames - length
    return list(range(0, max(stop, 0), length))


def parse_landmarks(data: bytes | str, where: str, width: int = LANDMARK_WIDTH) -> np.ndarray:
    """(T, width) float64 frames of a landmark text file; SequenceError (empty, ragged, bad_width, non_finite)."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    rows = [line.split() for line in text.splitlines()]
    rows = [r for r in rows if r]
    if not rows:
        raise SequenceError("empty", f"{where}: no frame (the file is empty)")
    counts = {len(r) for r in rows}
    if len(counts) > 1:
        bad = next(i for i, r in enumerate(rows) if len(r) != len(rows[0]))
        raise SequenceError("ragged", f"{where}: frames have different lengths {sorted(counts)} (first frame "
                                      f"{len(rows[0])} values, frame {bad} {len(rows[bad])})")
    if counts != {width}:
        raise SequenceError("bad_width", f"{where}: {counts.pop()} values per frame, expected {width} "
                                         "(68 landmarks × (x, y))")
    try:
        arr = np.array([float(v) for r in rows for v in r], dtype=np.float64).reshape(len(rows), width)
    except ValueError as e:
        raise SequenceError("unreadable", f"{where}: not numbers ({e})") from e
    if not np.isfinite(arr).all():
        frame = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise SequenceError("non_finite", f"{where}: NaN or infinite values (first in frame {frame})")
    return arr


def landmarks_from_bytes(data: bytes, where: str) -> np.ndarray:
    """(T, 136) float64 frames of a landmark file's bytes, read with numpy's `loadtxt` (LRNet's own reader); a file
    it rejects is parsed again by `parse_landmarks` for a precise SequenceError."""
    if not data.strip():
        raise SequenceError("empty", f"{where}: no frame (the file is empty)")
    try:
        arr = np.loadtxt(io.BytesIO(data), dtype=np.float64, ndmin=2)
    except ValueError:
        return parse_landmarks(data, where)
    if arr.size == 0:
        raise SequenceError("empty", f"{where}: no frame (the file is empty)")
    if arr.shape[1] != LANDMARK_WIDTH:
        raise SequenceError("bad_width", f"{where}: {arr.shape[1]} values per frame, expected {LANDMARK_WIDTH} "
                                         "(68 landmarks × (x, y))")
    if not np.isfinite(arr).all():
        frame = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise SequenceError("non_finite", f"{where}: NaN or infinite values (first in frame {frame})")
    return arr


def count_frames(data: bytes) -> int:
    """Number of non-empty lines (frames) of a landmark file, without parsing numbers."""
    return sum(1 for line in data.splitlines() if line.strip())


def pack_segment(frames: np.ndarray, start: int, length: int) -> np.ndarray:
    """float32 (2L-1, W): frames start..start+L-1, then their L-1 consecutive differences (float64, then cast)."""
    seg = frames[start:start + length]
    if seg.shape[0] != length:
        raise ValueError(f"segment at frame {start} of length {length} runs past the video's {frames.shape[0]} frames")
    return np.concatenate([seg, seg[1:] - seg[:-1]]).astype(np.float32)


def fuse_scores(segment_scores: np.ndarray, segment_video: np.ndarray, n_videos: int, aggregate: str) -> np.ndarray:
    """float64 per-video score from its segments' scores: vote (fraction >= 0.5), mean or max; NaN without any."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"unknown aggregate {aggregate!r}; expected one of {AGGREGATES}")
    s = np.asarray(segment_scores, dtype=np.float64)
    v = np.asarray(segment_video, dtype=np.int64)
    counts = np.bincount(v, minlength=n_videos).astype(np.float64)
    out = np.full(n_videos, np.nan)
    has = counts > 0
    if aggregate == "max":
        acc = np.full(n_videos, -np.inf)
        np.maximum.at(acc, v, s)
        out[has] = acc[has]
        return out
    values = (s >= 0.5).astype(np.float64) if aggregate == "vote" else s
    sums = np.bincount(v, weights=values, minlength=n_videos)
    out[has] = sums[has] / counts[has]
    return out


def score_to_logit(scores: np.ndarray) -> np.ndarray:
    """float32 log(s / (1 - s)) of fused video scores (±inf at 0 and 1, NaN stays NaN)."""
    s = np.asarray(scores, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.log(s) - np.log1p(-s)).astype(np.float32)


@dataclass
class SegmentIndex:
    """The segments of a list of videos: which video (row) and start frame each one has."""

    video: np.ndarray  # (S,) row of the video in the given list
    start: np.ndarray  # (S,) first frame

    def __len__(self) -> int:
        return int(self.video.size)


def index_segments(frame_counts: Sequence[int], profile: SequenceProfile) -> SegmentIndex:
    """Segments of videos with the given frame counts, in video order then start order."""
    video, start = [], []
    for row, t in enumerate(frame_counts):
        s = profile.starts(int(t))
        video += [row] * len(s)
        start += s
    return SegmentIndex(np.asarray(video, dtype=np.int64), np.asarray(start, dtype=np.int64))


def describe_profile(profile: SequenceProfile) -> dict:
    """What run.json and the npz record about the profile."""
    return {"profile": profile.name, "segment_length": profile.segment_length,
            "last_segment": profile.last_segment, "aggregate": profile.aggregate,
            "starts": "range(0, T - L + 1, L)" if profile.last_segment else "range(0, T - L, L)"}
