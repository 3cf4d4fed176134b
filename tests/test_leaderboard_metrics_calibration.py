"""Calibration and operating-point metrics: ECE, Brier, Cllr, Youden threshold, accuracy — against scikit-learn and
hand-computed cases — and their bootstrap replicates against explicit resampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss

from leaderboard import bootstrap as B
from leaderboard import continual as C
from leaderboard import metrics as M
from leaderboard import operating as O
from leaderboard.bench import fabricate_eval_set, window_scores
from leaderboard.groups import group_mask, named_group, window_generator_ids


def test_ece_equals_sklearn_calibration_curve_when_bins_are_equal():
    rng = np.random.default_rng(0)
    n = 150 * 15  # no ties and n a multiple of 15: every equal-mass bin holds n / 15 samples
    s = rng.random(n)
    y = (rng.random(n) < s ** 1.5).astype(int)  # miscalibrated on purpose
    prob_true, prob_pred = calibration_curve(y, s, n_bins=15, strategy="quantile")
    assert len(prob_true) == 15
    assert M.expected_calibration_error(y, s) == pytest.approx(np.mean(np.abs(prob_true - prob_pred)), abs=1e-12)
    mean_score, fraction, count = M.reliability_curve(y, s)
    np.testing.assert_allclose(mean_score, prob_pred, atol=1e-12)
    np.testing.assert_allclose(fraction, prob_true, atol=1e-12)
    assert (count == n // 15).all()


def test_ece_hand_computed_with_ties():
    # 2 bins: edges = percentiles 0, 50, 100 of [.2, .2, .2, .9] = .2, .2, .9; the tied .2s share bin 0.
    # bin 0: 3 samples, mean score .2, fraction fake 1/3; bin 1: one fake at .9.
    # ECE = 3/4 · |1/3 − .2| + 1/4 · |1 − .9| = 3/4 · 2/15 + 1/40 = 0.125
    assert M.expected_calibration_error([0, 1, 0, 1], [0.2, 0.2, 0.2, 0.9], n_bins=2) == pytest.approx(0.125)
    # no ties: [.1, .2 | .3, .4] with labels 0 1 | 0 1 -> |.5 − .15| / 2 + |.5 − .35| / 2 = 0.25
    assert M.expected_calibration_error([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], n_bins=2) == pytest.approx(0.25)
    assert M.expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0  # perfectly calibrated and confident


def test_brier_and_cllr():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    s = np.clip(rng.random(500) * 0.6 + 0.3 * y, 0, 1)
    assert M.brier_score(y, s) == pytest.approx(brier_score_loss(y, s), abs=1e-12)
    # Cllr = ½ [mean_fakes log2(1 + 1/LR) + mean_reals log2(1 + LR)], LR = s / (1 − s)
    lr = s / (1 - s)
    want = 0.5 * (np.mean(np.log2(1 + 1 / lr[y == 1])) + np.mean(np.log2(1 + lr[y == 0])))
    assert M.cllr(y, s) == pytest.approx(want, rel=1e-12)
    weights = np.where(y == 1, 1 / (y == 1).sum(), 1 / (y == 0).sum())
    assert M.cllr(y, s) == pytest.approx(log_loss(y, s, sample_weight=weights) / np.log(2), rel=1e-12)
    # hand case: fakes at .5 and .8, reals at .5 and .2: ½ (1 + log2 1.25) in both classes
    assert M.cllr([1, 1, 0, 0], [0.5, 0.8, 0.5, 0.2]) == pytest.approx(0.5 * (1 + math.log2(1.25)))
    assert M.cllr([1, 0], [0.5, 0.5]) == pytest.approx(1.0)  # an uninformative detector costs 1 bit


def test_youden_threshold_and_accuracy_hand_case():
    # fakes .9 .6 .4, reals .5 .3 .1: TPR − FPR peaks (2/3 − 0) between .6 and .5 (first maximum)
    y = [1, 1, 1, 0, 0, 0]
    s = [0.9, 0.6, 0.4, 0.5, 0.3, 0.1]
    assert M.youden_threshold(y, s) == pytest.approx(0.55)
    assert M.accuracy_at_threshold(y, s, 0.55) == pytest.approx(5 / 6)
    assert M.accuracy_at_threshold(y, s, 0.5) == accuracy_score(y, np.array(s) > 0.5)
    assert M.youden_threshold([1, 0], [0.3, 0.3]) < 0.3  # ties only: everything predicted fake
    assert math.isnan(M.youden_threshold([1, 1], [0.3, 0.4]))


def test_cell_metrics_carry_calibration():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 900)
    s = np.round(rng.random(900), 2)
    got = M.cell_metrics(y, s)
    assert got["ece"] == pytest.approx(M.expected_calibration_error(y, s), abs=1e-15)
    assert got["brier"] == pytest.approx(brier_score_loss(y, s), abs=1e-12)
    assert got["cllr"] == pytest.approx(M.cllr(y, s), abs=1e-15)
    assert got["accuracy_at_threshold"] == accuracy_score(y, s > 0.5)


def _run(n_images: int = 900, n_windows: int = 3, seed: int = 0) -> list[dict]:
    es = fabricate_eval_set(n_images, n_windows, per_window=2, seed=0)
    return [dict(es) | {"fused_scores": window_scores(es, k, 1.0, seed * 100 + k), "window": np.int64(k)}
            for k in range(n_windows)]


def test_past_threshold_on_seen_windows_then_applied_to_next():
    windows = _run()
    rows = {(k, m): v for k, g, m, v, _ in O.operating_rows(windows, 3)}
    for k in range(2):
        a = windows[k]
        seen = named_group(a, "seen", k).mask
        t = M.youden_threshold(a["fused_labels"][seen], a["fused_scores"][seen])
        assert rows[(k, "past_threshold")] == t
        ids = window_generator_ids(a["generator_id_to_name"], a["windows_timeline"])[k + 1]
        m = group_mask(a["fused_generator_ids"], a["pairing"], ids)
        y, pred = a["fused_labels"][m], a["fused_scores"][m] > t
        assert rows[(k, "accuracy_at_past_threshold")] == pytest.approx(accuracy_score(y, pred))
        assert rows[(k, "tpr_at_past_threshold")] == pytest.approx(pred[y == 1].mean())
        assert rows[(k, "fpr_at_past_threshold")] == pytest.approx(pred[y == 0].mean())
        assert rows[(k, "fpr_at_threshold")] == pytest.approx((a["fused_scores"][m][y == 0] > 0.5).mean())
    assert math.isnan(rows[(2, "past_threshold")])
    assert O.threshold_sources(windows) == ["seen-eval"] * 3


def test_validation_split_plugs_in_as_threshold_source():
    windows = _run()
    val = dict(windows[0]) | {"validation_labels": np.array([0, 0, 1, 1]),
                              "validation_scores": np.array([0.1, 0.7, 0.8, 0.9])}
    t, source, reason = O.past_threshold(val, 0)
    assert source == "validation" and reason is None and t == pytest.approx(0.75)
    assert O.threshold_sources([val, windows[1]]) == ["validation", "seen-eval"]
    with pytest.raises(ValueError, match="needs both"):
        O.past_threshold(dict(windows[0]) | {"validation_scores": np.array([0.1])}, 0)


def test_next_cell_aggregates_are_means_over_next_cells():
    windows = _run()
    ev = C.evaluate_run(windows)
    summary = ev.summary.set_index("aggregate")["value"]
    t = ev.table.set_index(["window", "group", "metric"])["value"]
    for name, metric in C.NEXT_CELL_AGGREGATES.items():
        assert summary[name] == pytest.approx(np.mean([t[(k, "next", metric)] for k in range(2)]), abs=1e-15)


def test_next_cell_replicates_equal_explicit_resampling():
    windows = _run(600)
    layout = B.eval_layout(windows[0])
    plan = B.make_plan(layout, n_replicates=5, seed=4)
    scores = [B.canonical_scores(a, layout) for a in windows]
    thresholds = [0.45, 0.6, float("nan")]
    reps = B.next_cell_replicates(plan.counts, scores, layout, thresholds)
    fb, rb = layout.fake_bounds, layout.real_bounds
    for k in range(2):
        rows = np.r_[np.arange(fb[k + 1], fb[k + 2]), np.arange(rb[k + 1], rb[k + 2])]
        s0 = scores[k][rows]
        bins0 = M.ece_bin_ids(s0)  # the original cell's bins, kept for every replicate
        for b in range(5):
            mult = plan.counts[rows, b].astype(int)
            y = np.repeat((layout.generator_ids[rows] != 0).astype(int), mult)
            s = np.repeat(s0, mult)
            bins = np.repeat(bins0, mult)
            assert reps["brier"][b, k] == pytest.approx(brier_score_loss(y, s), abs=1e-12)
            assert reps["cllr"][b, k] == pytest.approx(M.cllr(y, s), abs=1e-12)
            for metric, thr in (("accuracy_at_threshold", 0.5), ("accuracy_at_past_threshold", thresholds[k])):
                assert reps[metric][b, k] == pytest.approx(accuracy_score(y, s > thr), abs=1e-12)
            assert reps["tpr_at_past_threshold"][b, k] == pytest.approx((s[y == 1] > thresholds[k]).mean())
            assert reps["fpr_at_threshold"][b, k] == pytest.approx((s[y == 0] > 0.5).mean())
            ece = sum(abs((y[bins == i] - s[bins == i]).sum()) for i in range(15)) / y.size
            assert reps["ece"][b, k] == pytest.approx(ece, abs=1e-12)
    ones = B.next_cell_replicates(np.ones((layout.n, 1), np.uint8), scores, layout, thresholds)
    t = C.evaluate_run(windows).table.set_index(["window", "group", "metric"])["value"]
    assert ones["ece"][0, 0] == pytest.approx(t[(0, "next", "ece")], abs=1e-12)  # point = the cell's own ECE


def test_recentred_interval_contains_a_biased_point():
    rng = np.random.default_rng(3)
    reps = 0.12 + 0.01 * rng.standard_normal(1000)  # every replicate above the point value 0.09
    lo, hi = B.percentile_interval(reps)
    assert lo > 0.09
    lo, hi = B.recentred_interval(reps, 0.09)
    assert lo < 0.09 < hi and hi - lo == pytest.approx(np.subtract(*np.percentile(reps, [97.5, 2.5])))


def test_sorted_bins_equal_numpy_percentile_bins():
    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 15, 16, 97, 1000):
        for ties in (False, True):
            s = rng.random(n)
            if ties:
                s = np.round(s * 7) / 7
            s_desc = np.sort(s)[::-1]
            np.testing.assert_array_equal(M._sorted_ece_bin_ids(s_desc, 15), M.ece_bin_ids(s_desc, 15))
