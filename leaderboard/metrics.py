"""Binary detection metrics for one cell (one model, one group of eval samples), in pure numpy.

Every metric is computed once on all scores of the cell, exactly (checked against scikit-learn in
tests). Labels: 1 = fake (positive), 0 = real. A cell with no samples or with a single class has no
ROC curve: every metric is NaN and `undefined_reason` says why; a metric is never reported as 0 for that.

Definitions (n_pos = P fakes, n_neg = N reals; "ROC points" are the points (FPR, TPR) obtained by
thresholding at every distinct score, highest first, plus the origin (0, 0)):

- ``roc_auc``: Mann–Whitney U / (P·N), i.e. the fraction of (fake, real) pairs in which the fake scores
  higher, tied pairs counting 1/2. Equal to the trapezoidal area under the ROC points.
- ``average_precision``: scikit-learn's step form, sum over distinct thresholds of
  (R_i − R_{i−1}) · P_i (no interpolation).
- ``tpr_tnr_at_threshold`` / ``balanced_accuracy``: a sample is predicted fake iff score > threshold
  (strict, as the AI-GenBench reference does); balanced accuracy = (TPR + TNR) / 2.
- ``tpr_at_fpr``: the highest TPR among ROC points whose FPR (computed as FP/N in float64) is <= the
  target; this is the value of the ROC step function at the target, never an interpolation.
- ``eer``: walking the ROC points from (0, 0), d = FNR − FPR goes from +1 to −1 without increasing. EER
  is the FPR (= FNR) where the straight segment between the last point with d > 0 and the first point
  with d <= 0 crosses d = 0 (exact FPR of that point when d == 0 there).
  Hand case: fakes scored [0.9, 0.5, 0.5], reals [0.5, 0.1] give ROC points (0,0), (0,1/3), (1/2,1),
  (1,1); d goes 1, 2/3, −1/2, so the crossing is 4/7 of the way from (0, 1/3) to (1/2, 1):
  FPR = 1/2·4/7 = 2/7 and FNR = 2/3·3/7 = 2/7, EER = 2/7.
- ``balanced_log_loss``: mean over the two classes of the per-class mean negative log-likelihood of
  P(fake), probabilities clipped to [eps, 1 − eps]; equal to scikit-learn's ``log_loss`` with sample
  weights 1/n_class.
- ``accuracy_at_threshold``: fraction of samples classified right at the threshold (score > threshold = fake).

Calibration (is P(fake) a probability one can act on?):

- ``ece``: expected calibration error with ``n_bins`` (default 15) equal-mass bins. The bin edges are the
  ``i/n_bins`` percentiles of the cell's scores (linear interpolation) and a score goes to the first bin whose
  upper edge is >= it, exactly as scikit-learn's ``calibration_curve(strategy="quantile")`` bins; tied scores
  always share a bin. ECE = Σ_bins (n_b / n) · |fraction of fakes in b − mean score in b|.
- ``brier``: mean of (P(fake) − label)², scikit-learn's ``brier_score_loss``.
- ``cllr``: log-likelihood-ratio cost in bits, reading the score as a posterior at prior ½, so its
  likelihood ratio is LR = s / (1 − s): Cllr = ½ [mean_fakes log2(1 + 1/LR) + mean_reals log2(1 + LR)].
  It equals ``balanced_log_loss`` / ln 2 (scores clipped the same way); 1 bit = an uninformative detector.
- ``youden_threshold``: the operating threshold that maximises TPR − FPR (Youden's J) on a labelled set,
  placed halfway between the last score predicted real and the lowest score predicted fake; used to fix a
  threshold on the windows seen so far and apply it to the next window.
- ``threshold_by_rule``: an operating threshold chosen on a labelled (validation) set by a named rule
  (`THRESHOLD_RULES`): ``eer`` (the ROC point where FNR and FPR are closest, the first one on a tie), ``fpr:x``
  (the point of highest TPR whose FPR <= x), ``youden`` (above), or a fixed number such as ``0.5``. The threshold
  is placed like Youden's, halfway between the last score predicted fake and the next lower score, so that the
  chosen point is reproduced exactly on the set it was chosen on (predict fake iff score > threshold).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_THRESHOLD = 0.5
DEFAULT_FPR_TARGETS: dict[str, float] = {"tpr_at_fpr_1pct": 0.01, "tpr_at_fpr_5pct": 0.05}
LOG_LOSS_EPS = 1e-15
DEFAULT_ECE_BINS = 15

def metric_names(fpr_keys: Iterable[str]) -> tuple[str, ...]:
    """Metric keys of `cell_metrics` in table order, with the given TPR-at-FPR keys."""
    return ("auroc", "average_precision", "balanced_accuracy", "accuracy_at_threshold", "tpr_at_threshold",
            "tnr_at_threshold", *fpr_keys, "eer", "balanced_log_loss", "ece", "brier", "cllr")


# Keys of `cell_metrics` whose value is a float metric (NaN when the cell is undefined), in table order.
METRIC_NAMES: tuple[str, ...] = metric_names(DEFAULT_FPR_TARGETS)
COUNT_NAMES: tuple[str, ...] = ("n", "n_fake", "n_real")


def _validate(y_true: object, y_score: object) -> tuple[np.ndarray, np.ndarray]:
    """Return (labels as int64 0/1, scores as float64) or raise ValueError saying what is wrong."""
    y = _validate_labels(y_true)
    s = np.asarray(y_score)
    if s.ndim != 1:
        raise ValueError(f"y_score must be 1-D, got shape {s.shape}")
    if s.shape[0] != y.shape[0]:
        raise ValueError(f"y_true and y_score differ in length: {y.shape[0]} labels vs {s.shape[0]} scores")
    if s.dtype.kind not in "iuf":
        raise ValueError(f"y_score must be an integer or float array, got dtype {s.dtype}")
    s = s.astype(np.float64, copy=False)
    bad = ~np.isfinite(s)
    if bad.any():
        idx = np.flatnonzero(bad)
        raise ValueError(
            f"y_score has {idx.size} non-finite value(s) (NaN/inf), first at index {int(idx[0])}: "
            f"{s[idx[0]]!r}; scores must be finite"
        )
    return y, s


def _validate_labels(y_true: object) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {y.shape}")
    if y.dtype.kind not in "biuf":
        raise ValueError(f"y_true must be a bool, integer or float array of 0/1, got dtype {y.dtype}")
    bad = (y != 0) & (y != 1)
    if bad.any():
        idx = np.flatnonzero(bad)
        raise ValueError(
            f"y_true must contain only 0 (real) and 1 (fake); found {idx.size} other value(s), "
            f"first {y[idx[0]]!r} at index {int(idx[0])}"
        )
    return y.astype(np.int64)


def _validate_probabilities(s: np.ndarray) -> None:
    if s.size and (s.min() < 0.0 or s.max() > 1.0):
        raise ValueError(
            f"scores must be probabilities P(fake) in [0, 1] for this metric; got range "
            f"[{s.min()!r}, {s.max()!r}] (apply a sigmoid to logits first)"
        )


def _reason(n_pos: int, n_neg: int) -> str | None:
    if n_pos + n_neg == 0:
        return "empty cell: no samples"
    if n_pos == 0:
        return f"single-class cell: 0 fakes ({n_neg} reals)"
    if n_neg == 0:
        return f"single-class cell: 0 reals ({n_pos} fakes)"
    return None


def undefined_reason(y_true: object) -> str | None:
    """Why metrics of a cell with these labels are undefined (empty or single class), or None if defined."""
    y = _validate_labels(y_true)
    n_pos = int(y.sum())
    return _reason(n_pos, int(y.size) - n_pos)


@dataclass(frozen=True)
class _Curve:
    """Cumulative counts at each distinct score, highest first (one sort of the cell)."""

    thresholds: np.ndarray  # distinct scores, descending
    tps: np.ndarray  # int64: fakes with score >= thresholds[i]
    fps: np.ndarray  # int64: reals with score >= thresholds[i]
    n_pos: int
    n_neg: int


def _descending(s: np.ndarray) -> np.ndarray:
    """Indices putting scores in descending order (ties keep no particular order: tie groups are merged)."""
    return np.argsort(s, kind="stable")[::-1]


def roc_curve_points(y: np.ndarray, s: np.ndarray) -> _Curve:
    order = _descending(s)
    return _curve_sorted(y[order], s[order])


def _curve_sorted(y_desc: np.ndarray, s_desc: np.ndarray) -> _Curve:
    """The curve of labels/scores already in descending score order."""
    n = s_desc.size
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return _Curve(np.zeros(0), empty, empty, 0, 0)
    ends = np.r_[np.flatnonzero(np.diff(s_desc)), n - 1]
    tps = np.cumsum(y_desc)[ends]
    fps = ends + 1 - tps
    return _Curve(s_desc[ends], tps, fps, int(tps[-1]), int(fps[-1]))


def _auroc(c: _Curve) -> float:
    # Per tie group: each real is beaten by the fakes strictly above it and ties with those in its group.
    pos_g = np.diff(c.tps, prepend=0)
    neg_g = np.diff(c.fps, prepend=0)
    twice_u = np.sum(neg_g * (2 * (c.tps - pos_g) + pos_g))  # exact int64: 2·U
    return float(twice_u / (2.0 * c.n_pos * c.n_neg))


def _average_precision(c: _Curve) -> float:
    precision = c.tps / (c.tps + c.fps)
    recall_steps = np.diff(c.tps, prepend=0) / c.n_pos
    return float(np.sum(recall_steps * precision))


def _tp_fp(c: _Curve, threshold: float) -> tuple[int, int]:
    m = int(np.count_nonzero(c.thresholds > threshold))  # groups predicted fake (thresholds descend)
    return (int(c.tps[m - 1]), int(c.fps[m - 1])) if m else (0, 0)


def _tpr_tnr(c: _Curve, threshold: float) -> tuple[float, float]:
    tp, fp = _tp_fp(c, threshold)
    return tp / c.n_pos, 1.0 - fp / c.n_neg


def _accuracy(c: _Curve, threshold: float) -> float:
    tp, fp = _tp_fp(c, threshold)
    return (tp + c.n_neg - fp) / (c.n_pos + c.n_neg)


def _tpr_at_fpr(c: _Curve, target: float) -> float:
    fpr = c.fps / c.n_neg
    m = int(np.count_nonzero(fpr <= target))  # fpr is non-decreasing: points 0..m-1 qualify
    return float(c.tps[m - 1] / c.n_pos) if m else 0.0


def _eer(c: _Curve) -> float:
    fps = np.r_[0, c.fps]
    tps = np.r_[0, c.tps]
    # sign of FNR - FPR = (P - tp)/P - fp/N, decided exactly in integers
    d_int = (c.n_pos - tps) * c.n_neg - fps * c.n_pos
    i = int(np.argmax(d_int <= 0))  # first point with d <= 0 (exists: the last point has d = -P·N)
    fpr = fps / c.n_neg
    if d_int[i] == 0:
        return float(fpr[i])
    fnr = 1.0 - tps / c.n_pos
    d0 = fnr[i - 1] - fpr[i - 1]
    d1 = fnr[i] - fpr[i]
    t = d0 / (d0 - d1)
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def _balanced_log_loss(y: np.ndarray, s: np.ndarray, eps: float) -> float:
    p = np.clip(s, eps, 1.0 - eps)
    fake = y == 1
    loss_fake = -np.mean(np.log(p[fake]))
    loss_real = -np.mean(np.log1p(-p[~fake]))
    return float(0.5 * (loss_fake + loss_real))


def ece_bin_ids(s: np.ndarray, n_bins: int = DEFAULT_ECE_BINS) -> np.ndarray:
    """Equal-mass bin of every score (0..n_bins-1), scikit-learn's quantile binning (see module doc)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    edges = np.percentile(s, np.linspace(0.0, 100.0, n_bins + 1))
    return np.searchsorted(edges[1:-1], s)


def _sorted_ece_bin_ids(s_desc: np.ndarray, n_bins: int) -> np.ndarray:
    """`ece_bin_ids` of scores already in descending order: the percentiles read off the sorted array with
    numpy's linear interpolation (the same arithmetic as np.percentile), without its partition."""
    asc = s_desc[::-1]
    q = np.linspace(0.0, 100.0, n_bins + 1)[1:-1] / 100.0
    virtual = q * (asc.size - 1)
    lo = np.floor(virtual).astype(np.int64)
    hi = np.minimum(lo + 1, asc.size - 1)
    gamma = virtual - lo
    a, b = asc[lo], asc[hi]
    diff = b - a
    edges = np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)  # numpy's _lerp
    return np.searchsorted(edges, s_desc)


def _ece(y: np.ndarray, s: np.ndarray, n_bins: int, s_sorted: bool = False) -> float:
    bins = _sorted_ece_bin_ids(s, n_bins) if s_sorted else ece_bin_ids(s, n_bins)
    gap = np.bincount(bins, weights=y - s, minlength=n_bins)  # per bin: n_b · (fraction fake − mean score)
    return float(np.abs(gap).sum() / s.size)


def _brier(y: np.ndarray, s: np.ndarray) -> float:
    return float(np.mean((s - y) ** 2))


def _reliability(y: np.ndarray, s: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bins = ece_bin_ids(s, n_bins)
    total = np.bincount(bins, minlength=n_bins)
    keep = total > 0
    mean_score = np.bincount(bins, weights=s, minlength=n_bins)[keep] / total[keep]
    fraction = np.bincount(bins, weights=y, minlength=n_bins)[keep] / total[keep]
    return mean_score, fraction, total[keep]


def _youden(c: _Curve) -> float:
    j = c.tps * c.n_neg - c.fps * c.n_pos  # (TPR − FPR) · P · N, exact in integers
    i = int(np.argmax(j))  # first maximum: the highest threshold reaching it
    if i + 1 < c.thresholds.size:
        return float(0.5 * (c.thresholds[i] + c.thresholds[i + 1]))
    return float(np.nextafter(c.thresholds[i], -np.inf))  # every sample predicted fake


def _check_fpr_target(fpr: float) -> None:
    if not (0.0 <= fpr <= 1.0):
        raise ValueError(f"fpr target must be in [0, 1], got {fpr!r}")


def _defined_curve(y_true: object, y_score: object) -> _Curve | None:
    y, s = _validate(y_true, y_score)
    c = roc_curve_points(y, s)
    return None if _reason(c.n_pos, c.n_neg) else c


def roc_auc(y_true: object, y_score: object) -> float:
    """AUROC as Mann–Whitney U/(P·N), ties counted 1/2; NaN for empty or single-class input."""
    c = _defined_curve(y_true, y_score)
    return float("nan") if c is None else _auroc(c)


def average_precision(y_true: object, y_score: object) -> float:
    """Average precision in scikit-learn's step form; NaN for empty or single-class input."""
    c = _defined_curve(y_true, y_score)
    return float("nan") if c is None else _average_precision(c)


def tpr_tnr_at_threshold(
    y_true: object, y_score: object, threshold: float = DEFAULT_THRESHOLD
) -> tuple[float, float]:
    """(TPR, TNR) predicting fake iff score > threshold; (NaN, NaN) for empty or single-class input."""
    c = _defined_curve(y_true, y_score)
    return (float("nan"), float("nan")) if c is None else _tpr_tnr(c, threshold)


def balanced_accuracy(y_true: object, y_score: object, threshold: float = DEFAULT_THRESHOLD) -> float:
    """(TPR + TNR)/2 predicting fake iff score > threshold; NaN for empty or single-class input."""
    tpr, tnr = tpr_tnr_at_threshold(y_true, y_score, threshold)
    return 0.5 * (tpr + tnr)


def tpr_at_fpr(y_true: object, y_score: object, fpr: float) -> float:
    """Highest TPR among ROC points with FPR <= fpr (ROC step function); NaN for undefined input."""
    _check_fpr_target(fpr)
    c = _defined_curve(y_true, y_score)
    return float("nan") if c is None else _tpr_at_fpr(c, fpr)


def eer(y_true: object, y_score: object) -> float:
    """Equal error rate, linearly interpolated on the ROC segment where FNR − FPR changes sign."""
    c = _defined_curve(y_true, y_score)
    return float("nan") if c is None else _eer(c)


def balanced_log_loss(y_true: object, y_score: object, eps: float = LOG_LOSS_EPS) -> float:
    """Mean of the per-class mean log-losses of P(fake) clipped to [eps, 1−eps]; NaN if undefined."""
    y, s = _validate(y_true, y_score)
    _validate_probabilities(s)
    n_pos = int(y.sum())
    if _reason(n_pos, y.size - n_pos):
        return float("nan")
    order = _descending(s)  # sum in descending score order, as cell_metrics does: the same last bits
    return _balanced_log_loss(y[order], s[order], eps)


def accuracy_at_threshold(y_true: object, y_score: object, threshold: float = DEFAULT_THRESHOLD) -> float:
    """Fraction classified right, predicting fake iff score > threshold; NaN for empty or single-class input."""
    c = _defined_curve(y_true, y_score)
    return float("nan") if c is None else _accuracy(c, threshold)


def _probabilities(y_true: object, y_score: object) -> tuple[np.ndarray, np.ndarray] | None:
    """Validated (labels, P(fake)) in descending score order, or None for an empty or single-class cell."""
    y, s = _validate(y_true, y_score)
    _validate_probabilities(s)
    n_pos = int(y.sum())
    if _reason(n_pos, y.size - n_pos):
        return None
    order = _descending(s)  # the order cell_metrics sums in: the same last bits
    return y[order], s[order]


def expected_calibration_error(y_true: object, y_score: object, n_bins: int = DEFAULT_ECE_BINS) -> float:
    """ECE with `n_bins` equal-mass bins (module doc); NaN for empty or single-class input."""
    ys = _probabilities(y_true, y_score)
    return float("nan") if ys is None else _ece(ys[0], ys[1], n_bins)


def brier_score(y_true: object, y_score: object) -> float:
    """Mean squared error of P(fake) against the label; NaN for empty or single-class input."""
    ys = _probabilities(y_true, y_score)
    return float("nan") if ys is None else _brier(ys[0], ys[1])


def cllr(y_true: object, y_score: object, eps: float = LOG_LOSS_EPS) -> float:
    """Log-likelihood-ratio cost in bits, LR = s/(1 − s) (module doc); NaN for empty or single-class input."""
    ys = _probabilities(y_true, y_score)
    return float("nan") if ys is None else _balanced_log_loss(ys[0], ys[1], eps) / np.log(2.0)


def reliability_curve(
    y_true: object, y_score: object, n_bins: int = DEFAULT_ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean score, fraction of fakes, count) of every non-empty equal-mass bin, as ECE bins them."""
    ys = _probabilities(y_true, y_score)
    if ys is None:
        empty = np.zeros(0)
        return empty, empty, np.zeros(0, dtype=np.int64)
    return _reliability(ys[0], ys[1], n_bins)


def roc_points(y_true: object, y_score: object) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct score, highest first, from the origin; empty arrays if undefined."""
    c = _defined_curve(y_true, y_score)
    if c is None:
        return np.zeros(0), np.zeros(0)
    return np.r_[0.0, c.fps / c.n_neg], np.r_[0.0, c.tps / c.n_pos]


def youden_threshold(y_true: object, y_score: object) -> float:
    """Threshold maximising TPR − FPR (predict fake iff score > it); NaN for empty or single-class input."""
    c = _defined_curve(y_true, y_score)
    return float("nan") if c is None else _youden(c)


THRESHOLD_RULES = ("eer", "fpr:<x>", "youden", "<number in [0, 1]>")


def parse_threshold_rule(rule: str) -> tuple[str, float | None]:
    """("eer" | "fpr" | "youden" | "fixed", parameter) of a rule text; ValueError naming the allowed forms."""
    text = str(rule).strip().lower()
    if text in ("eer", "youden"):
        return text, None
    try:
        if text.startswith("fpr:"):
            x = float(text[4:])
            if 0.0 <= x < 1.0:
                return "fpr", x
        else:
            t = float(text)
            if 0.0 <= t <= 1.0:
                return "fixed", t
    except ValueError:
        pass
    raise ValueError(f"threshold rule {rule!r}: expected eer, fpr:<x> with 0 <= x < 1, youden, or a fixed threshold "
                     "in [0, 1] such as 0.5")


def _threshold_after(c: _Curve, i: int) -> float:
    """The threshold that predicts fake exactly the score groups 0..i (i = -1: none)."""
    if i < 0:
        return float(c.thresholds[0])
    if i + 1 < c.thresholds.size:
        return float(0.5 * (c.thresholds[i] + c.thresholds[i + 1]))
    return float(np.nextafter(c.thresholds[i], -np.inf))


def _eer_point(c: _Curve) -> int:
    # |FNR − FPR| · P · N exactly in integers, at "none fake" (-1) and after every score group
    tps, fps = np.r_[0, c.tps], np.r_[0, c.fps]
    gap = np.abs((c.n_pos - tps) * c.n_neg - fps * c.n_pos)
    return int(np.argmin(gap)) - 1


def _fpr_point(c: _Curve, target: float) -> int:
    return int(np.count_nonzero(c.fps / c.n_neg <= target)) - 1  # fpr never decreases along the curve


def threshold_by_rule(y_true: object, y_score: object, rule: str) -> float:
    """The threshold a rule chooses on a labelled set (module doc); NaN for empty or single-class input, except a
    fixed threshold, which needs no data."""
    kind, x = parse_threshold_rule(rule)
    if kind == "fixed":
        return float(x)
    c = _defined_curve(y_true, y_score)
    if c is None:
        return float("nan")
    if kind == "youden":
        return _youden(c)
    return _threshold_after(c, _eer_point(c) if kind == "eer" else _fpr_point(c, float(x)))


def threshold_by_rule_from_counts(levels: object, n_pos: object, n_neg: object, rule: str) -> float:
    """`threshold_by_rule` of a set given as counts: n_pos[i] positives and n_neg[i] negatives score levels[i]
    (e.g. the 256 levels of uint8-quantised maps: millions of pixels in a few hundred numbers). Same result as
    `threshold_by_rule` on the expanded samples."""
    kind, x = parse_threshold_rule(rule)
    if kind == "fixed":
        return float(x)
    lv = np.asarray(levels, dtype=np.float64)
    pos = np.asarray(n_pos, dtype=np.int64)
    neg = np.asarray(n_neg, dtype=np.int64)
    if lv.ndim != 1 or pos.shape != lv.shape or neg.shape != lv.shape:
        raise ValueError(f"levels, n_pos and n_neg must be 1-D of equal length, got {lv.shape} {pos.shape} {neg.shape}")
    if pos.sum() == 0 or neg.sum() == 0:
        return float("nan")
    used = (pos + neg) > 0
    order = np.argsort(lv[used], kind="stable")[::-1]
    lv, pos, neg = lv[used][order], pos[used][order], neg[used][order]
    if np.any(np.diff(lv) >= 0):
        raise ValueError("levels must be distinct")
    c = _Curve(lv, np.cumsum(pos), np.cumsum(neg), int(pos.sum()), int(neg.sum()))
    if kind == "youden":
        return _youden(c)
    return _threshold_after(c, _eer_point(c) if kind == "eer" else _fpr_point(c, float(x)))


def _fpr_targets(fpr_targets: dict[str, float] | None) -> dict[str, float]:
    targets = DEFAULT_FPR_TARGETS if fpr_targets is None else fpr_targets
    for target in targets.values():
        _check_fpr_target(target)
    return targets


def _metrics_of_sorted(
    y_desc: np.ndarray, s_desc: np.ndarray, threshold: float, targets: dict[str, float]
) -> dict[str, float | int | str | None]:
    """`cell_metrics` of a validated cell given in descending score order."""
    c = _curve_sorted(y_desc, s_desc)
    reason = _reason(c.n_pos, c.n_neg)
    out: dict[str, float | int | str | None] = {"n": int(y_desc.size), "n_fake": c.n_pos, "n_real": c.n_neg}
    if reason is not None:
        out.update({k: float("nan") for k in metric_names(targets)})
        out["reason"] = reason
        return out
    tpr, tnr = _tpr_tnr(c, threshold)
    out["auroc"] = _auroc(c)
    out["average_precision"] = _average_precision(c)
    out["balanced_accuracy"] = 0.5 * (tpr + tnr)
    out["accuracy_at_threshold"] = _accuracy(c, threshold)
    out["tpr_at_threshold"] = tpr
    out["tnr_at_threshold"] = tnr
    for key, target in targets.items():
        out[key] = _tpr_at_fpr(c, target)
    out["eer"] = _eer(c)
    out["balanced_log_loss"] = _balanced_log_loss(y_desc, s_desc, LOG_LOSS_EPS)
    out["ece"] = _ece(y_desc, s_desc, DEFAULT_ECE_BINS, s_sorted=True)
    out["brier"] = _brier(y_desc, s_desc)
    out["cllr"] = out["balanced_log_loss"] / np.log(2.0)
    out["reason"] = None
    return out


def cell_metrics(
    y_true: object,
    y_score: object,
    threshold: float = DEFAULT_THRESHOLD,
    fpr_targets: dict[str, float] | None = None,
) -> dict[str, float | int | str | None]:
    """All metrics of one cell from a single sort: counts, METRIC_NAMES values and "reason".

    Scores must be probabilities P(fake) in [0, 1]. For an empty or single-class cell every metric is
    NaN and "reason" says why; otherwise "reason" is None. `fpr_targets` maps output key -> FPR target
    (default: tpr_at_fpr_1pct and tpr_at_fpr_5pct).
    """
    targets = _fpr_targets(fpr_targets)
    y, s = _validate(y_true, y_score)
    _validate_probabilities(s)
    order = _descending(s)
    return _metrics_of_sorted(y[order], s[order], threshold, targets)


def cell_metrics_by_key(
    y_true: object,
    y_score: object,
    sample_keys: object,
    cells: Sequence[Iterable[int]],
    threshold: float = DEFAULT_THRESHOLD,
    fpr_targets: dict[str, float] | None = None,
) -> list[dict[str, float | int | str | None]]:
    """`cell_metrics` of several cells of one sample set, from one sort.

    Every sample has a non-negative integer key (`sample_keys`, e.g. the generator it belongs to); a cell
    is the set of samples whose key is in one of `cells`. A cell's samples in descending score order are
    a subsequence of the whole set's descending order: a one-key cell is a slice of a per-key block, a
    larger cell one table look-up and a compress. The values are exactly those of `cell_metrics` on the
    cell's samples.
    """
    targets = _fpr_targets(fpr_targets)
    y, s = _validate(y_true, y_score)
    _validate_probabilities(s)
    keys = np.asarray(sample_keys)
    if keys.shape != y.shape or keys.dtype.kind not in "iu" or (keys.size and keys.min() < 0):
        raise ValueError(
            f"sample_keys must be non-negative integers of shape {y.shape}, got {keys.dtype} {keys.shape}"
        )
    order = _descending(s)
    y_desc, s_desc, keys_desc = y[order], s[order], keys[order]
    # Per key, its samples' positions in descending score order, as contiguous blocks (one stable sort):
    # a one-key cell (e.g. one generator) is a slice, without scanning the whole set.
    by_key = np.argsort(keys_desc, kind="stable")
    n_keys = int(keys.max()) + 1 if keys.size else 1
    bounds = np.r_[0, np.cumsum(np.bincount(keys_desc, minlength=n_keys))]
    table = np.zeros(n_keys, dtype=bool)
    out = []
    for cell in cells:
        ids = np.unique(np.asarray(list(cell), dtype=np.int64))
        ids = ids[(ids >= 0) & (ids < n_keys)]  # keys no sample has select nothing
        if ids.size == 1:
            rows = by_key[bounds[ids[0]] : bounds[ids[0] + 1]]
            out.append(_metrics_of_sorted(y_desc[rows], s_desc[rows], threshold, targets))
            continue
        table[ids] = True
        keep = table[keys_desc]
        table[ids] = False
        out.append(_metrics_of_sorted(y_desc[keep], s_desc[keep], threshold, targets))
    return out
