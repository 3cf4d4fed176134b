"""The leaderboard's continual-learning strategy field, comparison plot and paired differences to naive."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from leaderboard import pooling as P
from leaderboard.bench import fabricate_eval_set, fabricate_run
from leaderboard.report import build_leaderboard, write_leaderboard
from leaderboard.variants import field_value


def _with_strategy(run, strategy: dict):
    """Record `strategy` as genshift does: run.json (top level and config) and every window's npz."""
    info = json.loads((run / "run.json").read_text())
    info["cl_strategy"] = strategy
    info["config"]["cl_strategy"] = strategy
    (run / "run.json").write_text(json.dumps(info))
    params = {k: v for k, v in strategy.items() if k != "name"}
    for npz in run.glob("window_*/predictions.npz"):
        arrays = dict(np.load(npz, allow_pickle=False))
        arrays |= {"cl_strategy": np.array(strategy["name"]), "cl_strategy_params": np.array(json.dumps(params))}
        np.savez(npz, **arrays)
    return run


def test_strategy_field_reads_the_npz_with_its_parameters_then_run_json_and_defaults_to_naive():
    arrays = {"cl_strategy": np.array("ewc"), "cl_strategy_params": np.array('{"gamma": 1.0, "lambda": 5.0}')}
    assert field_value("cl_strategy", {"config": {}}, arrays) == "ewc(gamma=1.0, lambda=5.0)"
    assert field_value("cl_strategy", {"config": {"cl_strategy": {"name": "lwf", "alpha": 1.0,
                                                                   "temperature": 2.0}}}) == "lwf(alpha=1.0, temperature=2.0)"
    assert field_value("cl_strategy", {"config": {}}) == "naive"  # older runs and AI-GenBench experiments fine-tuned


def test_strategies_section_pairs_each_strategy_with_its_naive_row(tmp_path):
    es = fabricate_eval_set(900, 3, per_window=2)
    naive = fabricate_run(tmp_path / "naive", es, skill=0.3, seed=1, detector="tiny_tune")
    better = _with_strategy(fabricate_run(tmp_path / "better", es, skill=1.5, seed=1, detector="tiny_tune"),
                            {"name": "replay", "memory_size": 10, "ratio": 1.0, "real_share": 0.5})
    alone = _with_strategy(fabricate_run(tmp_path / "alone", es, skill=1.0, seed=7, detector="other_tune"),
                           {"name": "ewc", "gamma": 1.0, "lambda": 100.0})  # no naive row of detector other_tune
    out = tmp_path / "lb"
    summary = write_leaderboard([naive, better, alone], out, echo=False, n_replicates=200)
    assert dict(zip(summary["experiment"], summary["cl_strategy"], strict=True)) == {
        "naive": "naive", "better": "replay(memory_size=10, ratio=1.0, real_share=0.5)",
        "alone": "ewc(gamma=1.0, lambda=100.0)"}
    table = pd.read_csv(out / "strategies.csv")
    assert table["experiment"].tolist() == ["better"] and table["vs"].tolist() == ["naive"]
    lb = build_leaderboard([naive, better, alone], n_replicates=200)
    conf = {c.name: c for c in lb.configurations}
    row = table.iloc[0]
    for agg in ("bwt", "forgetting", "next", "seen_average"):
        a, b = conf["better"].pooled[agg], conf["naive"].pooled[agg]
        d = a.replicates - b.replicates  # the same eval resamples for both rows
        assert np.isclose(row[f"d_{agg}"], a.value - b.value)
        assert np.isclose(row[f"d_{agg}_ci_low"], np.percentile(d, 2.5))
        assert np.isclose(row[f"d_{agg}_ci_high"], np.percentile(d, 97.5))
        assert np.isclose(row[f"d_{agg}"], P.paired_difference(a.replicates, b.replicates, a.value - b.value)
                          ["difference"])
    assert row["d_next_ci_low"] > 0  # the stronger run is better on the same resamples
    md = (out / "leaderboard.md").read_text()
    assert "## Continual-learning strategies" in md and "ΔBWT [95% CI]" in md and "strategies.png" in md
    assert (out / "strategies.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "id='strategies'" in (out / "leaderboard.html").read_text()


def test_group_by_cl_strategy_gives_one_table_per_strategy(tmp_path):
    es = fabricate_eval_set(600, 3, per_window=2)
    naive = fabricate_run(tmp_path / "naive", es, skill=0.5, seed=0)
    ewc = _with_strategy(fabricate_run(tmp_path / "ewc", es, skill=1.0, seed=0),
                         {"name": "ewc", "gamma": 1.0, "lambda": 100.0})
    lb = build_leaderboard([naive, ewc], n_replicates=50, group_by=("cl_strategy",))
    assert sorted(lb.tables) == ["cl_strategy=ewc(gamma=1.0, lambda=100.0)", "cl_strategy=naive"]


def test_no_strategies_section_when_every_run_is_naive(tmp_path):
    es = fabricate_eval_set(600, 3, per_window=2)
    runs = [fabricate_run(tmp_path / n, es, skill=s, seed=i) for i, (n, s) in enumerate((("a", 0.5), ("b", 1.0)))]
    write_leaderboard(runs, tmp_path / "lb", echo=False, n_replicates=50)
    assert not (tmp_path / "lb" / "strategies.png").exists()
    assert "Continual-learning strategies" not in (tmp_path / "lb" / "leaderboard.md").read_text()


def test_a_run_made_before_strategies_pools_with_a_naive_seed_but_not_with_another_strategy(tmp_path):
    es = fabricate_eval_set(600, 3, per_window=2)
    old = fabricate_run(tmp_path / "old-seed0", es, skill=0.5, seed=0)  # no cl_strategy anywhere: fine-tuning
    new = _with_strategy(fabricate_run(tmp_path / "new-seed1", es, skill=0.6, seed=1), {"name": "naive"})
    ewc = _with_strategy(fabricate_run(tmp_path / "ewc-seed2", es, skill=0.6, seed=2),
                         {"name": "ewc", "gamma": 1.0, "lambda": 100.0})
    lb = build_leaderboard([old, new, ewc], n_replicates=50)
    seeds = sorted(sorted(r.seed for r in c.records) for c in lb.configurations)
    assert seeds == [[0, 1], [2]]
