"""The operating point on the next window: a threshold fixed on the past, applied to the generators that come next.

After training window k a deployed detector runs at one threshold, chosen on data it already has. genshift
takes the threshold that maximises TPR − FPR (Youden's J, `leaderboard.metrics.youden_threshold`) on

- the run's validation split as scored after window k, when the window's predictions.npz carries it: keys
  `validation_scores` (float P(fake)) and `validation_labels` (0 real, 1 fake) — source ``validation``;
- otherwise the eval images of the windows seen so far (group `seen`, windows 0..k) — source ``seen-eval``,
  reported under that name: those images are also the seen cells of the table, so the threshold is tuned on
  evaluation images of the past, never on the next window's.

It is then applied to the NEXT cell (window k+1): accuracy, TPR and FPR at that threshold, beside the same at
0.5, show how the operating point of a deployed detector drifts on generators it has not seen. A validation
split only needs the two keys above in each window's file; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from leaderboard.groups import group_mask, named_group, window_generator_ids
from leaderboard.metrics import DEFAULT_THRESHOLD, tpr_tnr_at_threshold, undefined_reason, youden_threshold

VALIDATION_KEYS = ("validation_scores", "validation_labels")
SOURCES = ("validation", "seen-eval")
# Rows of group `next` per window k < K-1 (windows.csv): the threshold, and the NEXT cell's rates at it and at 0.5.
OPERATING_METRICS = ("past_threshold", "accuracy_at_past_threshold", "tpr_at_past_threshold",
                     "fpr_at_past_threshold", "fpr_at_threshold")


def has_validation(arrays: Mapping[str, np.ndarray]) -> bool:
    """Whether a window's arrays carry a scored validation split (both VALIDATION_KEYS)."""
    return all(key in arrays for key in VALIDATION_KEYS)


def threshold_data(arrays: Mapping[str, np.ndarray], k: int, source: str = "window") -> tuple[np.ndarray, np.ndarray, str]:
    """(labels, scores, source name) the threshold after window k is fitted on (module doc)."""
    if has_validation(arrays):
        y = np.asarray(arrays["validation_labels"])
        s = np.asarray(arrays["validation_scores"])
        if y.ndim != 1 or s.shape != y.shape or s.dtype.kind != "f":
            raise ValueError(f"{source}: validation_labels / validation_scores must be 1-D of equal length (float "
                             f"scores), got {y.dtype} {y.shape} / {s.dtype} {s.shape}")
        return y, s, "validation"
    if any(key in arrays for key in VALIDATION_KEYS):
        raise ValueError(f"{source}: has only one of {list(VALIDATION_KEYS)}; a validation split needs both")
    mask = named_group(arrays, "seen", k).mask
    return np.asarray(arrays["fused_labels"])[mask], np.asarray(arrays["fused_scores"])[mask], "seen-eval"


def past_threshold(arrays: Mapping[str, np.ndarray], k: int) -> tuple[float, str, str | None]:
    """(threshold, source, reason it is undefined or None) fixed after window k on the past."""
    y, s, source = threshold_data(arrays, k, f"window {k}")
    reason = undefined_reason(y)
    if reason is not None:
        return float("nan"), source, f"no threshold from {source} data: {reason}"
    return youden_threshold(y, s), source, None


def threshold_sources(windows: Sequence[Mapping[str, np.ndarray]]) -> list[str]:
    """The source of each window's threshold ("validation" or "seen-eval")."""
    return ["validation" if has_validation(a) else "seen-eval" for a in windows]


def _rates(y: np.ndarray, s: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """(accuracy, TPR, FPR) predicting fake iff score > threshold."""
    tpr, tnr = tpr_tnr_at_threshold(y, s, threshold)
    n_fake = int(y.sum())
    n_real = y.size - n_fake
    return (tpr * n_fake + tnr * n_real) / y.size, tpr, 1.0 - tnr


def operating_rows(windows: Sequence[Mapping[str, np.ndarray]], n_windows: int) -> list[tuple]:
    """Rows (k, "next", metric, value, reason) of OPERATING_METRICS for every evaluated window k."""
    rows: list[tuple] = []
    for k, arrays in enumerate(windows):
        if k == n_windows - 1:
            why = f"no next window after the last window k={k}"
            rows += [(k, "next", m, float("nan"), why) for m in OPERATING_METRICS]
            continue
        ids = window_generator_ids(arrays["generator_id_to_name"], arrays["windows_timeline"])[k + 1]
        mask = group_mask(arrays["fused_generator_ids"], arrays["pairing"], ids)
        y = np.asarray(arrays["fused_labels"])[mask].astype(np.int64)
        s = np.asarray(arrays["fused_scores"])[mask].astype(np.float64)
        t, _, reason = past_threshold(arrays, k)
        cell_reason = undefined_reason(y)
        fpr_05 = float("nan") if cell_reason else _rates(y, s, DEFAULT_THRESHOLD)[2]
        rows.append((k, "next", "past_threshold", t, reason))
        rows.append((k, "next", "fpr_at_threshold", fpr_05, cell_reason))
        if reason is None and cell_reason is None:
            acc, tpr, fpr = _rates(y, s, t)
        else:
            acc = tpr = fpr = float("nan")
        why = reason or cell_reason
        rows += [(k, "next", "accuracy_at_past_threshold", acc, why), (k, "next", "tpr_at_past_threshold", tpr, why),
                 (k, "next", "fpr_at_past_threshold", fpr, why)]
    return rows
