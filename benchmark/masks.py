"""Ground-truth localization masks: decoding and the same geometric adaptation as the detector's input.

A mask file is a single-channel (or RGB) PNG, altered pixels non-zero. ``adapt_mask_to_input`` follows
``benchmark.images.adapt_to_input`` pixel for pixel in geometry (same crop offsets and output sizes), with
nearest-neighbour instead of bilinear/bicubic interpolation so that the mask stays binary. ``training_mask``
gives the pixel target of a training image (reals all clean, fully generated fakes all altered).
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


def resize_short_side_nearest(m: np.ndarray, size: int) -> np.ndarray:
    """Bool mask with its shorter side resized to ``size`` (nearest), the output size of images.resize_short_side."""
    h, w = m.shape
    if min(h, w) == size:
        return m
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))  # as images.resize_short_side
    return cv2.resize(m.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST).astype(bool)


def center_crop_mask(m: np.ndarray, size: int) -> np.ndarray:
    """Central size×size crop of a bool mask, with the geometry of images.center_crop (upscaled first if small)."""
    if min(m.shape) < size:
        m = resize_short_side_nearest(m, size)
    h, w = m.shape
    top, left = (h - size) // 2, (w - size) // 2
    return m[top: top + size, left: left + size]


# Pixel target of a fully generated fake in training: "ones" (every pixel altered) or "ignore" (no pixel term).
FULL_FAKE_TARGETS = ("ones", "ignore")
FULL_FAKE_TARGET = "ones"


def training_mask(root: Path | str, mask_path: str | None, label: int, hw: tuple[int, int],
                  full_fake: str = FULL_FAKE_TARGET) -> tuple[np.ndarray, bool]:
    """(bool (H, W) pixel target, whether it counts in the pixel loss) of one training image.

    Reals: all clean. Partial fakes (a mask path): their mask. Fully generated fakes: all altered
    (``full_fake="ones"``, the default) or left out of the pixel loss (``"ignore"``). All-ones is the literal
    truth (every pixel came from a generator) and the IMDL convention for fully synthetic images; it gives the
    decoder its main positive supervision, generator artifacts per pixel, instead of only the few partial fakes,
    whose centred masks would also teach a shape prior. The pixel metric is scored on partial fakes, whose
    unaltered part is real content, and reals train the map to stay low there, so a map that fires on
    generator artifacts is what the metric rewards.
    """
    if full_fake not in FULL_FAKE_TARGETS:
        raise ValueError(f"full_fake must be one of {FULL_FAKE_TARGETS}, got {full_fake!r}")
    if mask_path is not None:
        if int(label) != 1:
            raise ValueError(f"mask {mask_path} belongs to a real image (label 0); only fakes can have a mask")
        p = Path(mask_path)
        return load_mask(p if p.is_absolute() else Path(root) / p, hw), True
    if int(label) == 0:
        return np.zeros(hw, bool), True
    return np.ones(hw, bool), target_counts(label, None, full_fake)


def target_counts(label: int, mask_path: str | None, full_fake: str = FULL_FAKE_TARGET) -> bool:
    """Whether a training image's pixel target enters the pixel loss (see ``training_mask``)."""
    return int(label) == 0 or mask_path is not None or full_fake == "ones"


def adapt_mask_to_input(mask: np.ndarray, size: int, strategy: str) -> np.ndarray:
    """bool (H, W) mask -> bool (size, size), aligned with ``adapt_to_input(image, size, strategy)``."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be a 2-D (H, W) array, got shape {mask.shape}")
    mask = mask.astype(bool)
    if strategy == "center_crop":
        out = center_crop_mask(mask, size)
    elif strategy == "resize_center_crop":
        out = center_crop_mask(resize_short_side_nearest(mask, size), size)
    elif strategy == "resize":
        out = mask if mask.shape == (size, size) else cv2.resize(
            mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    else:
        raise ValueError(f"mask adaptation supports single-crop strategies center_crop, resize_center_crop, "
                         f"resize; got {strategy!r}")
    return np.ascontiguousarray(out)
