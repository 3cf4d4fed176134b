"""The leaderboard's continual-learning strategy column, comparison plot and paired differences to naive."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from leaderboard import bootstrap as B
from leaderboard.bench import fabricate_eval_set, fabricate_run
from leaderboard.report import build_leaderboard, write_leaderboard
from leaderboard.strategy_view import strategy_label, strategy_of


def _with_strategy(run, strategy: dict):
    info = json.loads((run / "run.json").read_text())
    info["cl_strategy"] = strategy
    info["config"]["cl_strategy"] = strategy
    (run / "run.json").write_text(json.dumps(info))
    return run


def test_strategy_of_reads_run_json_and_defaults_to_naive():
    assert strategy_of({"config": {}}) == {"name": "naive"}  # older runs and AI-GenBench experiments fine-tuned
    assert strategy_of({"config": {"cl_strategy": {"name": "lwf", "alpha": 1.0}}})["name"] == "lwf"
    assert strategy_label({"cl_strategy": {"name": "ewc", "gamma": 1.0, "lambda": 5.0}}) == "ewc(gamma=1.0, lambda=5.0)"


def test_strategies_section_pairs_each_strategy_with_its_naive_run(tmp_path):
    es = fabricate_eval_set(900, 3, per_window=2)
    naive = fabricate_run(tmp_path / "naive", es, skill=0.3, seed=1, detector="tiny_tune")
    better = _with_strategy(fabricate_run(tmp_path / "better", es, skill=1.5, seed=1, detector="tiny_tune"),
                            {"name": "replay", "memory_size": 10, "ratio": 1.0, "real_share": 0.5})
    alone = _with_strategy(fabricate_run(tmp_path / "alone", es, skill=1.0, seed=7, detector="tiny_tune"),
                           {"name": "ewc", "gamma": 1.0, "lambda": 100.0})  # no naive run with seed 7
    out = tmp_path / "lb"
    summary = write_leaderboard([naive, better, alone], out, echo=False, n_replicates=200)
    assert dict(zip(summary["experiment"], summary["cl_strategy"], strict=True)) == {
        "naive": "naive", "better": "replay(memory_size=10, ratio=1.0, real_share=0.5)",
        "alone": "ewc(gamma=1.0, lambda=100.0)"}
    table = pd.read_csv(out / "strategies.csv")
    assert table["experiment"].tolist() == ["better"] and table["vs"].tolist() == ["naive"]
    lb = build_leaderboard([naive, better, alone], n_replicates=200)
    s = lb.summary.set_index("experiment")
    for agg in ("bwt", "forgetting", "next", "seen_average"):
        d = B.paired_difference(lb.bootstraps["better"], lb.bootstraps["naive"], agg, s.loc["better", agg],
                                s.loc["naive", agg])
        row = table.iloc[0]
        assert np.isclose(row[f"d_{agg}"], s.loc["better", agg] - s.loc["naive", agg])
        assert np.isclose(row[f"d_{agg}_ci_low"], d["ci_low"]) and np.isclose(row[f"d_{agg}_ci_high"], d["ci_high"])
    assert table.iloc[0]["d_next_ci_low"] > 0  # the stronger run is better on the same resamples
    md = (out / "leaderboard.md").read_text()
    assert "## Continual-learning strategies" in md and "ΔBWT [95% CI]" in md and "strategies.png" in md
    assert (out / "strategies.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "id='strategies'" in (out / "leaderboard.html").read_text()


def test_no_strategies_section_when_every_run_is_naive(tmp_path):
    es = fabricate_eval_set(600, 3, per_window=2)
    runs = [fabricate_run(tmp_path / n, es, skill=s, seed=i) for i, (n, s) in enumerate((("a", 0.5), ("b", 1.0)))]
    write_leaderboard(runs, tmp_path / "lb", echo=False, n_replicates=50)
    assert not (tmp_path / "lb" / "strategies.png").exists()
    assert "Continual-learning strategies" not in (tmp_path / "lb" / "leaderboard.md").read_text()
