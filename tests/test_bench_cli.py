"""`genshift bench`: the stage table and the whole-run comparison run end to end and report consistent ratios."""

from __future__ import annotations

import json

import pytest

from protocols.cli import main

STAGES = {"decode", "degrade", "build_eval_cache", "model_forward", "eval_cached", "eval_uncached", "train_cached",
          "train_uncached", "leaderboard"}


def test_bench_stages_write_consistent_ratios(tmp_path, cache_dir, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--preset", "smoke", "--cache-dir", str(cache_dir), "--images", "64", "--lb-runs", "2",
                 "--set", "threads=1", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["mode"] == "stages" and set(doc["stages"]) == STAGES and doc["cached_equals_uncached"] is True
    forward = doc["stages"]["model_forward"]["images_per_s"]
    uncached_eval = doc["stages"]["eval_uncached"]["images_per_s"]
    for name, r in doc["stages"].items():
        assert r["images"] > 0 and r["seconds"] > 0, name
        # `seconds` is rounded to 1 ms and images/s (to 0.1) comes from the unrounded time: it lies in that interval
        low, high = r["images"] / (r["seconds"] + 5e-4) - 0.05, r["images"] / (r["seconds"] - 5e-4) + 0.05
        assert low <= r["images_per_s"] <= high, name
        assert r["cost_vs_model_forward"] == pytest.approx(forward / r["images_per_s"], rel=0.02, abs=0.01), name
        assert r["speedup_vs_uncached_eval"] == pytest.approx(r["images_per_s"] / uncached_eval, rel=0.02,
                                                              abs=0.01), name
    assert "model_forward" in capsys.readouterr().out


def test_bench_whole_run_compares_identical_runs(tmp_path, cache_dir, capsys):
    out = tmp_path / "whole.json"
    assert main(["bench", "--whole-run", "--preset", "smoke", "--cache-dir", str(cache_dir), "--set", "threads=1",
                 "--set", "benchmark.generators_per_window=12", "--repeats", "2", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["mode"] == "whole-run" and doc["identical_predictions"] is True and doc["windows"] == 2
    assert doc["repeats"] == 2
    runs = doc["runs"]
    assert list(runs) == ["uncached", "cached_cold", "cached_warm"]
    for r in runs.values():
        assert r["seconds"] == min(r["all_seconds"]) and len(r["all_seconds"]) == 2
        assert r["speedup_vs_uncached"] == pytest.approx(runs["uncached"]["seconds"] / r["seconds"], rel=0.02)
        # each round's ratio compares the runs of that round (adjacent in time), not the fastest of each mode
        for k, ratio in enumerate(r["speedup_per_round"]):
            assert ratio == pytest.approx(runs["uncached"]["all_seconds"][k] / r["all_seconds"][k], rel=0.02)
    printed = capsys.readouterr().out
    assert "identical predictions in every window: True" in printed and "fastest of 2 round(s)" in printed
    # every round's cold run built both pixel stores (none left by the round before), its warm run found them
    assert runs["uncached"]["stores_found"] == [{}, {}]
    assert runs["cached_cold"]["stores_found"] == [{"eval_inputs": False, "train_inputs": False}] * 2
    assert runs["cached_warm"]["stores_found"] == [{"eval_inputs": True, "train_inputs": True}] * 2


def test_bench_data_path_reports_rates_and_the_workers_a_forward_rate_needs(tmp_path, capsys):
    out = tmp_path / "dp.json"
    assert main(["bench", "--data-path", "--preset", "smoke", "--detector", "smallcnn_tune", "--sizes", "96,128",
                 "--images", "2", "--rounds", "1", "--forward-rate", "500", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["mode"] == "data-path" and set(doc["sizes"]) == {"96", "128"}
    for row in doc["sizes"].values():
        assert set(row) == {"decode", "train_copy", "eval_input"} and all(r["per_worker"] > 0 for r in row.values())
        assert row["decode"]["per_worker"] > row["train_copy"]["per_worker"]  # a copy is a decode and more
    slowest = min(r["train_copy"]["per_worker"] for r in doc["sizes"].values())
    assert doc["slowest_train_copy_per_worker"] == slowest
    assert doc["workers_needed"] == {"500.0": -(-500 // slowest)}
    assert "needs" in capsys.readouterr().out


def test_bench_scale_writes_a_release_dataset_and_times_each_stage(tmp_path, capsys):
    out = tmp_path / "scale.json"
    assert main(["bench", "--scale", "720", "--workdir", str(tmp_path / "w"), "--stages", "write,scan",
                 "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert list(doc["stages"]) == ["write", "scan"] and doc["rows"] == 720
    for r in doc["stages"].values():
        assert r["rc"] == 0 and r["seconds"] > 0 and r["peak_rss_mb"] > 50 and r["cpu_seconds"] > 0
    assert "scan" in capsys.readouterr().out
    scan_output = (tmp_path / "w" / "scale_bench.log").read_text().split("=== scan:", 1)[1].split("\n", 1)[1]
    info = json.loads(scan_output)  # `genshift data info` of the dataset written: 36 generators, 80 / 20
    assert info["train"]["reals"] == info["train"]["fakes"] == 288 and info["eval"]["reals"] == info["eval"]["fakes"] == 72
    assert main(["bench", "--scale", "720", "--workdir", str(tmp_path / "w"), "--stages", "write",
                 "--json", str(out)]) == 0
    assert "skipped" in json.loads(out.read_text())["stages"]["write"]  # the dataset is reused
