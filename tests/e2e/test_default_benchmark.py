"""The embedded default benchmark's promise: the synthetic shift is real, neither trivial nor impossible."""

import json

import pandas as pd
import pytest

from leaderboard.report import write_leaderboard
from protocols.config import resolve_config
from protocols.engine import run_experiment


@pytest.mark.slow
def test_default_benchmark_next_is_above_chance_and_below_seen(tmp_path, cache_dir):
    cfg = resolve_config("default", overrides=[{"runs_dir": str(tmp_path), "cache_dir": str(cache_dir),
                                                "experiment": "default"}])
    run_dir = run_experiment(cfg, progress=False)
    write_leaderboard([run_dir], run_dir, echo=False)
    row = pd.read_csv(run_dir / "leaderboard.csv").iloc[0]
    assert 0.6 <= row["next"] < row["seen_average"], (row["next"], row["seen_average"])
    info = json.loads((run_dir / "run.json").read_text())
    assert len(info["windows"]) >= 5 and info["detector"]["flops"] > 0
