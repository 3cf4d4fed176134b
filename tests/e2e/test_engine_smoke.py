"""End to end on the smoke preset: files and keys, determinism, resume, refusals with clear messages."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from protocols.cli import main
from protocols.config import resolve_config
from protocols.engine import run_experiment
from protocols.rundir import RunDirError

NPZ_KEYS = {
    "fused_scores", "fused_logits", "fused_labels", "fused_generator_ids", "fused_identifiers", "pairing",
    "generator_id_to_name", "windows_timeline", "window", "schema_version", "manifest_checksum",
    "protocol_version", "benchmark_type", "run_identity", "config_hash",
    # the variant fields by config name (protocols.predictions.variant_fields) and the rows' source formats
    "eval_split", "degradation_profile", "degradation_base_seed", "detector", "cl_strategy", "cl_strategy_params",
    "train_selection",
    "eval_pipeline", "eval_input", "eval_normalize", "input_size", "fused_source_format", "fused_jpeg_quality",
    "threshold", "threshold_rule", "threshold_source", "threshold_reason",  # validation_* only with a validation split
    "selection_policy", "selection_step", "selection_epoch", "selection_val_auroc", "selection_reason",
    "selection_averaged_epochs",
}


def smoke_cfg(tmp_path, cache_dir, **over):
    return resolve_config("smoke", overrides=[{"runs_dir": str(tmp_path / "runs"), "cache_dir": str(cache_dir),
                                               "experiment": "exp"} | over])


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, cache_dir):
    """One smoke run through the CLI (the path a user takes), shared by the tests below."""
    runs = tmp_path_factory.mktemp("runs")
    rc = main(["run", "--preset", "smoke", "--runs-dir", str(runs), "--cache-dir", str(cache_dir),
               "--experiment", "exp", "--no-progress"])
    assert rc == 0
    return runs / "exp"


def load(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_run_writes_every_window_with_documented_keys(smoke_run):
    info = json.loads((smoke_run / "run.json").read_text())
    n = len(info["windows"])
    assert n >= 5
    for key in ("config", "config_hash", "manifest_checksum", "seeds", "packages", "detector", "protocol_version"):
        assert key in info, key
    assert info["packages"]["torch"] == "2.14.1"
    for k in range(n):
        w = smoke_run / f"window_{k}"
        for f in ("predictions.npz", "metrics.json", "checkpoint.safetensors", "checkpoint.json", "done"):
            assert (w / f).is_file(), w / f
        z = load(w / "predictions.npz")
        assert set(z) == NPZ_KEYS
        assert z["fused_scores"].dtype == np.float32 and int(z["window"]) == k
        np.testing.assert_allclose(z["fused_scores"], 1 / (1 + np.exp(-z["fused_logits"].astype(np.float64))),
                                   rtol=1e-6)
        assert z["manifest_checksum"] == info["manifest_checksum"]
        metrics = json.loads((w / "metrics.json").read_text())
        assert metrics["window"] == k and metrics["train"]["n_images"] > 0
    last = json.loads((smoke_run / f"window_{n - 1}" / "metrics.json").read_text())
    assert last["eval"]["auroc"]["next"] is None and "no next window" in last["eval"]["undefined"]["next"]
    md = (smoke_run / "leaderboard.md").read_text()
    assert "NEXT" in md and "seen avg" in md and "exp" in md
    # The variant fields are the same in run.json and every npz; the untrained model was scored once (FWT).
    z0 = load(smoke_run / "window_0" / "predictions.npz")
    for name, value in info["variant"].items():
        assert str(z0[name.replace(".", "_")]) == str(value), name
    assert info["variant"]["degradation.profile"] == "aigenbench-v1" and info["variant"]["cl_strategy"] == "naive"
    assert set(z0["fused_source_format"].tolist()) == {"png"} and (z0["fused_jpeg_quality"] == -1).all()
    init = load(smoke_run / "window_init" / "predictions.npz")
    # the untrained model was chosen by no policy and has no validation threshold
    trained_only = {k for k in NPZ_KEYS if k.startswith(("threshold", "selection_"))}
    assert set(init) == NPZ_KEYS - trained_only and int(init["window"]) == -1
    assert np.array_equal(init["fused_identifiers"], z0["fused_identifiers"])
    assert "FWT" in md and not (smoke_run / "window_init" / "done").exists()
    assert (smoke_run / "leaderboard.csv").is_file()


def test_same_command_twice_gives_identical_scores_and_resume_matches(smoke_run, tmp_path, cache_dir):
    cfg = smoke_cfg(tmp_path, cache_dir)
    run_dir = run_experiment(cfg, progress=False)
    n = len(json.loads((run_dir / "run.json").read_text())["windows"])
    first = [load(smoke_run / f"window_{k}" / "predictions.npz")["fused_scores"] for k in range(n)]
    for k in range(n):
        assert np.array_equal(load(run_dir / f"window_{k}" / "predictions.npz")["fused_scores"], first[k])
    # Resume: forget the last two windows; re-running recomputes them identically from window n-3's weights.
    for k in (n - 2, n - 1):
        (run_dir / f"window_{k}" / "done").unlink()
        (run_dir / f"window_{k}" / "predictions.npz").unlink()
    run_experiment(cfg, progress=False)
    for k in range(n):
        assert np.array_equal(load(run_dir / f"window_{k}" / "predictions.npz")["fused_scores"], first[k])


def test_scoring_the_untrained_model_changes_no_window(smoke_run, tmp_path, cache_dir):
    """eval.score_initial=false writes no window_init/ and the very same windows: scoring the untrained model
    draws from no random stream that training uses."""
    run_dir = run_experiment(smoke_cfg(tmp_path, cache_dir, eval={"score_initial": False}), progress=False)
    assert not (run_dir / "window_init").exists()
    n = len(json.loads((run_dir / "run.json").read_text())["windows"])
    for k in range(n):
        assert np.array_equal(load(run_dir / f"window_{k}" / "predictions.npz")["fused_logits"],
                              load(smoke_run / f"window_{k}" / "predictions.npz")["fused_logits"]), k


def test_run_dir_of_another_config_is_refused_then_moved_aside(smoke_run, tmp_path, cache_dir):
    runs = smoke_run.parent
    cfg = resolve_config("smoke", overrides=[{"runs_dir": str(runs), "cache_dir": str(cache_dir),
                                              "experiment": "exp", "seed": 5}])
    before = (smoke_run / "window_0" / "predictions.npz").read_bytes()
    with pytest.raises(RunDirError, match="seed: 0 != 5"):
        run_experiment(cfg, progress=False)
    assert (smoke_run / "window_0" / "predictions.npz").read_bytes() == before  # nothing lost


def test_unknown_detector_fails_fast_with_closest_names(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "protocols", "run", "--preset", "smoke", "--detector", "smallcnn_tuen",
         "--runs-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "smallcnn_tune" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_config_key_is_rejected(tmp_path, capsys):
    assert main(["run", "--preset", "smoke", "--set", "train.learning_rate=1", "--runs-dir", str(tmp_path)]) == 2
    assert "unknown config key 'learning_rate'" in capsys.readouterr().err
