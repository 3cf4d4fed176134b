"""Procedural "natural-like" source images for the embedded synthetic dataset.

Real and fake images start from the same content model (1/f textures, gradients, soft shapes, lens blur,
sensor noise), each from its own seed, so that only the generators' artifacts separate the classes.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MIN_SIDE = 72
MAX_SIDE = 200


def draw_size(rng: np.random.Generator) -> tuple[int, int]:
    """(height, width) of one image: mostly non-square, sides in [MIN_SIDE, MAX_SIDE]."""
    h = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    if rng.random() < 0.25:
        return h, h
    return h, int(rng.integers(MIN_SIDE, MAX_SIDE + 1))


def pink_noise(rng: np.random.Generator, h: int, w: int, betas: list[float]) -> np.ndarray:
    """len(betas) zero-mean, unit-std fields (N, H, W) with 1/f^beta power spectra (natural: beta ~ 2)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    f[0, 0] = 1.0
    amp = f[None] ** (-np.asarray(betas, dtype=np.float64)[:, None, None] / 2.0)
    amp[:, 0, 0] = 0.0
    spec = rng.standard_normal((2, len(betas)) + f.shape, dtype=np.float32)
    spec = (spec[0] + 1j * spec[1]) * amp
    fields = np.fft.irfft2(spec, s=(h, w), axes=(1, 2)).astype(np.float32)
    std = fields.std(axis=(1, 2), keepdims=True)
    return fields / np.maximum(std, 1e-12)


def _soft_mask(dist: np.ndarray, softness: float) -> np.ndarray:
    """Anti-aliased inside-mask from a signed distance (negative inside): a linear ramp `softness` wide."""
    return np.clip(0.5 - dist / softness, 0.0, 1.0)


def _shape_distance(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, h: int, w: int) -> np.ndarray:
    """Signed distance (approximate, in pixels) of a random ellipse, rectangle or half-plane."""
    cy, cx = rng.uniform(-0.1, 1.1) * h, rng.uniform(-0.1, 1.1) * w
    kind = rng.integers(0, 3)
    theta = rng.uniform(0, np.pi)
    c, s = float(np.cos(theta)), float(np.sin(theta))
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    if kind == 2:  # horizon-like half plane
        return v
    ry = rng.uniform(0.08, 0.45) * h
    rx = rng.uniform(0.08, 0.45) * w
    if kind == 0:
        r = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
        return (r - 1.0) * min(rx, ry)
    return np.maximum(np.abs(u) - rx, np.abs(v) - ry)


def render_content(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """One source image, float32 HxWx3 in [0, 1], before sensor noise (call add_sensor_noise after)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    n_shapes = int(rng.integers(3, 9))
    # fields: luminance, two chroma, two textures that the shapes share (shifted) to keep this fast
    betas = [rng.uniform(1.6, 2.4), 2.2, 2.2, rng.uniform(1.0, 1.5), rng.uniform(1.5, 2.0)]
    fields = pink_noise(rng, h, w, betas)
    # sky-like gradient between two colours
    c0, c1 = rng.uniform(0.1, 0.9, 3).astype(np.float32), rng.uniform(0.1, 0.9, 3).astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    t = ((xx / w - 0.5) * float(np.cos(ang)) + (yy / h - 0.5) * float(np.sin(ang)) + 0.5)[..., None]
    img = c0 * (1 - t) + c1 * t
    # large-scale 1/f luminance texture, weaker 1/f chroma texture
    img += np.float32(rng.uniform(0.04, 0.12)) * fields[0][..., None]
    img[..., 0] += 0.03 * fields[1]
    img[..., 2] += 0.03 * fields[2]
    # soft-edged objects, each with its own colour, shading and fine texture
    for k in range(n_shapes):
        d = _shape_distance(rng, yy, xx, h, w)
        m = _soft_mask(d, rng.uniform(0.8, 4.0))[..., None]
        col = rng.uniform(0.05, 0.95, 3).astype(np.float32)
        shade = (xx / w - 0.5) * np.float32(rng.uniform(-0.3, 0.3)) + (yy / h - 0.5) * np.float32(
            rng.uniform(-0.3, 0.3)
        )
        tex = np.roll(fields[3 + k % 2], (int(rng.integers(h)), int(rng.integers(w))), axis=(0, 1))
        fill = col + (np.float32(rng.uniform(0.02, 0.10)) * tex + shade)[..., None]
        img += m * (fill - img)
    # vignette and lens blur
    r2 = ((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2)[..., None]
    img *= 1.0 - np.float32(rng.uniform(0.0, 0.5)) * r2
    sigma = rng.uniform(0.3, 0.9)
    img = ndimage.gaussian_filter(img, sigma=(sigma, sigma, 0), mode="reflect")
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def add_sensor_noise(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Signal-dependent (shot + read) noise with a little cross-channel correlation, as a camera adds."""
    h, w, _ = img.shape
    shot = rng.uniform(0.0005, 0.003)
    read = rng.uniform(0.003, 0.012)
    sd = np.sqrt(shot * img + read * read)
    common = rng.standard_normal((h, w, 1), dtype=np.float32)
    own = rng.standard_normal((h, w, 3), dtype=np.float32)
    noise = (0.4 * common + 0.9 * own) / float(np.sqrt(0.4**2 + 0.9**2))
    return np.clip(img + sd * noise, 0.0, 1.0).astype(np.float32)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Round a [0, 1] float image to uint8."""
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
