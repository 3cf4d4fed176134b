"""Single graded degradations for the robustness grid: one degradation at one level on a uint8 RGB image.

JPEG quality (Pillow), Gaussian blur, Gaussian noise, down-scaling, the run's mandatory chain, and ``none`` as the
clean reference. JPEG, blur and scaling have no randomness; the noise of eval position ``i`` comes from
``numpy.random.default_rng([NOISE_SEED, i])``; the mandatory chain is `benchmark.degradations.degrade` with the
run's profile and base seed, so that level equals the run's recorded evaluation. `genshift robustness`
(protocols/robustness.py) scores a run's windows on them.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

from benchmark.degradations import degrade

NOISE_SEED = 0x0B0B_5EED
# degradation -> graded levels; the first level of each graded family is its mildest.
DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "none": (0,),
    "jpeg": (100, 90, 80, 70, 60, 50),
    "blur": (0, 1, 2, 3),
    "noise": (0, 5, 10, 20),
    "scale": (1.0, 0.75, 0.5),
    "mandatory": (1,),
}


class GridError(ValueError):
    """A requested degradation or level does not exist, or a run cannot be scored on the grid; the message says
    what is wrong (`genshift robustness` reports it in one line)."""


def is_identity(kind: str, level: float) -> bool:
    """True where `apply_single` returns the image unchanged (none, blur 0, noise 0, scale 1): scored once."""
    return kind == "none" or (kind in ("blur", "noise") and float(level) == 0) or (kind == "scale" and float(level) == 1)


def apply_single(img: np.ndarray, kind: str, level: float, position: int, run_cfg: dict | None = None) -> np.ndarray:
    """One degradation at one level on a uint8 HWC RGB image (deterministic given ``position``)."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"apply_single needs a uint8 HxWx3 RGB image, got {img.dtype} {img.shape}")
    if kind == "none":
        return img
    if kind == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(level))
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.uint8).copy()
    if kind == "blur":
        return img if level == 0 else cv2.GaussianBlur(img, (0, 0), sigmaX=float(level), sigmaY=float(level),
                                                       borderType=cv2.BORDER_REFLECT_101)
    if kind == "noise":
        if level == 0:
            return img
        rng = np.random.default_rng([NOISE_SEED, int(position)])
        noisy = img.astype(np.float64) + rng.normal(0.0, float(level), size=img.shape)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    if kind == "scale":
        if level == 1.0:
            return img
        h, w = img.shape[:2]
        size = (max(1, round(w * float(level))), max(1, round(h * float(level))))
        return cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    if kind == "mandatory":
        deg = (run_cfg or {}).get("degradation", {})
        out, _ = degrade(img, int(position), deg.get("profile", "aigenbench-v1"), int(deg.get("base_seed", 4321)))
        return out
    raise GridError(f"unknown degradation {kind!r}; choose from {sorted(DEFAULT_GRID)}")


def parse_grid(specs: Sequence[str] | None) -> dict[str, tuple[float, ...]]:
    """['jpeg', 'blur=0,2'] -> grid; None/empty -> DEFAULT_GRID. 'none' is always included (reference)."""
    if not specs:
        return dict(DEFAULT_GRID)
    grid: dict[str, tuple[float, ...]] = {"none": (0,)}
    for spec in specs:
        kind, sep, levels = spec.partition("=")
        if kind not in DEFAULT_GRID:
            raise GridError(f"unknown degradation {kind!r} in {spec!r}; choose from {sorted(DEFAULT_GRID)}")
        try:
            grid[kind] = tuple(float(v) for v in levels.split(",")) if sep else DEFAULT_GRID[kind]
        except ValueError as exc:
            raise GridError(f"bad levels in {spec!r}: expected comma-separated numbers") from exc
    return grid
