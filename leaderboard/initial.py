"""The untrained model's predictions, `window_init/predictions.npz`: b_j for forward transfer (FWT).

FWT (GEM's definition, on AUROC) = mean_{j=1..K-1} (R[j-1, j] − b_j) compares the model that has trained up to
window j−1 with the same model before any training, both on window j. b_j needs the untrained model (random
or pretrained initialisation, head included, exactly as window 0's training starts from) scored once on the
eval split. Its file sits beside the windows:

    runs/<experiment>/window_init/predictions.npz

with the keys and layout of a window's predictions.npz (DESIGN §5) and `window` = -1, written atomically like
them (the directory holds no `done` marker: the rename of the npz is the commit). The leaderboard reads it
when present; a run without it reports FWT as undefined, saying so. It is never counted as a window.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common import run_dir as layout
from leaderboard.continual import INITIAL_WINDOW, load_window_npz


def initial_path(run_dir: Path | str) -> Path:
    """Where a run keeps its untrained model's predictions."""
    return layout.predictions_path(layout.initial_dir(run_dir))


def read_initial(run_dir: Path | str) -> dict[str, np.ndarray] | None:
    """The untrained model's validated arrays, or None when the run has no such file."""
    path = initial_path(run_dir)
    if not path.is_file():
        return None
    arrays = load_window_npz(path)
    if "window" in arrays and int(arrays["window"]) != INITIAL_WINDOW:
        raise ValueError(f"{path}: key 'window' is {int(arrays['window'])}, expected {INITIAL_WINDOW} "
                         f"(the model before any training)")
    return arrays
