"""The embedded `synthetic-landmarks` dataset: 68-point face landmark videos generated from a seed.

Reals are face trajectories in LRNet's normalised coordinates: an identity (a 68-point shape deformed per
person), head pose (yaw, pitch, roll, translation and scale as smooth random signals, the face rotated in 3-D
and projected), blinks (eyelids closing for a few frames at random moments) and speech (the mouth and the jaw
opening with a syllable-rate envelope). Each of 12 manipulation methods, dated 2016–2022, adds temporal
artifacts of a few families, at a strength that falls with its date, new families appearing later:

| family | what it does |
|---|---|
| `jitter` | the inner face (eyes, brows, nose, mouth) wobbles at a method's own rate and shakes frame to frame |
| `flicker` | noise and sudden small jumps of the face outline (the blending boundary) |
| `lag` | the lips follow speech a few frames behind the jaw |
| `drift` | the inner face's shape wanders slowly (identity drift) |
| `blink` | fewer, shallower blinks |
| `damp` | expressions damped (smaller mouth and brow motion) |
| `misalign` | the inner face follows the head's yaw late and too little |
| `warp` | the inner face sits off the outline, shrunk, in a direction of the method's lineage |

Three compression levels, `raw`, `c23`, `c40`, are modelled as landmark noise and quantisation growing with
compression, plus a little temporal smoothing at c40; video i of a (split, method) is stored at level i mod 3
(FF++ stores every video at every level; one level per video keeps the embedded benchmark fast on a CPU while
every method has videos at every level). The files follow
LRNet's layout, `ROOT/<method>/<raw|c23|c40>/<train|val|test>/<video>.txt` (`Origin` = real, one frame of 136
values per line, 5 decimals), with `ROOT/timeline.yaml`, so the `landmarks:` source reads it like any
LRNet-style dataset. The build writes into a temporary directory renamed into place when complete; every file
comes from its own seed (split, class, index), so a rebuild is byte-identical.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

VERSION = 1
FPS = 25
COMPRESSIONS = ("raw", "c23", "c40")
# Landmark noise (σ, normalised units) and quantisation step per compression level.
COMPRESSION_NOISE = {"raw": (0.0015, 1 / 512), "c23": (0.003, 1 / 256), "c40": (0.006, 1 / 128)}
_SEED_DOMAIN = 0x4C4D_4B31  # "LMK1": separates these seed sequences from other uses of the same seed
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class MethodSpec:
    """One synthetic manipulation method: artifact families with their strengths in (0, 1]."""

    name: str
    date: dt.date
    families: dict = field(default_factory=dict)


def _d(s: str) -> dt.date:
    return dt.date.fromisoformat(s)


# `warp` angles (degrees): the direction in which a method's inner face sits off the outline; methods of one
# lineage share a direction, so a detector trained on one generalises partly to its successors.
METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("SwapAE-1", _d("2016-03-10"), {"warp": 1.0, "jitter": 1.0, "blink": 1.0, "angle": 90}),
    MethodSpec("ReenactNet-1", _d("2016-07-20"), {"damp": 1.0, "lag": 0.8, "warp": 0.6, "angle": 200}),
    MethodSpec("SwapAE-2", _d("2017-01-15"), {"warp": 0.9, "jitter": 0.8, "flicker": 0.8, "angle": 110}),
    MethodSpec("PuppetGAN-1", _d("2017-06-05"), {"lag": 1.0, "jitter": 0.5, "warp": 0.7, "angle": 220}),
    MethodSpec("SwapAE-3", _d("2017-12-11"), {"warp": 0.8, "flicker": 1.0, "blink": 0.6, "angle": 130}),
    MethodSpec("NeuralTex-1", _d("2018-05-03"), {"damp": 0.8, "drift": 0.6, "warp": 0.6, "angle": 330}),
    MethodSpec("ShiftSwap-1", _d("2018-10-22"), {"misalign": 1.0, "jitter": 0.4, "warp": 0.7, "angle": 150}),
    MethodSpec("ReenactNet-2", _d("2019-04-28"), {"lag": 0.7, "damp": 0.5, "warp": 0.5, "angle": 240}),
    MethodSpec("ShiftSwap-2", _d("2019-12-31"), {"misalign": 0.7, "drift": 0.5, "warp": 0.55, "angle": 170}),
    MethodSpec("DiffSwap-1", _d("2020-08-14"), {"drift": 1.0, "flicker": 0.4, "warp": 0.6, "angle": 0}),
    MethodSpec("TalkingHead-1", _d("2021-06-11"), {"lag": 0.5, "misalign": 0.45, "jitter": 0.3, "warp": 0.4,
                                                   "angle": 260}),
    MethodSpec("DiffSwap-2", _d("2022-09-30"), {"drift": 0.6, "flicker": 0.3, "damp": 0.3, "warp": 0.4,
                                                "angle": 20}),
)
FAMILIES = ("jitter", "flicker", "lag", "drift", "blink", "damp", "misalign", "warp")
WARP = 0.1  # offset of the inner face (normalised units) at strength 1; its scale changes by WARP too
JITTER = 0.035  # σ of the inner-face frame-to-frame noise at strength 1 (normalised units; a face is ~1.7 wide)
FLICKER = 0.035  # σ of the outline noise at strength 1


@dataclass(frozen=True)
class Preset:
    """Fake videos per method and split, reals per split; video i is stored at compression level i mod 3."""

    train: int
    val: int
    test: int
    real_train: int
    real_val: int
    real_test: int
    frames: tuple[int, int]  # frame count range (inclusive)


PRESETS: dict[str, Preset] = {
    # Reals: as many train reals as train fakes (each window draws unused reals), a balanced test split.
    "default": Preset(train=24, val=3, test=9, real_train=288, real_val=12, real_test=108, frames=(61, 100)),
    "smoke": Preset(train=3, val=1, test=3, real_train=36, real_val=6, real_test=36, frames=(61, 95)),
}

# --------------------------------------------------------------------------------------------- the face model
# A 68-point frontal face (iBUG order) in normalised coordinates (x right, y down), with a depth per point.
def _template() -> tuple[np.ndarray, np.ndarray]:
    jx = np.linspace(-0.85, 0.85, 17)  # jaw 0-16: a U from ear to ear through the chin
    jaw = np.stack([jx, -0.3 + 1.1 * np.sqrt(np.clip(1 - (jx / 0.88) ** 2, 0, 1))], axis=1)
    brows = [(-0.62 + 0.11 * i, -0.48 - 0.06 * np.sin(np.pi * i / 4)) for i in range(5)]
    brows += [(0.18 + 0.11 * i, -0.48 - 0.06 * np.sin(np.pi * i / 4)) for i in range(5)]
    nose = [(0.0, -0.33 + 0.11 * i) for i in range(4)] + [(-0.14 + 0.07 * i, 0.16 - 0.03 * abs(i - 2))
                                                            for i in range(5)]
    eye = [(-0.16, 0.0), (-0.08, -0.045), (0.02, -0.045), (0.1, 0.0), (0.02, 0.035), (-0.08, 0.035)]
    eyes = [(x - 0.26, y - 0.22) for x, y in eye] + [(x + 0.3, y - 0.22) for x, y in eye]
    mouth_outer = [(0.26 * np.cos(a), 0.45 + 0.09 * np.sin(a) * (1 if np.sin(a) > 0 else 0.8))
                   for a in np.linspace(np.pi, -np.pi, 13)[:-1]]
    mouth_inner = [(0.15 * np.cos(a), 0.45 + 0.03 * np.sin(a)) for a in np.linspace(np.pi, -np.pi, 9)[:-1]]
    xy = np.array([*map(tuple, jaw), *brows, *nose, *eyes, *mouth_outer, *mouth_inner], dtype=np.float64)
    assert xy.shape == (68, 2)
    z = 0.32 * np.exp(-(xy[:, 0] ** 2 + (xy[:, 1] + 0.05) ** 2) / 0.35) - 0.15
    z[27:36] += np.array([0.05, 0.1, 0.15, 0.2, 0.08, 0.12, 0.14, 0.12, 0.08])  # the nose stands out
    return xy, z


TEMPLATE_XY, TEMPLATE_Z = _template()
OUTLINE = np.arange(0, 17)
INNER = np.arange(17, 68)
UPPER_LIDS = np.array([37, 38, 43, 44])
LOWER_LIDS = np.array([40, 41, 46, 47])
BROWS = np.arange(17, 27)
LOWER_LIP = np.array([55, 56, 57, 58, 59, 65, 66, 67])
UPPER_LIP = np.array([49, 50, 51, 52, 53, 61, 62, 63])
CHIN = np.arange(5, 12)


def _smooth(rng: np.random.Generator, n: int, sigma_frames: float) -> np.ndarray:
    """Unit-variance smooth random signal: white noise low-passed by a Gaussian of sigma_frames."""
    x = gaussian_filter1d(rng.standard_normal(n + 200), sigma_frames, mode="wrap")[100:100 + n]
    return x / (x.std() + 1e-12)


def _delay(x: np.ndarray, d: int) -> np.ndarray:
    return x if d <= 0 else np.concatenate([np.repeat(x[:1], d, axis=0), x[:-d]])


def face_video(rng: np.random.Generator, frames: int, method: MethodSpec | None) -> np.ndarray:
    """(T, 68, 2) clean landmark trajectory of one video: a real one, or a fake with `method`'s artifacts."""
    s = {f: 0.0 for f in FAMILIES} | ({f: v for f, v in method.families.items() if f in FAMILIES} if method
                                       else {})
    t = frames
    # identity: a person's own shape
    shape = TEMPLATE_XY + 0.012 * rng.standard_normal((68, 2))
    shape *= np.array([rng.uniform(0.95, 1.05), rng.uniform(0.96, 1.04)])
    # speech: syllable-rate mouth opening inside speaking stretches
    speaking = _smooth(rng, t, 12) > rng.uniform(-0.6, 0.3)
    syll = np.clip(np.sin(2 * np.pi * np.cumsum(rng.uniform(3.0, 6.0, t)) / FPS) * 0.5 + 0.5, 0, 1)
    mouth = gaussian_filter1d(speaking * syll, 1.0)
    # blinks: ~one every 3 s, 5 frames each
    blink = np.zeros(t)
    for start in np.flatnonzero(rng.random(t) < 1.0 / (3.0 * FPS)):
        for k, v in enumerate((0.5, 1.0, 1.0, 0.7, 0.3)):
            if start + k < t:
                blink[start + k] = max(blink[start + k], v)
    brow = 0.5 * _smooth(rng, t, 20)
    # artifacts that act on the driving signals
    blink *= 1.0 - 0.9 * s["blink"]
    mouth_lips = _delay(mouth, int(round(10 * s["lag"])))
    mouth_lips = mouth_lips * (1.0 - 0.8 * s["damp"])
    mouth_jaw = mouth * (1.0 - 0.3 * s["damp"])
    brow *= 1.0 - 0.9 * s["damp"]
    # local (frontal) landmarks per frame
    local = np.repeat(shape[None], t, axis=0)
    local[:, LOWER_LIP, 1] += 0.11 * mouth_lips[:, None]
    local[:, UPPER_LIP, 1] -= 0.015 * mouth_lips[:, None]
    local[:, CHIN, 1] += 0.07 * mouth_jaw[:, None]
    eye_h = 0.07
    local[:, UPPER_LIDS, 1] += 0.85 * eye_h * blink[:, None]
    local[:, LOWER_LIDS, 1] -= 0.1 * eye_h * blink[:, None]
    local[:, BROWS, 1] -= 0.02 * brow[:, None]
    if s["drift"]:
        walk = gaussian_filter1d(np.cumsum(rng.standard_normal((t, 2)), axis=0), 6, axis=0)
        walk /= np.abs(walk).max() + 1e-9
        local[:, INNER] += 0.14 * s["drift"] * walk[:, None, :] * np.array([1.0, 0.7])
        local[:, INNER] *= (1.0 + 0.1 * s["drift"] * walk[:, :1, None])
    if s["warp"]:  # the swapped inner face does not sit where the outline expects it
        a = np.deg2rad(float(method.families.get("angle", 0.0)))
        centre = shape[INNER].mean(axis=0)
        local[:, INNER] = centre + (local[:, INNER] - centre) * (1.0 - WARP * s["warp"]) \
            + WARP * s["warp"] * np.array([np.cos(a), np.sin(a)])
    # head pose
    yaw = 0.2 * _smooth(rng, t, 18)
    pitch = 0.08 * _smooth(rng, t, 22)
    roll = 0.08 * _smooth(rng, t, 25)
    trans = 0.05 * np.stack([_smooth(rng, t, 30), _smooth(rng, t, 30)], axis=1)
    scale = 1.0 + 0.04 * _smooth(rng, t, 40)
    out = _project(local, TEMPLATE_Z, yaw, pitch, roll, trans, scale)
    if s["misalign"]:
        d = int(round(3 + 6 * s["misalign"]))
        inner_yaw = _delay(yaw, d) * (1.0 - 0.7 * s["misalign"])
        inner = _project(local, TEMPLATE_Z, inner_yaw, pitch, roll, trans, scale)
        out[:, INNER] = inner[:, INNER]
    if s["jitter"]:  # the blended inner face wobbles (at a method's own rate) and shakes
        a = np.deg2rad(float(method.families.get("angle", 0.0)) + 90.0)
        rate = 4.0 + (sum(map(ord, method.name)) % 5)  # 4..8 Hz
        wobble = np.sin(2 * np.pi * rate * np.arange(t) / FPS + rng.uniform(0, 2 * np.pi))
        out[:, INNER] += JITTER * s["jitter"] * (wobble[:, None, None] * np.array([np.cos(a), np.sin(a)])
                                                  + 0.5 * rng.standard_normal((t, INNER.size, 2)))
    if s["flicker"]:
        out[:, OUTLINE] += FLICKER * s["flicker"] * rng.standard_normal((t, OUTLINE.size, 2))
        jumps = rng.random(t) < 0.1 * s["flicker"]
        out[jumps, :17] += 2.5 * FLICKER * s["flicker"] * rng.standard_normal((int(jumps.sum()), 1, 2))
    return out


def _project(local: np.ndarray, z: np.ndarray, yaw, pitch, roll, trans, scale) -> np.ndarray:
    """Rotate the (T, 68) face with depth z in 3-D (yaw, pitch, roll), project orthographically, move and scale."""
    x, y = local[..., 0], local[..., 1]
    zz = np.broadcast_to(z, x.shape)
    cy, sy = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    x1, z1 = cy * x + sy * zz, -sy * x + cy * zz
    cp, sp = np.cos(pitch)[:, None], np.sin(pitch)[:, None]
    y1 = cp * y - sp * z1
    cr, sr = np.cos(roll)[:, None], np.sin(roll)[:, None]
    x2, y2 = cr * x1 - sr * y1, sr * x1 + cr * y1
    out = np.stack([x2, y2], axis=-1) * scale[:, None, None] + trans[:, None, :]
    return out


def compress(clean: np.ndarray, level: str, rng: np.random.Generator) -> np.ndarray:
    """(T, 136) landmarks as a detector would find them in a video compressed at `level`."""
    sigma, step = COMPRESSION_NOISE[level]
    x = clean.reshape(clean.shape[0], -1)
    if level == "c40":
        x = gaussian_filter1d(x, 0.7, axis=0, mode="nearest")
    x = x + sigma * rng.standard_normal(x.shape)
    return np.round(x / step) * step


def _text(arr: np.ndarray) -> bytes:
    return ("\n".join(" ".join(f"{v:.5f}" for v in row) for row in arr) + "\n").encode()


def _video_files(preset: Preset, seed: int, split: str, mi: int, idx: int) -> dict[str, bytes]:
    """{relative path: file bytes} of one video (mi = 0 real, else 1 + method), at compression level idx mod 3."""
    ss = np.random.SeedSequence([_SEED_DOMAIN, seed, _SPLIT_CODE[split], mi, idx])
    rng = np.random.default_rng(ss)
    frames = int(rng.integers(preset.frames[0], preset.frames[1] + 1))
    method = METHODS[mi - 1] if mi else None
    clean = face_video(rng, frames, method)
    folder = method.name if method else "Origin"
    name = f"{idx:03d}" if method is None else f"{idx:03d}_{(idx * 7 + mi * 13) % 1000:03d}"
    level = COMPRESSIONS[idx % len(COMPRESSIONS)]
    crng = np.random.default_rng(np.random.SeedSequence([_SEED_DOMAIN, seed, _SPLIT_CODE[split], mi, idx, 1]))
    return {f"{folder}/{level}/{split}/{name}.txt": _text(compress(clean, level, crng))}


def _plans(preset: Preset) -> list[tuple[str, int, int]]:
    plans = []
    for split in ("train", "val", "test"):
        n_real = {"train": preset.real_train, "val": preset.real_val, "test": preset.real_test}[split]
        n_fake = {"train": preset.train, "val": preset.val, "test": preset.test}[split]
        plans += [(split, 0, i) for i in range(n_real)]
        plans += [(split, mi, i) for mi in range(1, len(METHODS) + 1) for i in range(n_fake)]
    return plans


def dataset_dirname(preset: str, seed: int) -> str:
    return f"synthetic-landmarks-{preset}-seed{seed}-v{VERSION}"


def timeline_yaml() -> str:
    lines = ["# synthetic-landmarks manipulation methods and their (fictional) publication dates"]
    lines += [f"{m.name}: {m.date.isoformat()}" for m in METHODS]
    return "\n".join(lines) + "\n"


def build_synthetic_landmarks(datasets_dir: Path, preset: str = "default", seed: int = 0,
                              progress: bool = True) -> Path:
    """The dataset root (built on first use); a finished build has `.complete` holding its file digest."""
    if preset not in PRESETS:
        raise ValueError(f"unknown synthetic-landmarks preset {preset!r}; available: {sorted(PRESETS)}")
    root = Path(datasets_dir) / dataset_dirname(preset, seed)
    if (root / ".complete").is_file():
        return root
    plans = _plans(PRESETS[preset])
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    h = hashlib.sha256()
    try:
        tmp.mkdir(parents=True)
        for n, (split, mi, idx) in enumerate(plans):
            for rel, data in _video_files(PRESETS[preset], seed, split, mi, idx).items():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp / rel).write_bytes(data)
                h.update(rel.encode() + hashlib.sha256(data).digest())
            if progress and (n + 1) % 200 == 0:
                print(f"[synthetic-landmarks] {n + 1}/{len(plans)} videos ({time.perf_counter() - t0:.1f}s)",
                      file=sys.stderr)
        (tmp / "timeline.yaml").write_text(timeline_yaml())
        doc = {"version": VERSION, "preset": preset, "seed": seed, "files_sha256": h.hexdigest(),
               "methods": {m.name: {"date": m.date.isoformat(), "families": m.families} for m in METHODS}}
        (tmp / ".complete").write_text(json.dumps(doc, indent=1))
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        print(f"[synthetic-landmarks] built {len(plans)} videos in {time.perf_counter() - t0:.1f}s: {root}",
              file=sys.stderr)
    return root
