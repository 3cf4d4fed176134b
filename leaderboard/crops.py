"""Crop-level predictions of a window (five_crop evaluation) and the input pipeline a file was scored with.

A genshift predictions.npz scored with several crops per image (schema 4) holds, beside the image-level fused_*
arrays, one row per crop (common.predictions_file.CROP_KEYS): crop_scores (float32 sigmoid P(fake)), crop_logits,
crop_to_image_index (row of the crop's image in the fused_* arrays), crop_identifiers, crop_labels,
crop_generator_ids. The image score is the mean of its crops' sigmoid scores (the reference's scores_fusion).
This module checks those arrays against the fused ones and summarises them; it reads arrays only.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from common.predictions_file import CROP_KEYS
from leaderboard.metrics import roc_auc

FUSION_TOL = 1e-6  # fused_scores are float32 means of float32 crop scores (computed in float64)


def has_crops(arrays: Mapping[str, np.ndarray]) -> bool:
    return "crop_to_image_index" in arrays and "crop_scores" in arrays


def pipeline_of(arrays: Mapping[str, np.ndarray], info: Mapping | None = None) -> dict:
    """{'pipeline', 'input', 'normalize', 'size'} of a window file (schema 4), else of run.json, else the native
    pipeline of files written before the pipeline was recorded (input/normalize unknown: '?')."""
    if "eval_pipeline" in arrays:
        return {"pipeline": str(arrays["eval_pipeline"]), "input": str(arrays.get("eval_input", "?")),
                "normalize": str(arrays.get("eval_normalize", "?")),
                "size": int(arrays["input_size"]) if "input_size" in arrays else None}
    rec = (info or {}).get("eval_pipeline")
    if rec:
        return {"pipeline": rec.get("pipeline", "native"), "input": rec.get("input", "?"),
                "normalize": rec.get("normalize", "?"), "size": rec.get("size")}
    det = (info or {}).get("detector", {}) or {}
    return {"pipeline": "native", "input": det.get("eval_input", "?"), "normalize": "backbone" if det else "?",
            "size": det.get("input_size")}


def validate_crop_arrays(arrays: Mapping[str, np.ndarray], where: str) -> None:
    """The crop arrays agree with the image arrays: every image has crops, in order, and its fused score is the
    mean of its crops' scores. Raises ValueError naming `where` and what is wrong."""
    missing = [k for k in CROP_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"{where}: crop-level arrays incomplete, missing {missing}")
    idx = np.asarray(arrays["crop_to_image_index"]).astype(np.int64)
    n_img = np.asarray(arrays["fused_scores"]).size
    lengths = {k: np.asarray(arrays[k]).shape for k in CROP_KEYS}
    if len({s for s in lengths.values()}) != 1 or len(lengths["crop_scores"]) != 1:
        raise ValueError(f"{where}: crop arrays must be 1-D and of equal length, got {lengths}")
    if idx.size and (idx.min() < 0 or idx.max() >= n_img or np.any(np.diff(idx) < 0)):
        raise ValueError(f"{where}: crop_to_image_index must be sorted rows of the {n_img} images")
    counts = np.bincount(idx, minlength=n_img)
    if np.any(counts == 0):
        raise ValueError(f"{where}: {int((counts == 0).sum())} images have no crop")
    for key, fused in (("crop_identifiers", "fused_identifiers"), ("crop_labels", "fused_labels"),
                       ("crop_generator_ids", "fused_generator_ids")):
        if not np.array_equal(np.asarray(arrays[key]), np.asarray(arrays[fused])[idx]):
            raise ValueError(f"{where}: {key} differ from {fused} of the crops' images")
    mean = np.bincount(idx, weights=np.asarray(arrays["crop_scores"], dtype=np.float64), minlength=n_img) / counts
    worst = float(np.abs(mean - np.asarray(arrays["fused_scores"], dtype=np.float64)).max()) if n_img else 0.0
    if worst > FUSION_TOL:
        raise ValueError(f"{where}: fused_scores are not the mean of their crop_scores (largest difference {worst:.3g})")


def crop_counts(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """Crops per image, aligned with the fused arrays (all ones for a file without crop arrays)."""
    n_img = np.asarray(arrays["fused_scores"]).size
    if not has_crops(arrays):
        return np.ones(n_img, dtype=np.int64)
    return np.bincount(np.asarray(arrays["crop_to_image_index"]).astype(np.int64), minlength=n_img)


def crop_frame(arrays: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """One row per crop: image row, crop number within the image, identifier, label, generator id, score, logit."""
    idx = np.asarray(arrays["crop_to_image_index"]).astype(np.int64)
    first = np.r_[0, np.flatnonzero(np.diff(idx)) + 1] if idx.size else np.zeros(0, dtype=np.int64)
    start = np.repeat(first, np.diff(np.r_[first, idx.size]))
    return pd.DataFrame({"image": idx, "crop": np.arange(idx.size) - start,
                         "identifier": np.asarray(arrays["crop_identifiers"]).astype(np.int64),
                         "label": np.asarray(arrays["crop_labels"]).astype(np.int64),
                         "generator_id": np.asarray(arrays["crop_generator_ids"]).astype(np.int64),
                         "score": np.asarray(arrays["crop_scores"]).astype(np.float64),
                         "logit": np.asarray(arrays["crop_logits"]).astype(np.float64)})


def crop_summary(arrays: Mapping[str, np.ndarray]) -> dict:
    """Crops per image, the fusion check, AUROC of the fused scores vs of every crop scored alone, and how much the
    crops of an image disagree (mean over images of max − min crop score)."""
    counts = crop_counts(arrays)
    frame = crop_frame(arrays)
    spread = frame.groupby("image")["score"].agg(lambda s: float(s.max() - s.min()))
    labels = np.asarray(arrays["fused_labels"]).astype(np.int64)
    return {"images": int(counts.size), "crops": int(counts.sum()),
            "crops_per_image": {int(c): int((counts == c).sum()) for c in np.unique(counts)},
            "fusion": "mean of the crops' sigmoid scores",
            "auroc_fused": roc_auc(labels, np.asarray(arrays["fused_scores"], dtype=np.float64)),
            "auroc_per_crop": roc_auc(frame["label"].to_numpy(), frame["score"].to_numpy()),
            "mean_crop_spread": float(spread.mean()) if len(spread) else float("nan")}


def crop_section(arrays: Mapping[str, np.ndarray]) -> str:
    """The `genshift inspect` lines about crops ('' for a single-crop file)."""
    if not has_crops(arrays):
        return ""
    s = crop_summary(arrays)
    per = ", ".join(f"{n} image(s) with {c} crop(s)" for c, n in sorted(s["crops_per_image"].items()))
    return (f"crops: {s['crops']} crops of {s['images']} images ({per}); image score = {s['fusion']} (checked)\n"
            f"  AUROC all images: fused {s['auroc_fused']:.4f}, every crop alone {s['auroc_per_crop']:.4f}; "
            f"mean spread of an image's crop scores (max − min) {s['mean_crop_spread']:.4f}")
