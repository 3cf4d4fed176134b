"""Ground-truth localization masks: decoding and the same geometric adaptation as the detector's input.

A mask file is a single-channel (or RGB) PNG, altered pixels non-zero. ``adapt_mask_to_input`` follows
``benchmark.images.adapt_to_input`` pixel for pixel in geometry (same crop offsets and output sizes), with
nearest-neighbour instead of bilinear/bicubic interpolation so that the mask stays binary.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from benchmark.images import ImageReadError


def load_mask(path: Path | str, expect_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a mask file to a bool (H, W) array (True = altered); check its size against the image's."""
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("L"))
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise ImageReadError(f"cannot decode mask {path}: {e}") from e
    if expect_hw is not None and arr.shape != tuple(expect_hw):
        raise ValueError(f"mask {path} is {arr.shape[1]}x{arr.shape[0]} (WxH) but its image is "
                         f"{expect_hw[1]}x{expect_hw[0]}; a mask must have the size of its image")
    return arr > 127


def _resize_short_side_nearest(m: np.ndarray, size: int) -> np.ndarray:
    h, w = m.shape
    if min(h, w) == size:
        return m
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))  # as images.resize_short_side
    return cv2.resize(m.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST).astype(bool)


def _center_crop(m: np.ndarray, size: int) -> np.ndarray:
    if min(m.shape) < size:
        m = _resize_short_side_nearest(m, size)
    h, w = m.shape
    top, left = (h - size) // 2, (w - size) // 2
    return m[top: top + size, left: left + size]


def adapt_mask_to_input(mask: np.ndarray, size: int, strategy: str) -> np.ndarray:
    """bool (H, W) mask -> bool (size, size), aligned with ``adapt_to_input(image, size, strategy)``."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be a 2-D (H, W) array, got shape {mask.shape}")
    mask = mask.astype(bool)
    if strategy == "center_crop":
        out = _center_crop(mask, size)
    elif strategy == "resize_center_crop":
        out = _center_crop(_resize_short_side_nearest(mask, size), size)
    elif strategy == "resize":
        out = mask if mask.shape == (size, size) else cv2.resize(
            mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    else:
        raise ValueError(f"mask adaptation supports single-crop strategies center_crop, resize_center_crop, "
                         f"resize; got {strategy!r}")
    return np.ascontiguousarray(out)
