"""Frames sampled from video files, decoded with PyAV (FFmpeg; default) or OpenCV.

Sampling (`sample_frame_indices`): every k-th frame (`every=k`: frames 0, k, 2k, …) or N frames evenly spaced
over the video (`count=N`: `round(linspace(0, T-1, N))`, duplicates removed when T < N). Decoding reads the
video from its start and keeps the wanted frames (no seeking: seek points depend on the container and would
make the frames differ between backends and library versions). Frames are RGB uint8 (H, W, 3).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
BACKENDS = ("pyav", "opencv")


class VideoReadError(ValueError):
    """A video file cannot be opened or decoded; the message names the file."""


def sample_frame_indices(n_frames: int, every: int | None = None, count: int | None = None) -> list[int]:
    """Indices of the frames to keep: every k-th, or N evenly spaced (exactly one of the two)."""
    if (every is None) == (count is None):
        raise ValueError("frame sampling: give exactly one of every=k (every k-th frame) or count=N (N evenly "
                         "spaced frames)")
    if n_frames <= 0:
        return []
    if every is not None:
        if int(every) < 1:
            raise ValueError(f"frame sampling: every must be >= 1, got {every}")
        return list(range(0, n_frames, int(every)))
    if int(count) < 1:
        raise ValueError(f"frame sampling: count must be >= 1, got {count}")
    return sorted({int(i) for i in np.rint(np.linspace(0, n_frames - 1, int(count)))})


def count_frames(path: str | Path, backend: str = "pyav") -> int:
    """Number of frames, decoding the whole video (container headers are often wrong or empty)."""
    return sum(1 for _ in _frames(Path(path), backend, None))


def read_frames(path: str | Path, indices: list[int], backend: str = "pyav") -> list[np.ndarray]:
    """RGB uint8 frames at ``indices`` (sorted, unique), decoded from the start of the video."""
    wanted = sorted(set(int(i) for i in indices))
    out = list(_frames(Path(path), backend, wanted))
    if len(out) != len(wanted):
        raise VideoReadError(f"{path}: asked for frames {wanted[:5]}… ({len(wanted)}), the video has only "
                             f"{len(out)} of them ({backend} decoding)")
    return out


def _frames(path: Path, backend: str, wanted: list[int] | None):
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; expected one of {BACKENDS}")
    if not path.is_file():
        raise VideoReadError(f"{path}: video file not found")
    keep = None if wanted is None else set(wanted)
    last = None if wanted is None else (wanted[-1] if wanted else -1)
    if last == -1:
        return
    if backend == "pyav":
        yield from _frames_pyav(path, keep, last)
    else:
        yield from _frames_opencv(path, keep, last)


def _frames_pyav(path: Path, keep: set[int] | None, last: int | None):
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise VideoReadError(f"{path}: cannot open the video with PyAV ({e})") from e
    with container:
        if not container.streams.video:
            raise VideoReadError(f"{path}: no video stream")
        try:
            for i, frame in enumerate(container.decode(video=0)):
                if keep is None:
                    yield None
                elif i in keep:
                    yield frame.to_ndarray(format="rgb24")
                if last is not None and i >= last:
                    return
        except av.error.FFmpegError as e:
            raise VideoReadError(f"{path}: decoding failed ({e})") from e


def _frames_opencv(path: Path, keep: set[int] | None, last: int | None):
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoReadError(f"{path}: cannot open the video with OpenCV")
    try:
        i = 0
        while True:
            ok = cap.grab()
            if not ok:
                return
            if keep is None:
                yield None
            elif i in keep:
                ok, bgr = cap.retrieve()
                if not ok:
                    raise VideoReadError(f"{path}: frame {i} could not be decoded (OpenCV)")
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            if last is not None and i >= last:
                return
            i += 1
    finally:
        cap.release()
