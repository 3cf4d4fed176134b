"""Pixel-level localization metrics (F1, IoU, pixel AUROC) and the combined detection + localization scores.

Pure numpy, exact. Inputs are ground-truth masks (0/1 per pixel, 1 = altered) and predicted maps P(altered)
in [0, 1], one pair per image; images may differ in size but each map must match its mask.

Conventions (chosen to match IMDLBenCo, scu-zjz/IMDLBenCo ``evaluation/F1.py`` and ``IOU.py``, "origin" mode):

- A pixel is predicted altered iff its score > threshold (strict; the default threshold is 0.5), the same
  rule as the image-level metrics in ``leaderboard.metrics``.
- F1 = 2·TP / (2·TP + FP + FN), IoU = TP / (TP + FP + FN) of the altered class only (scikit-learn's
  ``f1_score`` / ``jaccard_score`` with ``average='binary'``).
- ``per_image`` (the default, as IMDLBenCo and the IJCAI 2025 forgery challenge report it): each metric is
  computed on each image and then averaged over images. ``pooled``: one confusion matrix / one ROC over
  every pixel of every image (large masks weigh more).
- Best-threshold F1 ("F1-best"): ``per_image`` lets every image choose its own threshold (an optimistic,
  oracle figure, as in MVSS-Net-style reports); ``pooled`` chooses one threshold shared by all pixels and
  returns it. At the best point, a pixel counts as altered iff score >= the returned threshold (thresholds
  are the distinct scores themselves).
- Undefined cases are NaN with a reason, never 0: an image whose mask has no altered pixel has no F1/IoU
  (recall is 0/0; IMDLBenCo's epsilon would silently give 0) and is left out of the per-image averages; an
  image whose mask is all-altered or all-clean has no pixel AUROC. The counts of images used are reported.

Two combined detection + localization scores:

- ``loupe_score`` — the IJCAI 2025 forgery detection and localization challenge's overall score as its winning
  solution, Loupe (Kamichanw/Loupe, ``src/lit_model.py`` and ``src/metric/``), computes it: (image AUROC +
  F1 + mean IoU) / 3, where the pixel terms are pooled over every pixel of the images whose mask has an altered
  pixel (other images are skipped): F1 of the altered class (scikit-learn ``f1_score``, binary) and the mean
  over the two classes, clean and altered, of their IoU (Hugging Face ``mean_iou`` with 2 labels: each class's
  summed intersection over its summed union). A pixel is altered iff P(altered) > 0.5 (``loupe_pixel_terms``).
- ``per_image_score`` — (image AUROC + per-image mean F1 + per-image mean IoU of the altered class) / 3, the
  IMDLBenCo-style per-image figures of this module (``per_image_localization_score``); not the challenge's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .metrics import roc_auc, roc_curve_points

DEFAULT_PIXEL_THRESHOLD = 0.5
MODES = ("per_image", "pooled")
# Keys of `localization_metrics` that hold float metrics (NaN when undefined), in table order.
PIXEL_METRIC_NAMES: tuple[str, ...] = ("pixel_f1", "pixel_f1_best", "pixel_iou", "pixel_auroc")

MapsLike = np.ndarray | Sequence[np.ndarray]


def _as_list(arrays: MapsLike, what: str) -> list[np.ndarray]:
    """A list of 2-D arrays from (N, H, W), (N, 1, H, W) or a sequence of (H, W) / (1, H, W) arrays."""
    if isinstance(arrays, np.ndarray):
        if arrays.ndim == 4 and arrays.shape[1] == 1:
            arrays = arrays[:, 0]
        if arrays.ndim != 3:
            raise ValueError(f"{what} must be (N, H, W), (N, 1, H, W) or a list of (H, W) arrays; "
                             f"got an array of shape {arrays.shape}")
        return list(arrays)
    out = []
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if a.ndim == 3 and a.shape[0] == 1:
            a = a[0]
        if a.ndim != 2:
            raise ValueError(f"{what}[{i}] must be a 2-D (H, W) map, got shape {a.shape}")
        out.append(a)
    return out


def _check_mask(m: np.ndarray, where: str) -> np.ndarray:
    if m.dtype.kind not in "biuf":
        raise ValueError(f"{where}: mask must be bool, integer or float 0/1, got dtype {m.dtype}")
    bad = (m != 0) & (m != 1)
    if bad.any():
        idx = np.argwhere(bad)[0]
        raise ValueError(f"{where}: mask must hold only 0 (clean) and 1 (altered); found {int(bad.sum())} other "
                         f"value(s), first {m[tuple(idx)]!r} at {tuple(int(i) for i in idx)} "
                         f"(a 0/255 PNG mask must be divided by 255 first)")
    return m.astype(bool)


def _check_score(s: np.ndarray, where: str) -> np.ndarray:
    if s.dtype.kind not in "iuf":
        raise ValueError(f"{where}: map must be a float array of P(altered), got dtype {s.dtype}")
    s = s.astype(np.float64, copy=False)
    if not np.isfinite(s).all():
        raise ValueError(f"{where}: map has {int((~np.isfinite(s)).sum())} non-finite value(s); must be finite")
    if s.size and (s.min() < 0.0 or s.max() > 1.0):
        raise ValueError(f"{where}: map values must be probabilities in [0, 1], got range [{s.min()!r}, "
                         f"{s.max()!r}] (apply a sigmoid to logit maps first)")
    return s


def _validate_pair(mask: object, score: object, where: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """(bool mask, float64 score) of one image, flattened, or ValueError saying what is wrong."""
    m, s = np.asarray(mask), np.asarray(score)
    if m.shape != s.shape:
        raise ValueError(f"{where}: mask shape {m.shape} differs from map shape {s.shape}; resize the map to "
                         f"the mask (ground-truth) size before scoring")
    if m.size == 0:
        raise ValueError(f"{where}: empty mask (no pixels)")
    return _check_mask(m, where).ravel(), _check_score(s, where).ravel()


def _validate_all(masks: MapsLike, maps: MapsLike) -> list[tuple[np.ndarray, np.ndarray]]:
    ml, sl = _as_list(masks, "masks"), _as_list(maps, "maps")
    if len(ml) != len(sl):
        raise ValueError(f"masks and maps differ in number of images: {len(ml)} vs {len(sl)}")
    return [_validate_pair(m, s, f"image {i}") for i, (m, s) in enumerate(zip(ml, sl, strict=True))]


def _counts(m: np.ndarray, s: np.ndarray, threshold: float) -> tuple[int, int, int]:
    pred = s > threshold
    tp = int(np.count_nonzero(pred & m))
    fp = int(np.count_nonzero(pred & ~m))
    fn = int(np.count_nonzero(~pred & m))
    return tp, fp, fn


def _f1(tp: int, fp: int, fn: int) -> float:
    return float(2 * tp / (2 * tp + fp + fn))


def _iou(tp: int, fp: int, fn: int) -> float:
    return float(tp / (tp + fp + fn))


def _best_f1(m: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """(best F1 over thresholds 'score >= t' for every distinct score t, that t); mask must be non-empty."""
    c = roc_curve_points(m.astype(np.int64), s)
    f1 = 2 * c.tps / (c.tps + c.fps + c.n_pos)  # FN = P - TP, so 2TP + FP + FN = TP + FP + P
    i = int(np.argmax(f1))
    return float(f1[i]), float(c.thresholds[i])


def _check_threshold(threshold: float) -> None:
    if not (0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")


def empty_mask_reason(mask: object) -> str | None:
    """Why F1/IoU of this mask are undefined (no altered pixel), or None."""
    m = _check_mask(np.asarray(mask), "mask")
    return None if m.any() else "mask has no altered pixel: F1/IoU undefined (recall 0/0)"


def pixel_f1(mask: object, score: object, threshold: float = DEFAULT_PIXEL_THRESHOLD) -> float:
    """F1 of one image, pixel altered iff score > threshold; NaN if the mask has no altered pixel."""
    _check_threshold(threshold)
    m, s = _validate_pair(mask, score)
    return _f1(*_counts(m, s, threshold)) if m.any() else float("nan")


def pixel_iou(mask: object, score: object, threshold: float = DEFAULT_PIXEL_THRESHOLD) -> float:
    """IoU (Jaccard) of the altered class of one image; NaN if the mask has no altered pixel."""
    _check_threshold(threshold)
    m, s = _validate_pair(mask, score)
    return _iou(*_counts(m, s, threshold)) if m.any() else float("nan")


def pixel_f1_best(mask: object, score: object) -> tuple[float, float]:
    """(best F1, its threshold t) of one image, pixel altered iff score >= t; (NaN, NaN) if mask is empty."""
    m, s = _validate_pair(mask, score)
    return _best_f1(m, s) if m.any() else (float("nan"), float("nan"))


def pixel_auroc(mask: object, score: object) -> float:
    """Pixel AUROC of one image (Mann–Whitney, ties 1/2); NaN if the mask is all-clean or all-altered."""
    m, s = _validate_pair(mask, score)
    return roc_auc(m.astype(np.int64), s)


def _nanmean(values: list[float]) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def localization_metrics(
    masks: MapsLike, maps: MapsLike, threshold: float = DEFAULT_PIXEL_THRESHOLD, mode: str = "per_image"
) -> dict[str, float | int | str | None]:
    """PIXEL_METRIC_NAMES over a set of images, averaged per image or pooled over pixels (see module doc).

    Returns the metrics plus ``n_images``, ``n_scored`` (images with an altered pixel, used for F1/IoU),
    ``n_auroc`` (images with both classes, per-image mode; pooled: 1 if defined), ``best_threshold`` (pooled
    only; NaN per image) and ``reason`` (None, or why every metric is NaN).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    _check_threshold(threshold)
    pairs = _validate_all(masks, maps)
    nan = float("nan")
    out: dict[str, float | int | str | None] = {k: nan for k in PIXEL_METRIC_NAMES}
    out.update(n_images=len(pairs), n_scored=0, n_auroc=0, best_threshold=nan, reason=None)
    scored = [(m, s) for m, s in pairs if m.any()]
    out["n_scored"] = len(scored)
    if not pairs:
        out["reason"] = "no images"
        return out
    if not scored:
        out["reason"] = f"no image has an altered pixel ({len(pairs)} image(s) with empty masks)"
        return out
    if mode == "per_image":
        counts = [_counts(m, s, threshold) for m, s in scored]
        aurocs = [roc_auc(m.astype(np.int64), s) for m, s in pairs]
        out["pixel_f1"] = _nanmean([_f1(*c) for c in counts])
        out["pixel_iou"] = _nanmean([_iou(*c) for c in counts])
        out["pixel_f1_best"] = _nanmean([_best_f1(m, s)[0] for m, s in scored])
        out["pixel_auroc"] = _nanmean(aurocs)
        out["n_auroc"] = int(np.count_nonzero(~np.isnan(aurocs)))
        return out
    m_all = np.concatenate([m for m, _ in pairs])
    s_all = np.concatenate([s for _, s in pairs])
    tp, fp, fn = _counts(m_all, s_all, threshold)
    out["pixel_f1"] = _f1(tp, fp, fn)
    out["pixel_iou"] = _iou(tp, fp, fn)
    out["pixel_f1_best"], out["best_threshold"] = _best_f1(m_all, s_all)
    out["pixel_auroc"] = roc_auc(m_all.astype(np.int64), s_all)
    out["n_auroc"] = int(not np.isnan(out["pixel_auroc"]))
    return out


def loupe_pixel_terms(masks: MapsLike, maps: MapsLike, threshold: float = DEFAULT_PIXEL_THRESHOLD) -> dict:
    """Loupe's pixel terms (module doc): ``loupe_f1``, ``loupe_miou``, ``loupe_iou_altered``, ``loupe_iou_clean``
    pooled over the images with an altered pixel, and ``n_loupe`` (how many); NaN (with ``reason``) if none."""
    _check_threshold(threshold)
    pairs = [(m, s) for m, s in _validate_all(masks, maps) if m.any()]
    nan = float("nan")
    out: dict = {"loupe_f1": nan, "loupe_miou": nan, "loupe_iou_altered": nan, "loupe_iou_clean": nan,
                 "n_loupe": len(pairs), "reason": None}
    if not pairs:
        out["reason"] = "no image has an altered pixel"
        return out
    tp = fp = fn = tn = 0
    for m, s in pairs:
        a, b, c = _counts(m, s, threshold)
        tp, fp, fn, tn = tp + a, fp + b, fn + c, tn + m.size - a - b - c
    out["loupe_f1"] = _f1(tp, fp, fn)  # tp + fn > 0: every image here has an altered pixel
    out["loupe_iou_altered"] = _iou(tp, fp, fn)
    out["loupe_iou_clean"] = tn / (tn + fn + fp) if tn + fn + fp else nan  # 0/0: no clean pixel anywhere
    out["loupe_miou"] = _nanmean([out["loupe_iou_altered"], out["loupe_iou_clean"]])
    return out


def _combined(image_auroc: float, a: float, b: float, names: tuple[str, str, str]) -> float:
    parts = (float(image_auroc), float(a), float(b))
    for name, v in zip(names, parts, strict=True):
        if not np.isnan(v) and not (0.0 <= v <= 1.0):
            raise ValueError(f"{name} must be in [0, 1] (or NaN), got {v!r}")
    return float("nan") if any(np.isnan(v) for v in parts) else float(sum(parts) / 3.0)


def loupe_score(image_auroc: float, loupe_f1: float, loupe_miou: float) -> float:
    """(image AUROC + pooled F1 + mean IoU of both classes) / 3, the IJCAI 2025 challenge score as Loupe computes
    it (terms from ``loupe_pixel_terms``); NaN if any part is NaN."""
    return _combined(image_auroc, loupe_f1, loupe_miou, ("image_auroc", "loupe_f1", "loupe_miou"))


def per_image_localization_score(image_auroc: float, pixel_f1_value: float, pixel_iou_value: float) -> float:
    """(image AUROC + per-image mean F1 + per-image mean IoU of the altered class) / 3; NaN if any part is NaN."""
    return _combined(image_auroc, pixel_f1_value, pixel_iou_value, ("image_auroc", "pixel_f1", "pixel_iou"))
