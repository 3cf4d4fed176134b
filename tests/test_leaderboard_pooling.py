"""Seeds pooled into one row: mean ± sd over seeds and the two-level bootstrap (checked against a slow loop)."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from leaderboard import cli
from leaderboard import pooling as P
from leaderboard.bench import fabricate_eval_set, fabricate_run
from leaderboard.report import build_leaderboard

N_REP = 40


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    es = fabricate_eval_set(600, 3, per_window=2)
    runs = [fabricate_run(root / f"cfg__seed{s}", es, skill=0.8, seed=s, detector="tiny_tune") for s in range(3)]
    other = fabricate_run(root / "other", es, skill=0.3, seed=0, detector="other_probe")
    return root, runs, other


def _next_on_resample(arrays_by_k, counts_b):
    """NEXT of one run on one explicit resample (multiplicities counts_b in each window's own row order)."""
    values = []
    for k in range(len(arrays_by_k) - 1):
        a = arrays_by_k[k]
        gen, pair = a["fused_generator_ids"], a["pairing"]
        owner = np.where(gen == 0, pair, gen)
        members = a["windows_timeline"][k + 1]
        ids = [list(a["generator_id_to_name"]).index(n) for n in members if n]
        m = np.isin(owner, ids)
        y = np.repeat(a["fused_labels"][m], counts_b[m])
        s = np.repeat(a["fused_scores"][m], counts_b[m])
        values.append(roc_auc_score(y, s))
    return float(np.mean(values))


def test_two_level_bootstrap_equals_slow_reference_loop(seeded):
    _, runs, _ = seeded
    lb = build_leaderboard(runs, n_replicates=N_REP, seed=7)
    assert len(lb.configurations) == 1
    conf = lb.configurations[0]
    assert [r.seed for r in conf.records] == [0, 1, 2]
    plan = next(iter(lb.plans.values()))
    draws = P.seed_draws(3, N_REP, 7, conf.records[0].configuration)
    assert draws.shape == (N_REP, 3) and len(np.unique(draws)) > 1
    layout = plan.layout
    row_of = {int(i): r for r, i in enumerate(layout.identifiers)}  # identifier -> canonical row of the plan
    slow = []
    for b in range(N_REP):  # the reference: draw seeds, then score each drawn seed on resample b, average
        per_seed = []
        for i in draws[b]:
            arrays = conf.records[i].windows
            rows = [row_of[int(i)] for i in arrays[0]["fused_identifiers"]]
            counts_b = plan.counts[rows, b].astype(int)  # multiplicities in the file's own row order
            per_seed.append(_next_on_resample(arrays, counts_b))
        slow.append(np.mean(per_seed))
    np.testing.assert_allclose(conf.pooled["next"].replicates, slow, atol=1e-12)
    lo, hi = np.percentile(slow, [2.5, 97.5])
    row = lb.summary.iloc[0]
    assert row["next_ci_low"] == pytest.approx(lo) and row["next_ci_high"] == pytest.approx(hi)


def test_pooled_row_mean_sd_and_per_seed_rows(seeded, tmp_path):
    root, runs, other = seeded
    parser = argparse.ArgumentParser(prog="genshift")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["leaderboard", *map(str, [*runs, other]), "--out", str(tmp_path), "--replicates",
                              str(N_REP), "--per-seed", "--quiet"])
    assert args.handler(args) == 0
    csv = pd.read_csv(tmp_path / "leaderboard.csv")
    assert len(csv) == 2
    pooled = csv[csv["n_seeds"] == 3].iloc[0]
    assert pooled["experiment"] == "cfg__seed{0,1,2}" and pooled["seeds"] == "0,1,2"
    per_seed = pd.read_csv(tmp_path / "leaderboard_per_seed.csv")
    assert len(per_seed) == 4 and (per_seed["n_seeds"] == 1).all()
    seeds = per_seed[per_seed["experiment"].str.startswith("cfg__")].set_index("experiment")
    for agg in ("next", "bwt", "ece", "brier", "cllr", "next_accuracy_at_past_threshold"):
        assert pooled[agg] == pytest.approx(seeds[agg].mean(), abs=1e-12)
        assert pooled[f"{agg}_sd"] == pytest.approx(seeds[agg].std(ddof=1), abs=1e-12)
    assert pooled["next_ci_low"] <= pooled["next"] <= pooled["next_ci_high"]
    assert np.isnan(per_seed["next_sd"]).all()
    md = (tmp_path / "leaderboard.md").read_text()
    assert "### Per seed" in md and f"{pooled['next']:.3f} ±" in md
    html = (tmp_path / "leaderboard.html").read_text()
    assert "<table id='per-seed'>" in html


def test_one_seed_is_the_ordinary_bootstrap(seeded):
    _, runs, _ = seeded
    lb = build_leaderboard(runs[:1], n_replicates=N_REP, seed=3)
    from leaderboard import bootstrap as B

    r = lb.records[0]
    boot = B.bootstrap_run(r.windows, next(iter(lb.plans.values())))
    np.testing.assert_array_equal(lb.configurations[0].pooled["next"].replicates, boot.aggregates["next"])
    assert np.isnan(lb.summary.iloc[0]["next_sd"])


def test_seed_draws_are_reproducible_and_independent_per_configuration():
    a = P.seed_draws(5, 100, 0, "config-a")
    assert np.array_equal(a, P.seed_draws(5, 100, 0, "config-a"))
    assert not np.array_equal(a, P.seed_draws(5, 100, 0, "config-b"))
    assert not np.array_equal(a, P.seed_draws(5, 100, 1, "config-a"))
    per_seed = np.arange(5)[:, None] * np.ones((1, 100))  # seed i always scores i
    np.testing.assert_allclose(P.pooled_replicates(per_seed, a), a.mean(axis=1))
