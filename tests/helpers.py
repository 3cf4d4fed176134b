"""Test helpers: the repository's paths, the flags of small runs, small video files, and (re-exported from
benchmark.testdata, which the scale benches use too) tiny datasets in the users' formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.testdata import (  # noqa: F401  (re-exported for the tests)
    RELEASE_FAULTS,
    V1_TIMELINE,
    _row,
    make_image,
    png_bytes,
    release_features,
    write_csv_dataset,
    write_folder_dataset,
    write_release_dataset,
)

ROOT = Path(__file__).resolve().parents[1]  # the source tree
TEST_DATA = Path(__file__).resolve().parent / "data"  # golden files

# Small two-window runs shared by the resume, SLURM, DDP and localization tests (smoke data, 12 generators per
# window).
SMALL_RUN_FLAGS = ["--preset", "smoke", "--no-progress", "--no-leaderboard", "--set", "benchmark.generators_per_window=12",
                   "--set", "threads=1", "--set", "train.checkpoint_every_n_steps=2"]


def write_video(path, frames: int, size=(48, 40), seed=0) -> None:
    """A small MPEG-4 video file: `frames` frames of `size` (width, height), half of each frame random colour."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as c:
        st = c.add_stream("mpeg4", rate=25)
        st.width, st.height, st.pix_fmt = size[0], size[1], "yuv420p"
        st.options = {"qscale": "2"}
        for i in range(frames):
            img = np.full((size[1], size[0], 3), (i * 9) % 256, np.uint8)
            img[:, : size[0] // 2] = rng.integers(0, 255, 3, dtype=np.uint8)
            for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
