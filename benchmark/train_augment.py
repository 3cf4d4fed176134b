"""Fixed per-copy training augmentations, keyed by (seed, sample id, copy) (DESIGN §3.4).

Keying by sample id rather than position makes a sample's augmented copies identical in every window,
which keeps results independent of window composition and makes feature caching valid.
"""

from __future__ import annotations

import cv2
import numpy as np

from benchmark.images import center_crop, resize_short_side
from benchmark.masks import center_crop_mask, resize_short_side_nearest

TRAIN_AUGMENTATIONS = ("none", "light", "baseline")


def copy_rng(seed: int, sample_id: int, copy: int) -> np.random.Generator:
    """The generator that decides every random choice of one augmented copy."""
    return np.random.default_rng([int(seed), int(sample_id), int(copy)])


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError("OpenCV failed to JPEG-encode a training image")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]


def _random_crop(img: np.ndarray, size: int, rng: np.random.Generator, resize_mode: str,
                 mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Random size×size crop of the image and, with the same geometry, of its mask (nearest-neighbour)."""
    if resize_mode == "resize_center_crop":
        img = resize_short_side(img, size)
        mask = None if mask is None else resize_short_side_nearest(mask, size)
    h, w = img.shape[:2]
    if min(h, w) < size:
        img = center_crop(img, size)
        mask = None if mask is None else center_crop_mask(mask, size)
        h, w = img.shape[:2]
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    img = img[top : top + size, left : left + size]
    return img, None if mask is None else mask[top : top + size, left : left + size]


def augment_train(
    img: np.ndarray, size: int, rng: np.random.Generator, profile: str = "light", resize_mode: str = "center_crop"
) -> np.ndarray:
    """One augmented training copy: uint8 HWC in, uint8 size×size×3 out.

    `light`: mild JPEG/noise/grayscale/blur so pixel artifacts stay learnable, then a random crop and
    flip. `baseline`: closer to the reference's baseline (stronger colour, blur and JPEG). `none`: crop
    only. Every draw is made even when a step does not fire, so the stream of draws is fixed.
    """
    return _augment(img, None, size, rng, profile, resize_mode)[0]


def augment_train_with_mask(
    img: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator, profile: str = "light",
    resize_mode: str = "center_crop",
) -> tuple[np.ndarray, np.ndarray]:
    """(image, bool size×size mask): the copy `augment_train` makes, plus its ground-truth mask moved alike.

    Only the geometric steps (resize, crop, flip) touch the mask, with nearest-neighbour resizing so it stays
    binary; the photometric ones (grayscale, blur, noise, JPEG) alter pixel values, not where the image was
    altered. The image is bit-identical to ``augment_train``'s with the same rng state (the mask draws nothing).
    """
    mask = np.asarray(mask)
    if mask.shape != img.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} differs from the image's {img.shape[:2]}; a training mask must "
                         "have the size of its image")
    out, m = _augment(img, mask.astype(bool), size, rng, profile, resize_mode)
    return out, np.asarray(m)


def _augment(
    img: np.ndarray, mask: np.ndarray | None, size: int, rng: np.random.Generator, profile: str, resize_mode: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """The one augmentation path for images with and without a mask, so both draw the same random stream."""
    if profile not in TRAIN_AUGMENTATIONS:
        raise ValueError(f"unknown training augmentation {profile!r}; expected one of {TRAIN_AUGMENTATIONS}")
    u = rng.random(6)
    quality = int(rng.integers(60, 101)) if profile == "light" else int(rng.integers(30, 101))
    sigma = float(rng.uniform(1.0, 8.0))
    blur = float(rng.uniform(0.3, 1.0)) if profile == "light" else float(rng.uniform(0.0, 3.0))
    out = img
    if profile != "none":
        p_gray, p_blur, p_noise, p_jpeg = (0.1, 0.1, 0.2, 0.5) if profile == "light" else (0.2, 0.5, 0.2, 0.5)
        if u[0] < p_gray:
            g = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
            out = np.repeat(g[:, :, None], 3, axis=2)
        if u[1] < p_blur and blur > 0:
            out = cv2.GaussianBlur(out, (0, 0), blur)
        if u[2] < p_noise:
            noise = rng.normal(0.0, sigma, size=out.shape)
            out = np.clip(out.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        if u[3] < p_jpeg:
            out = _jpeg(out, quality)
    out, mask = _random_crop(out, size, rng, resize_mode, mask)
    if u[4] < 0.5:
        out = out[:, ::-1]
        mask = None if mask is None else mask[:, ::-1]
    return np.ascontiguousarray(out), None if mask is None else np.ascontiguousarray(mask)
