"""Reading AI-GenBench's own results: `experiments_data/experiment_<id>/window_<k>/predictions_validate_all.npz`.

Format (written by the reference's DeepFakePredictionsDump, one row per crop for `crop_*`, one per image
for `fused_*`): `crop_scores` (sigmoid P(fake)), `crop_generator_ids`, `crop_identifiers`, optionally
`crop_multiclass_predictions` (multiclass training), `fused_*`, `identifier` (= fused identifiers),
`pairing` (aligned with `identifier`: the paired generator id of a real, -1 for fakes and for reals left
unpaired), `generator_id_to_name` ('' first, then sorted names) and `windows_timeline` (names per window;
an object array of lists, readable only with pickle, when windows have unequal sizes).

Its evaluation script (`evaluate_predictions_utils.evaluate_predictions`) recomputes image scores from the
crops: consecutive crops with the same identifier are averaged (float32 mean), multiclass logits are
averaged then turned into P(fake) = 1 − softmax[real], and `pairing` is zipped positionally with the fused
images. `to_genshift_arrays` does the same, so our per-window AUROC equals the reference's. Reals with
pairing −1 are in no group of the reference (its script asserts they do not occur); they are dropped and
counted. Groups map as: immediate_future → `next` (the reference scores the last window on itself, our
`next_reference_variant_last_on_itself`), growing → `seen`, growing_whole → `seen_next` (the reference
falls back to `seen` at the last window), past → `past`, all → `all`.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
from scipy.special import softmax

from common import run_dir as layout
from common.safe_npz import read_npz

REFERENCE_FILE = "predictions_validate_all.npz"
_STEP_FILE = re.compile(r"predictions_validate_epoch=\d+-step=(\d+)\.npz")
GROUP_MAP: dict[str, str] = {
    "immediate_future": "next",
    "growing": "seen",
    "growing_whole": "seen_next",
    "past": "past",
    "all": "all",
}
PICKLE_KEYS = ("windows_timeline", "generator_id_to_name")


def find_reference_file(window_dir: Path) -> Path | None:
    """The reference's choice: predictions_validate_all.npz, else the highest-step per-epoch file."""
    window_dir = Path(window_dir)
    best = window_dir / REFERENCE_FILE
    if best.is_file():
        return best
    steps = [(int(m.group(1)), p) for p in window_dir.glob("*.npz") if (m := _STEP_FILE.fullmatch(p.name))]
    return max(steps)[1] if steps else None


def is_reference_experiment(path: Path) -> bool:
    """A directory without run.json whose window_0 holds a reference predictions file."""
    path = Path(path)
    return not layout.has_run_json(path) and find_reference_file(layout.window_dir(path, 0)) is not None


def _names(value: np.ndarray, key: str, path: Path) -> list:
    if value.dtype.kind == "U":
        return value.tolist()
    if value.dtype == object:
        out = value.tolist()
        flat = [x for item in out for x in (item if isinstance(item, (list, tuple)) else [item])]
        if not all(isinstance(x, str) for x in flat):
            raise ValueError(f"{path}: {key} must hold names (strings), found "
                             f"{sorted({type(x).__name__ for x in flat if not isinstance(x, str)})}")
        return out
    raise ValueError(f"{path}: {key} must hold strings, got dtype {value.dtype}")


def load_reference_npz(path: Path) -> dict[str, np.ndarray]:
    """Raw arrays of a reference file. Only the name arrays may be pickled object arrays (unequal windows); they
    are read by an allowlist unpickler that builds numpy arrays of plain values and nothing else (safe_npz)."""
    return read_npz(path, pickled_keys=PICKLE_KEYS)


def _fuse_crops(scores: np.ndarray, generator_ids: np.ndarray, identifiers: np.ndarray):
    """Average consecutive crops with the same identifier (float32 mean per image, as the reference)."""
    n = identifiers.shape[0]
    if n == 0:
        return scores[:0], generator_ids[:0], identifiers[:0]
    starts = np.r_[0, np.flatnonzero(identifiers[1:] != identifiers[:-1]) + 1]
    sizes = np.diff(np.r_[starts, n])
    fused = np.empty((starts.size, *scores.shape[1:]), dtype=scores.dtype)
    single = sizes == 1
    fused[single] = scores[starts[single]]
    for size in np.unique(sizes[~single]):
        sel = np.flatnonzero(sizes == size)
        rows = starts[sel][:, None] + np.arange(size)[None, :]
        fused[sel] = scores[rows].mean(axis=1)  # per-image mean over its crops, in the scores' dtype
    return fused, generator_ids[starts], identifiers[starts]


def _multiclass_to_p_fake(logits: np.ndarray) -> np.ndarray:
    """The reference's conversion: softmax over classes, mass of the fake classes, clipped to [0, 1]."""
    p = softmax(logits, axis=1)
    return np.clip(np.ravel(p[:, 1:].sum(axis=1)), 0.0, 1.0)


def to_genshift_arrays(raw: dict[str, np.ndarray], path: Path, window: int | None = None) -> dict[str, np.ndarray]:
    """Map a reference file's arrays to the genshift predictions keys (image level)."""
    path = Path(path)
    need = ["pairing", "generator_id_to_name", "windows_timeline"]
    missing = [k for k in need if k not in raw]
    if missing:
        raise ValueError(f"{path}: not an AI-GenBench predictions file, missing keys {missing}")
    if "crop_identifiers" in raw and ("crop_scores" in raw or "crop_multiclass_predictions" in raw):
        multiclass = "crop_multiclass_predictions" in raw
        crops = raw["crop_multiclass_predictions"] if multiclass else raw["crop_scores"]
        scores, gen, ids = _fuse_crops(crops, np.asarray(raw["crop_generator_ids"]), np.asarray(raw["crop_identifiers"]))
        if multiclass:
            scores = _multiclass_to_p_fake(scores)
        ref_ids = raw.get("identifier", raw.get("fused_identifiers"))
        if ref_ids is not None and not np.array_equal(np.asarray(ref_ids), ids):
            raise ValueError(
                f"{path}: images fused from consecutive crop_identifiers do not match 'identifier' "
                f"({ids.size} vs {np.asarray(ref_ids).size}); pairing cannot be aligned"
            )
    elif "fused_scores" in raw:
        scores = raw["fused_scores"]
        gen = np.asarray(raw["fused_generator_ids"])
        ids = np.asarray(raw.get("fused_identifiers", raw.get("identifier")))
    else:
        raise ValueError(f"{path}: neither crop_scores/crop_identifiers nor fused_scores present")
    scores = np.asarray(scores)
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.ndim != 1:
        raise ValueError(f"{path}: binary scores expected, got shape {scores.shape}")
    pairing = np.asarray(raw["pairing"]).astype(np.int64)
    if pairing.shape != gen.shape:
        raise ValueError(f"{path}: pairing has {pairing.size} entries for {gen.size} images")
    names = [str(x) for x in _names(np.asarray(raw["generator_id_to_name"]), "generator_id_to_name", path)]
    windows = [[str(g) for g in w] for w in _names(np.asarray(raw["windows_timeline"]), "windows_timeline", path)]
    width = max(len(w) for w in windows)
    timeline = np.array([w + [""] * (width - len(w)) for w in windows], dtype=str)
    gen = gen.astype(np.int64)
    keep = ~((gen == 0) & (pairing == -1))
    out = {
        "fused_scores": scores[keep].astype(np.float32 if scores.dtype == np.float32 else np.float64),
        "fused_labels": (gen[keep] != 0).astype(np.int64),
        "fused_generator_ids": gen[keep],
        "fused_identifiers": ids[keep].astype(np.int64),
        "pairing": pairing[keep],
        "generator_id_to_name": np.array(names, dtype=str),
        "windows_timeline": timeline,
        "n_unpaired_reals_dropped": np.int64((~keep).sum()),
    }
    if window is not None:
        out["window"] = np.int64(window)
    return out


def eval_set_digest(arrays: dict[str, np.ndarray]) -> str:
    """Stand-in for a manifest checksum: sha256 of the (identifier, generator, pairing) triples."""
    order = np.argsort(arrays["fused_identifiers"], kind="stable")
    h = hashlib.sha256()
    for key in ("fused_identifiers", "fused_generator_ids", "pairing"):
        h.update(np.ascontiguousarray(arrays[key][order], dtype=np.int64).tobytes())
    h.update("\n".join(arrays["generator_id_to_name"].tolist()).encode())
    return "aigenbench-eval:" + h.hexdigest()[:16]


def load_reference_window(path: Path, window: int | None = None) -> dict[str, np.ndarray]:
    """A reference predictions file as genshift arrays."""
    return to_genshift_arrays(load_reference_npz(path), path, window)
