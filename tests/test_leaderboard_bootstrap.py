"""Stratified bootstrap: weighted AUROC exact against scikit-learn on explicit resamples, CI behaviour, pairing."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from leaderboard import bootstrap as B
from leaderboard import continual as C
from leaderboard.bench import fabricate_eval_set, window_scores


def _run(n_images: int, n_windows: int = 3, skill: float = 1.0, seed: int = 0, ties: bool = False) -> list[dict]:
    es = fabricate_eval_set(n_images, n_windows, per_window=2, seed=0)
    out = []
    for k in range(n_windows):
        s = window_scores(es, k, skill, seed * 100 + k)
        if ties:
            s = (np.round(s * 20) / 20).astype(np.float32)  # heavy ties across classes
        out.append(dict(es) | {"fused_scores": s, "window": np.int64(k)})
    return out


@pytest.mark.parametrize("ties", [False, True])
def test_replicate_auroc_equals_sklearn_on_explicit_resample(ties):
    windows = _run(600, ties=ties)
    layout = B.eval_layout(windows[0])
    plan = B.make_plan(layout, n_replicates=7, seed=3)
    boot = B.bootstrap_run(windows, plan)
    counts = plan.counts
    fb, rb = layout.fake_bounds, layout.real_bounds
    for k in range(3):
        s = B.canonical_scores(windows[k], layout)
        for b in range(7):
            rep = np.repeat(np.arange(layout.n), counts[:, b])
            for j in range(3):  # every window's cell, seen and unseen
                sel = rep[((rep >= fb[j]) & (rep < fb[j + 1])) | ((rep >= rb[j]) & (rep < rb[j + 1]))]
                y = (layout.generator_ids[sel] != 0).astype(int)
                assert boot.r[b, k, j] == pytest.approx(roc_auc_score(y, s[sel]), abs=1e-12)
            sel = rep[(rep < fb[k + 1]) | ((rep >= rb[0]) & (rep < rb[k + 1]))]
            y = (layout.generator_ids[sel] != 0).astype(int)
            assert boot.seen[b, k] == pytest.approx(roc_auc_score(y, s[sel]), abs=1e-12)
            if k < 2:
                sel = rep[((rep >= fb[k + 1]) & (rep < fb[3])) | (rep >= rb[k + 1])]
                y = (layout.generator_ids[sel] != 0).astype(int)
                assert boot.future[b, k] == pytest.approx(roc_auc_score(y, s[sel]), abs=1e-12)


def test_strata_sizes_are_kept():
    windows = _run(600)
    layout = B.eval_layout(windows[0])
    plan = B.make_plan(layout, n_replicates=20, seed=1)
    counts = plan.counts.astype(int)
    bounds = np.r_[layout.fake_bounds, layout.real_bounds[1:]]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        assert (counts[lo:hi].sum(axis=0) == hi - lo).all()


def test_point_estimates_match_continual_and_cis_contain_them():
    windows = _run(1500, ties=True)
    layout = B.eval_layout(windows[0])
    summary = C.evaluate_run(windows).summary.set_index("aggregate")["value"]
    point = B.point_estimates(windows, layout)
    for name in B.AGGREGATES:
        if name == "fwt":  # no untrained model scored
            assert np.isnan(point[name]) and np.isnan(summary[name])
            continue
        assert point[name] == pytest.approx(summary[name], abs=1e-12), name
    plan = B.make_plan(layout, n_replicates=1000, seed=0)
    ci = B.confidence_intervals(B.bootstrap_run(windows, plan), point).set_index("aggregate")
    for name in ("next", "seen_average", "future_average", "bwt", "forgetting"):
        lo, hi = ci.loc[name, "ci_low"], ci.loc[name, "ci_high"]
        assert lo <= ci.loc[name, "value"] <= hi, name
        assert hi > lo


def test_cis_shrink_with_more_samples():
    widths = []
    for n in (800, 8000):
        windows = _run(n)
        layout = B.eval_layout(windows[0])
        plan = B.make_plan(layout, n_replicates=300, seed=0)
        ci = B.confidence_intervals(B.bootstrap_run(windows, plan), B.point_estimates(windows, layout))
        widths.append((ci["ci_high"] - ci["ci_low"]).to_numpy())
    assert (widths[1][[0, 2, 3]] < 0.6 * widths[0][[0, 2, 3]]).all()  # next, seen avg, future avg


def test_seeded_and_paired_difference():
    a, b = _run(1200, seed=0), _run(1200, skill=0.6, seed=1)
    layout = B.eval_layout(a[0])
    plan = B.make_plan(layout, n_replicates=200, seed=5)
    assert np.array_equal(plan.counts, B.make_plan(layout, 200, seed=5).counts)
    ba, bb = B.bootstrap_run(a, plan), B.bootstrap_run(b, plan)
    pa, pb = B.point_estimates(a, layout), B.point_estimates(b, layout)
    same = B.paired_difference(ba, B.bootstrap_run(a, plan), "next", pa["next"], pa["next"])
    assert same["difference"] == 0.0 and same["ci_low"] == 0.0 and same["ci_high"] == 0.0
    d = B.paired_difference(ba, bb, "next", pa["next"], pb["next"])
    assert d["difference"] == pytest.approx(pa["next"] - pb["next"])
    assert d["ci_low"] <= d["difference"] <= d["ci_high"]
    other = B.bootstrap_run(a, B.make_plan(layout, 200, seed=6))
    with pytest.raises(ValueError, match="same plan"):
        B.paired_difference(ba, other, "next", 0, 0)


def test_incomplete_run_and_foreign_eval_set():
    windows = _run(600)
    layout = B.eval_layout(windows[0])
    plan = B.make_plan(layout, n_replicates=10)
    boot = B.bootstrap_run(windows[:2], plan)
    assert not boot.complete and np.isnan(boot.aggregates["next"]).all()
    other = dict(windows[0]) | {"fused_identifiers": windows[0]["fused_identifiers"] + 1}
    with pytest.raises(ValueError, match="identifiers differ"):
        B.canonical_scores(other, layout)
