"""Image decoding and the detector-side size adaptation (crop/resize to the model input)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

EVAL_INPUT_STRATEGIES = ("center_crop", "resize_center_crop", "resize", "five_crop")
SINGLE_CROP_STRATEGIES = ("center_crop", "resize_center_crop", "resize")


class ImageReadError(OSError):
    """An image file cannot be decoded; the message names the file."""


def load_rgb(path: Path | str) -> np.ndarray:
    """Decode an image file to a uint8 HWC RGB array, EXIF orientation applied (as the reference does).

    The image is fully loaded, so a truncated file is detected here.
    """
    try:
        with Image.open(path) as im:
            im.load()
            upright = ImageOps.exif_transpose(im)
            return np.asarray(upright.convert("RGB"), dtype=np.uint8).copy()
    except Image.DecompressionBombError as e:  # Pillow refuses to decode it: far more pixels than any real image
        raise ImageReadError(f"cannot decode image {path}: too many pixels, a possible decompression bomb ({e})") from e
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"cannot decode image {path}: {e}") from e


def resize_short_side(img: np.ndarray, size: int, interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """Resize so that the shorter side equals `size`, keeping the aspect ratio."""
    h, w = img.shape[:2]
    if min(h, w) == size:
        return img
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    return cv2.resize(img, (nw, nh), interpolation=interpolation)


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """Central size×size crop; an image smaller than `size` is first upscaled (bilinear)."""
    h, w = img.shape[:2]
    if min(h, w) < size:
        img = resize_short_side(img, size, cv2.INTER_LINEAR)
        h, w = img.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return img[top : top + size, left : left + size]


def resize_exact(img: np.ndarray, size: int) -> np.ndarray:
    """Plain resize to size×size (aspect ratio not kept), bicubic like resize_short_side."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)


def five_crops(img: np.ndarray, size: int) -> list[np.ndarray]:
    """Four corner crops and the central crop (torchvision FiveCrop order: TL, TR, BL, BR, centre) at native
    resolution; an image smaller than `size` is first upscaled (bilinear, short side -> size)."""
    h, w = img.shape[:2]
    if min(h, w) < size:
        img = resize_short_side(img, size, cv2.INTER_LINEAR)
        h, w = img.shape[:2]
    return [img[:size, :size], img[:size, w - size:], img[h - size:, :size], img[h - size:, w - size:],
            center_crop(img, size)]


def adapt_to_input(img: np.ndarray, size: int, strategy: str) -> np.ndarray:
    """The detector's own single-crop eval resize/crop: uint8 HWC in, uint8 size×size×3 out (contiguous)."""
    if strategy == "center_crop":
        out = center_crop(img, size)
    elif strategy == "resize_center_crop":
        out = center_crop(resize_short_side(img, size), size)
    elif strategy == "resize":
        out = resize_exact(img, size)
    elif strategy in EVAL_INPUT_STRATEGIES:
        raise ValueError(f"eval input strategy {strategy!r} yields several crops; use input_crops()")
    else:
        raise ValueError(f"unknown eval input strategy {strategy!r}; expected one of {EVAL_INPUT_STRATEGIES}")
    return np.ascontiguousarray(out)


def input_crops(img: np.ndarray, size: int, strategy: str) -> np.ndarray:
    """All eval crops of one image for `strategy`: uint8 (n_crops, size, size, 3); n_crops is 5 for five_crop,
    else 1. The detector scores every crop; the harness fuses them (mean) and keeps the crop-level scores."""
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"input_crops expects a uint8 HxWx3 image, got {img.dtype} {img.shape}")
    if strategy == "five_crop":
        return np.ascontiguousarray(np.stack(five_crops(img, size)))
    return adapt_to_input(img, size, strategy)[None]


def crops_per_image(strategy: str) -> int:
    """Number of crops input_crops returns for `strategy` (for preallocating caches)."""
    if strategy not in EVAL_INPUT_STRATEGIES:
        raise ValueError(f"unknown eval input strategy {strategy!r}; expected one of {EVAL_INPUT_STRATEGIES}")
    return 5 if strategy == "five_crop" else 1


def to_chw(img: np.ndarray) -> np.ndarray:
    """uint8 HWC -> uint8 CHW (contiguous)."""
    return np.ascontiguousarray(img.transpose(2, 0, 1))
