"""Parametric families of image-synthesis artifacts and the synthetic generators' timeline.

Each synthetic generator applies one artifact family with its own fixed fingerprint (pattern, frequencies,
stride) at a strength that falls with its release date; new families appear in later windows. The
absolute amplitudes (FAMILY_GAIN) were calibrated so that a small CNN finds seen windows easy, the next
window harder and a new family hardest, after the mandatory evaluation degradations (DESIGN §3.2, §3.6).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class GeneratorSpec:
    """One synthetic generator: its artifact family, fingerprint parameters and strength in (0, 1]."""

    name: str
    date: dt.date
    family: str
    strength: float
    params: dict = field(default_factory=dict)
    partial: bool = False  # inpainting: artifacts only inside a masked region


def _d(s: str) -> dt.date:
    return dt.date.fromisoformat(s)


# Sorted by date; with 4 generators per window the tie on 2017-11-06 makes window 0 hold 5.
GENERATORS: tuple[GeneratorSpec, ...] = (
    GeneratorSpec("CheckerGAN-s2", _d("2017-02-10"), "upconv", 1.0, {"stride": 2}),
    GeneratorSpec("PeakGAN-hf", _d("2017-05-03"), "spectral", 1.0, {"band": (0.22, 0.45)}),
    GeneratorSpec("BlockNet-8", _d("2017-08-21"), "block", 1.0, {"block": 8}),
    GeneratorSpec("CheckerGAN-s4", _d("2017-11-06"), "upconv", 1.0, {"stride": 4}),
    GeneratorSpec("CheckerFill-s4", _d("2017-11-06"), "upconv", 1.0, {"stride": 4}, partial=True),
    GeneratorSpec("SmoothFlow-1", _d("2018-03-14"), "smooth", 1.0),
    GeneratorSpec("PeakGAN-mf", _d("2018-06-27"), "spectral", 0.85, {"band": (0.12, 0.3)}),
    GeneratorSpec("CheckerGAN-s2b", _d("2018-09-30"), "upconv", 0.8, {"stride": 2}),
    GeneratorSpec("BlockNet-16", _d("2018-12-12"), "block", 0.85, {"block": 16}),
    GeneratorSpec("PosterNet-1", _d("2019-03-05"), "quant", 1.0),
    GeneratorSpec("SmoothFill-2", _d("2019-06-18"), "smooth", 0.8, partial=True),
    GeneratorSpec("CheckerGAN-s8", _d("2019-09-09"), "upconv", 0.75, {"stride": 8}),
    GeneratorSpec("PeakGAN-lf", _d("2019-12-03"), "spectral", 0.7, {"band": (0.06, 0.18)}),
    GeneratorSpec("ChromaDiff-420", _d("2020-04-16"), "chroma", 1.0, {"factor": 2}),
    GeneratorSpec("PosterNet-2", _d("2020-07-22"), "quant", 0.8),
    GeneratorSpec("SmoothFlow-3", _d("2020-10-05"), "smooth", 0.65),
    GeneratorSpec("BlockNet-VQ", _d("2020-12-17"), "block", 0.7, {"block": 16}),
    GeneratorSpec("LatentDiff-1", _d("2021-05-11"), "latent", 1.0),
    GeneratorSpec("ChromaFill-410", _d("2021-08-30"), "chroma", 0.8, {"factor": 4}, partial=True),
    GeneratorSpec("PosterNet-3", _d("2021-12-20"), "quant", 0.65),
    GeneratorSpec("PeakGAN-xs", _d("2022-03-29"), "spectral", 0.55, {"band": (0.15, 0.45)}),
    GeneratorSpec("SharpDiff-1", _d("2022-10-20"), "halo", 1.0),
    GeneratorSpec("LatentDiff-2", _d("2023-04-26"), "latent", 0.85),
    GeneratorSpec("ChromaDiff-3", _d("2024-08-01"), "chroma", 0.7, {"factor": 2}),
    GeneratorSpec("LatentDiff-3", _d("2025-02-14"), "latent", 0.7),
)

# Amplitude multiplier of each family at strength 1. Calibrated with a SmallCNN-like detector (cumulative,
# 1 epoch x 4 light-augmented 64 px crops, AdamW 3e-3 OneCycle, aigenbench-v1 degradations on eval):
# seen ~0.82-0.90, next ~0.6-0.76 AUROC per window. Today's default SmallCNN (strided, 56 px crops, same recipe)
# gives seen 0.77-0.86 and next 0.56-0.69. Changing these changes the dataset: bump synthetic.VERSION.
FAMILY_GAIN: dict[str, float] = {
    "upconv": 4.0,
    "spectral": 4.0,
    "block": 4.0,
    "smooth": 3.0,
    "quant": 3.0,
    "chroma": 3.0,
    "latent": 4.0,
    "halo": 1.2,
}


def fingerprint_rng(name: str, seed: int) -> np.random.Generator:
    """RNG for a generator's fixed fingerprint (same for all its images), from its name and the seed."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _pad_to(img: np.ndarray, s: int) -> np.ndarray:
    h, w = img.shape[:2]
    return np.pad(img, ((0, -h % s), (0, -w % s), (0, 0)), mode="edge")


def _down_up(img: np.ndarray, s: int) -> np.ndarray:
    """Box-downsample by s, then linear-interpolate back (nearest repeat + box filter)."""
    h, w = img.shape[:2]
    p = _pad_to(img, s)
    ph, pw = p.shape[:2]
    low = p.reshape(ph // s, s, pw // s, s, 3).mean(axis=(1, 3))
    up = np.repeat(np.repeat(low, s, axis=0), s, axis=1)
    up = ndimage.uniform_filter(up, size=(s, s, 1), mode="nearest")
    return up[:h, :w]


def _tile(pattern: np.ndarray, h: int, w: int) -> np.ndarray:
    ry, rx = -(-h // pattern.shape[0]), -(-w // pattern.shape[1])
    return np.tile(pattern, (ry, rx) + (1,) * (pattern.ndim - 2))[:h, :w]


def _luma(img: np.ndarray) -> np.ndarray:
    return img @ np.array([0.299, 0.587, 0.114], dtype=img.dtype)


def _upconv(img, rng, fp, a, params):
    """Transposed-conv upsampling: lost detail plus a content-modulated stride-periodic checkerboard."""
    s = params["stride"]
    h, w = img.shape[:2]
    up = _down_up(img, s)
    keep = 1.0 - 0.7 * min(a, 1.0)
    pat = fp.standard_normal((s, s, 3)) * 0.5 + fp.standard_normal((s, s, 1))
    pat = (pat - pat.mean()) / pat.std()
    mod = 0.4 + _luma(up)[..., None]
    return up + keep * (img - up) + 0.035 * a * _tile(pat, h, w) * mod


def _spectral(img, rng, fp, a, params):
    """Periodic patterns at fixed frequencies (spectral peaks), random phase per image."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    lo, hi = params["band"]
    out = img.copy()
    for _ in range(3):
        f = fp.uniform(lo, hi)
        th = fp.uniform(0, np.pi)
        col = 0.6 + 0.4 * fp.random(3)
        wave = np.cos(2 * np.pi * f * (xx * np.cos(th) + yy * np.sin(th)) + rng.uniform(0, 2 * np.pi))
        out += 0.02 * a * wave[..., None] * col
    return out


def _block(img, rng, fp, a, params):
    """Blockiness: per-block mean offsets and partial flattening towards each block's mean."""
    b = params["block"]
    h, w = img.shape[:2]
    p = _pad_to(img, b)
    ph, pw = p.shape[:2]
    means = p.reshape(ph // b, b, pw // b, b, 3).mean(axis=(1, 3))
    flat = np.repeat(np.repeat(means, b, axis=0), b, axis=1)[:h, :w]
    offs = rng.standard_normal((ph // b, pw // b, 1)) * (0.5 + 0.5 * fp.random(3))
    offs = np.repeat(np.repeat(offs, b, axis=0), b, axis=1)[:h, :w]
    t = 0.45 * min(a, 1.0)
    return img * (1 - t) + flat * t + 0.02 * a * offs


def _smooth(img, rng, fp, a, params):
    """Denoising-style over-smoothing: sensor noise and fine texture removed."""
    sig = 0.4 + 0.6 * a
    blur = ndimage.gaussian_filter(img, sigma=(sig, sig, 0), mode="reflect")
    t = min(1.0, 0.5 + 0.5 * a)
    return img * (1 - t) + blur * t


def _quant(img, rng, fp, a, params):
    """Colour quantisation / banding of a denoised image (no dithering)."""
    levels = 24.0 / max(a, 0.25)
    den = ndimage.gaussian_filter(img, sigma=(0.8, 0.8, 0), mode="reflect")
    return np.round(den * levels) / levels


def _chroma(img, rng, fp, a, params):
    """Chroma subsampling (nearest up-sampling): colour bleeding at edges, luma kept."""
    f = params["factor"]
    y = _luma(img)[..., None]
    c = img - y
    p = _pad_to(c, f)
    ph, pw = p.shape[:2]
    low = p.reshape(ph // f, f, pw // f, f, 3).mean(axis=(1, 3))
    h, w = img.shape[:2]
    cs = np.repeat(np.repeat(low, f, axis=0), f, axis=1)[:h, :w]
    t = min(a, 1.0)
    return y + c * (1 - t) + cs * t * (1.0 + 0.3 * a)


def _latent(img, rng, fp, a, params):
    """VAE-decoder-like: stride-8 reconstruction, faint 8x8 grid, generated (2x2-correlated) noise."""
    h, w = img.shape[:2]
    up = _down_up(img, 8)
    den = ndimage.gaussian_filter(img, sigma=(1.0, 1.0, 0), mode="reflect")
    keep = 0.9 - 0.4 * min(a, 1.0)
    base = up + keep * (den - up)
    pat = fp.standard_normal((8, 8, 1))
    pat = (pat - pat.mean()) / pat.std()
    n = rng.standard_normal((-(-h // 2), -(-w // 2), 1))
    n = np.repeat(np.repeat(n, 2, axis=0), 2, axis=1)[:h, :w]
    return base + 0.012 * a * _tile(pat, h, w) + 0.012 * a * n


def _halo(img, rng, fp, a, params):
    """Over-sharpening halos (unsharp mask of a denoised image)."""
    den = ndimage.gaussian_filter(img, sigma=(0.8, 0.8, 0), mode="reflect")
    low = ndimage.gaussian_filter(den, sigma=(2.0, 2.0, 0), mode="reflect")
    return den + 1.5 * a * (den - low)


FAMILIES: dict[str, Callable[..., np.ndarray]] = {
    "upconv": _upconv,
    "spectral": _spectral,
    "block": _block,
    "smooth": _smooth,
    "quant": _quant,
    "chroma": _chroma,
    "latent": _latent,
    "halo": _halo,
}


def partial_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Binary (bool) inpainting region: an ellipse or rectangle covering the centre, ~25–60 % of the area."""
    yy, xx = np.mgrid[0:h, 0:w]
    cy = h * rng.uniform(0.4, 0.6)
    cx = w * rng.uniform(0.4, 0.6)
    ry, rx = h * rng.uniform(0.3, 0.45), w * rng.uniform(0.3, 0.45)
    if rng.random() < 0.5:
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    return (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)


def apply_generator(
    spec: GeneratorSpec, img: np.ndarray, rng: np.random.Generator, seed: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply a generator's artifacts to a float HxWx3 source image; returns (image, bool mask or None)."""
    if spec.family not in FAMILIES:
        raise ValueError(f"generator {spec.name}: unknown artifact family {spec.family!r}; known: {sorted(FAMILIES)}")
    fp = fingerprint_rng(spec.name, seed)
    a = spec.strength * FAMILY_GAIN[spec.family]
    out = FAMILIES[spec.family](img, rng, fp, a, spec.params)
    mask = None
    if spec.partial:
        mask = partial_mask(rng, *img.shape[:2])
        out = np.where(mask[..., None], out, img)
    return np.clip(out, 0.0, 1.0).astype(np.float32), mask
