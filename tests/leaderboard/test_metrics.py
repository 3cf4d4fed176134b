"""Cell metrics against scikit-learn and hand-computed cases, including heavy ties and undefined cells."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    log_loss,
    roc_auc_score,
    roc_curve,
)

from leaderboard import metrics as M

TOL = dict(rel=1e-12, abs=1e-12)


def _random_cases(n_cases: int, seed: int):
    """Yield (y, s) with both classes present: mixed sizes, heavy ties, class imbalance."""
    rng = np.random.default_rng(seed)
    sizes = [2, 3, 5, 8, 13, 40, 200, 1000, 5000]
    for i in range(n_cases):
        n = sizes[i % len(sizes)]
        frac = rng.uniform(0.05, 0.95)
        y = (rng.random(n) < frac).astype(int)
        y[0], y[1] = 0, 1  # both classes present
        rng.shuffle(y)
        shift = rng.uniform(0, 2)
        s = 1 / (1 + np.exp(-(rng.normal(size=n) + shift * y)))
        decimals = (1, 2, 3, None)[i % 4]  # 1 decimal: at most 11 distinct values -> heavy ties
        if decimals is not None:
            s = np.round(s, decimals)
        yield y, s


def _sk_tpr_at_fpr(y, s, target):
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return tpr[fpr <= target].max()


def _segment_eer(y, s):
    """Independent EER: intersect every ROC segment (sklearn points) with the line FNR = FPR, in a loop."""
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    fnr = 1 - tpr
    for i in range(1, len(fpr)):
        d0, d1 = fnr[i - 1] - fpr[i - 1], fnr[i] - fpr[i]
        if d0 > 0 >= d1:
            t = d0 / (d0 - d1)
            return fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    raise AssertionError("no crossing")


def test_against_sklearn_many_random_cases_with_ties():
    for y, s in _random_cases(120, seed=0):
        got = M.cell_metrics(y, s)
        assert got["reason"] is None
        assert got["auroc"] == pytest.approx(roc_auc_score(y, s), **TOL)
        assert got["average_precision"] == pytest.approx(average_precision_score(y, s), **TOL)
        pred = (s > 0.5).astype(int)
        assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred), **TOL)
        assert got["tpr_at_threshold"] == pytest.approx(pred[y == 1].mean(), **TOL)
        assert got["tnr_at_threshold"] == pytest.approx(1 - pred[y == 0].mean(), **TOL)
        assert got["tpr_at_fpr_1pct"] == pytest.approx(_sk_tpr_at_fpr(y, s, 0.01), **TOL)
        assert got["tpr_at_fpr_5pct"] == pytest.approx(_sk_tpr_at_fpr(y, s, 0.05), **TOL)
        assert got["eer"] == pytest.approx(_segment_eer(y, s), **TOL)
        w = np.where(y == 1, 1 / (y == 1).sum(), 1 / (y == 0).sum())
        sc = np.clip(s, 1e-15, 1 - 1e-15)
        assert got["balanced_log_loss"] == pytest.approx(log_loss(y, sc, sample_weight=w), rel=1e-10)
        assert (got["n"], got["n_fake"], got["n_real"]) == (len(y), int(y.sum()), int((1 - y).sum()))


def test_standalone_functions_equal_cell_metrics():
    for y, s in _random_cases(18, seed=1):
        cell = M.cell_metrics(y, s)
        assert M.roc_auc(y, s) == cell["auroc"]
        assert M.average_precision(y, s) == cell["average_precision"]
        assert M.balanced_accuracy(y, s) == cell["balanced_accuracy"]
        assert M.tpr_tnr_at_threshold(y, s) == (cell["tpr_at_threshold"], cell["tnr_at_threshold"])
        assert M.tpr_at_fpr(y, s, 0.05) == cell["tpr_at_fpr_5pct"]
        assert M.eer(y, s) == cell["eer"]
        assert M.balanced_log_loss(y, s) == cell["balanced_log_loss"]


def test_auroc_is_mann_whitney_brute_force():
    rng = np.random.default_rng(2)
    for _ in range(30):
        n = int(rng.integers(2, 30))
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        s = rng.integers(0, 4, n).astype(float)  # 4 distinct values: many ties
        pos, neg = s[y == 1], s[y == 0]
        diff = pos[:, None] - neg[None, :]
        u = (diff > 0).sum() + 0.5 * (diff == 0).sum()
        assert M.roc_auc(y, s) == pytest.approx(u / (len(pos) * len(neg)), **TOL)


def test_all_tied_scores():
    y = np.array([0, 1, 0, 1, 1])
    s = np.full(5, 0.7)
    got = M.cell_metrics(y, s)
    assert got["auroc"] == 0.5
    assert got["average_precision"] == pytest.approx(average_precision_score(y, s), **TOL)
    assert got["eer"] == pytest.approx(0.5)  # single diagonal segment from (0,0) to (1,1)
    assert got["tpr_at_fpr_5pct"] == 0.0  # only the origin has FPR <= 5 %


def test_invariance_to_order_and_monotone_transforms():
    rank_keys = ["auroc", "average_precision", "tpr_at_fpr_1pct", "tpr_at_fpr_5pct", "eer"]
    rng = np.random.default_rng(3)
    for y, s in _random_cases(27, seed=4):
        base = M.cell_metrics(y, s)
        perm = rng.permutation(len(y))
        permuted = M.cell_metrics(y[perm], s[perm])
        for key in M.METRIC_NAMES:
            assert permuted[key] == pytest.approx(base[key], **TOL), key
        # strictly increasing maps of [0, 1] into [0, 1]: rank metrics must not change
        for f in (np.sqrt, lambda x: x**3, lambda x: 0.2 + 0.5 * x):
            moved = M.cell_metrics(y, f(s))
            for key in rank_keys:
                assert moved[key] == pytest.approx(base[key], **TOL), key
        logits = np.log(np.clip(s, 1e-6, None)) * 7 - 3  # unbounded monotone transform
        if len(np.unique(np.clip(s, 1e-6, None))) == len(np.unique(s)):
            assert M.roc_auc(y, logits) == pytest.approx(base["auroc"], **TOL)
            assert M.eer(y, logits) == pytest.approx(base["eer"], **TOL)


def test_eer_hand_computed_interpolated_cases():
    # Docstring case: ROC points (0,0), (0,1/3), (1/2,1), (1,1); crossing 4/7 along the second segment.
    y = np.array([1, 1, 1, 0, 0])
    s = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    assert M.eer(y, s) == pytest.approx(2 / 7, abs=1e-15)
    # Symmetric tie: points (0,0), (0,1/2), (1/2,1), (1,1); crossing half-way: EER = 1/4.
    assert M.eer([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1]) == pytest.approx(0.25, abs=1e-15)
    # Crossing exactly at a point: FPR = FNR = 1/3.
    assert M.eer([0, 0, 0, 1, 1, 1], [0.1, 0.4, 0.6, 0.35, 0.8, 0.9]) == pytest.approx(1 / 3, abs=1e-15)
    # Perfect and inverted separation.
    assert M.eer([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert M.eer([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 1.0


def test_tpr_at_fpr_hand_case_and_bounds():
    # reals 0.1..1.0 (10), fakes [0.95, 0.85, 0.55]; ROC: fp=1 at 1.0 (tp 0), fakes 0.95 then fp=2 at 0.9...
    reals = np.linspace(0.1, 1.0, 10)
    fakes = np.array([0.95, 0.85, 0.55])
    y = np.r_[np.zeros(10, int), np.ones(3, int)]
    s = np.r_[reals, fakes]
    assert M.tpr_at_fpr(y, s, 0.0) == 0.0
    assert M.tpr_at_fpr(y, s, 0.1) == pytest.approx(1 / 3)  # after 0.95: fp=1, tp=1
    assert M.tpr_at_fpr(y, s, 0.19) == pytest.approx(1 / 3)
    assert M.tpr_at_fpr(y, s, 0.2) == pytest.approx(2 / 3)  # after 0.85: fp=2, tp=2
    assert M.tpr_at_fpr(y, s, 1.0) == 1.0
    with pytest.raises(ValueError, match="fpr target"):
        M.tpr_at_fpr(y, s, 1.5)


def test_balanced_accuracy_threshold_is_strict():
    y = np.array([0, 1])
    assert M.tpr_tnr_at_threshold(y, [0.5, 0.5]) == (0.0, 1.0)  # 0.5 is not > 0.5: predicted real
    assert M.balanced_accuracy(y, [0.4, 0.6]) == 1.0
    assert M.balanced_accuracy(y, [0.4, 0.6], threshold=0.7) == 0.5


def test_balanced_log_loss_hand_case_and_clipping():
    y = np.array([1, 1, 0])
    s = np.array([0.5, 0.25, 0.5])
    expected = 0.5 * ((math.log(2) + math.log(4)) / 2 + math.log(2))
    assert M.balanced_log_loss(y, s) == pytest.approx(expected, rel=1e-14)
    clipped = M.balanced_log_loss([1, 0], [0.0, 1.0])
    # 1 - 1e-15 is not exact in float64, hence log1p on the clipped value rather than log(1e-15) twice
    assert clipped == pytest.approx(0.5 * (-math.log(1e-15) - math.log1p(-(1 - 1e-15))), rel=1e-14)


@pytest.mark.parametrize(
    "y, reason",
    [
        ([], "empty cell"),
        ([0, 0, 0], "0 fakes (3 reals)"),
        ([1], "0 reals (1 fakes)"),
    ],
)
def test_undefined_cells_are_nan_with_reason(y, reason):
    s = np.linspace(0, 1, len(y))
    assert reason in M.undefined_reason(y)
    got = M.cell_metrics(y, s)
    assert reason in got["reason"]
    for key in M.METRIC_NAMES:
        assert math.isnan(got[key]), key
    for f in (M.roc_auc, M.average_precision, M.balanced_accuracy, M.eer, M.balanced_log_loss):
        assert math.isnan(f(y, s))
    assert math.isnan(M.tpr_at_fpr(y, s, 0.01))
    assert M.undefined_reason([0, 1]) is None


@pytest.mark.parametrize(
    "y, s, match",
    [
        ([[0, 1]], [[0.1, 0.2]], "y_true must be 1-D"),
        ([0, 1], [[0.1, 0.2]], "y_score must be 1-D"),
        ([0, 1, 1], [0.1, 0.2], "differ in length"),
        ([0, 2], [0.1, 0.2], "only 0 \\(real\\) and 1 \\(fake\\)"),
        ([0, 1], [0.1, np.nan], "non-finite"),
        ([0, 1], [0.1, np.inf], "non-finite"),
        (["a", "b"], [0.1, 0.2], "y_true must be"),
        ([0, 1], ["x", "y"], "y_score must be"),
    ],
)
def test_bad_input_raises_clear_error(y, s, match):
    with pytest.raises(ValueError, match=match):
        M.cell_metrics(y, s)
    with pytest.raises(ValueError, match=match):
        M.roc_auc(y, s)


def test_probability_range_checked_for_probability_metrics():
    with pytest.raises(ValueError, match="probabilities"):
        M.cell_metrics([0, 1], [-2.0, 3.0])
    with pytest.raises(ValueError, match="probabilities"):
        M.balanced_log_loss([0, 1], [0.2, 1.5])
    assert M.roc_auc([0, 1], [-2.0, 3.0]) == 1.0  # rank metrics accept any real score


def test_large_n_exact_and_float32_input():
    rng = np.random.default_rng(5)
    n = 200_000
    y = rng.integers(0, 2, n)
    s = np.round(rng.random(n) * 0.5 + 0.3 * y, 3).astype(np.float32)
    assert M.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), **TOL)
    assert M.average_precision(y, s) == pytest.approx(average_precision_score(y, s), **TOL)
    assert M.eer(y, s) == pytest.approx(_segment_eer(y, s), **TOL)


def test_cell_metrics_by_key_equals_cell_metrics_on_each_cell():
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 3000)
    s = np.round(rng.random(3000), 2)  # heavy ties, across classes
    keys = rng.integers(0, 12, 3000)
    cells = [[3], [0, 5, 7], range(12), [], [40], [1, 2, 3, 4, 5, 6]]
    got = M.cell_metrics_by_key(y, s, keys, cells)
    for cell, values in zip(cells, got, strict=True):
        sel = np.isin(keys, list(cell))
        want = M.cell_metrics(y[sel], s[sel])
        assert values.keys() == want.keys()
        for key, value in want.items():
            assert values[key] == value or (value != value and values[key] != values[key]), key
    with pytest.raises(ValueError, match="non-negative integers of shape"):
        M.cell_metrics_by_key(y, s, keys[:10], cells)
