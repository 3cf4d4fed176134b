"""The video track through the engine: a windowed LRNet run on synthetic landmark videos, its npz keys and
views, resume after a kill (with best-validation selection and per-branch epochs), and LRNet's training recipe
pieces (branch epoch limits, real sampling)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT

from benchmark.manifest import Sample
from benchmark.windows_plan import BenchmarkType, class_weights, training_sets
from protocols.predictions import SCHEMA_VERSION

FLAGS = ["--preset", "video", "--dataset", "synthetic-landmarks:smoke", "--no-progress", "--no-leaderboard",
         "--set", "benchmark.generators_per_window=6", "--set", "train.epochs=2", "--set", "train.batch_size=16",
         "--set", "threads=1", "--set", "train.checkpoint_every_n_steps=2", "--set", "train.selection=best_val_accuracy",
         "--set", "train.branch_epochs={g1: 2, g2: 1}"]


def run_cli(runs: Path, cache: Path, exp: str, *extra: str, die_at: str | None = None):
    env = os.environ | {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    env.pop("GENSHIFT_DIE_AT", None)
    if die_at:
        env["GENSHIFT_DIE_AT"] = die_at
    return subprocess.run([sys.executable, "-m", "protocols", "run", *FLAGS, "--runs-dir", str(runs), "--cache-dir",
                           str(cache), "--experiment", exp, *extra], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def run_here(runs: Path, cache: Path, exp: str) -> None:
    from protocols.cli import main

    assert main(["run", *FLAGS, "--runs-dir", str(runs), "--cache-dir", str(cache), "--experiment", exp]) == 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    runs = tmp_path_factory.mktemp("video-runs")
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run_here(runs, cache_dir, "ref")
    return runs / "ref", out.getvalue()


def test_video_run_writes_segments_beside_videos(reference):
    run, stdout = reference
    assert "selected epochs (best validation accuracy): g1 epoch" in stdout
    with np.load(run / "window_1" / "predictions.npz", allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    assert int(a["schema_version"]) == SCHEMA_VERSION and str(a["sequence_profile"]) == "fixed"
    n = len(a["fused_scores"])
    assert a["segment_video"].min() == 0 and a["segment_video"].max() == n - 1
    for row in (0, n // 2, n - 1):  # profile fixed: the video score is the mean of its segments' scores
        assert a["fused_scores"][row] == pytest.approx(a["segment_scores"][a["segment_video"] == row].mean(),
                                                       abs=1e-6)
    assert set(a["fused_compression"]) == {"raw", "c23", "c40"} and len(a["fused_paths"]) == n
    assert (a["pairing"][a["fused_labels"] == 0] > 0).all()  # the image protocol's pairing, unchanged


def test_leaderboard_and_inspect_show_the_video_views(reference, tmp_path, capsys):
    from leaderboard.report import write_leaderboard
    from protocols.cli import main

    run, _ = reference
    write_leaderboard([run], tmp_path, echo=False, n_replicates=50)
    assert (tmp_path / "video.csv").is_file()
    md = (tmp_path / "leaderboard.md").read_text()
    assert "## Video track" in md and "video-level AUROC (%)" in md
    assert list(tmp_path.glob("video_ref_roc_*.png")) and (tmp_path / "video_ref_manipulations.md").is_file()
    import pandas as pd

    rows = pd.read_csv(tmp_path / "video.csv")
    assert set(rows["window"]) == {0, 1} and {"raw", "c23", "c40", "all"} <= set(rows["compression"])
    assert main(["inspect", str(run / "window_1" / "predictions.npz"), "--plots", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "video level: AUROC" in out and "segment level" in out and (tmp_path / "p" / "manipulations.csv").is_file()


def test_resume_after_a_kill_gives_identical_predictions(reference, tmp_path, cache_dir):
    ref, _ = reference
    # killed mid-window 1 (after 3 batches, a train state with the selection so far exists), then resumed
    died = run_cli(tmp_path, cache_dir, "exp", die_at="train_batch:1:3")
    assert died.returncode != 0
    assert (tmp_path / "exp" / "window_0" / "done").is_file() and not (tmp_path / "exp" / "window_1" / "done").exists()
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run_here(tmp_path, cache_dir, "exp")
    assert "resuming after batch" in out.getvalue()
    for k in (0, 1):
        got = (tmp_path / "exp" / f"window_{k}" / "predictions.npz").read_bytes()
        assert got == (ref / f"window_{k}" / "predictions.npz").read_bytes(), f"window {k} differs"


def test_a_finished_branch_gets_no_gradient():
    from detectors import create_detector

    det = create_detector("lrnet", pretrained="none", seed=1)
    det.branch_epochs = {"g1": None, "g2": 1}
    x, y = torch.randn(8, 59, 136), torch.tensor([0.0, 1.0] * 4)
    det.epoch = 1
    det.training_loss(x, y).backward()
    assert all(p.grad is None for p in det.g2.parameters())  # Adam skips parameters without a gradient
    assert all(p.grad is not None for p in det.g1.parameters())


def _train(n_reals: int, fakes: dict[str, int]) -> list[Sample]:
    out = [Sample(i, "train", 0, "", f"r{i}", 0, 0) for i in range(n_reals)]
    for g, n in fakes.items():
        out += [Sample(len(out) + j, "train", 1, g, f"{g}{j}", 0, 0) for j in range(n)]
    return out


def test_real_sampling_repeat_reads_reals_once_per_method_and_weighted_once():
    train = _train(4, {"A": 4, "B": 4, "C": 4})
    windows = [["A", "B"], ["C"]]
    rep = training_sets(train, windows, BenchmarkType.parse("cumulative"), real_sampling="repeat")
    assert sorted(rep[0]) == sorted([0, 1, 2, 3] * 2 + list(range(4, 12)))  # LRNet's FF_all: reals × methods
    assert sorted(rep[1]) == sorted([0, 1, 2, 3] * 3 + list(range(4, 16)))
    w = training_sets(train, windows, BenchmarkType.parse("continual"), real_sampling="weighted")
    assert sorted(w[1]) == [0, 1, 2, 3, 12, 13, 14, 15]
    labels = [train[i].label for i in training_sets(train, windows, BenchmarkType.parse("cumulative"),
                                                    real_sampling="weighted")[1]]
    w0, w1 = class_weights(labels)
    assert w0 * labels.count(0) == pytest.approx(w1 * labels.count(1))  # both classes weigh the same
    with pytest.raises(ValueError, match="too few real|only"):
        training_sets(train, windows, BenchmarkType.parse("cumulative"))  # unique: 4 reals cannot match 8 fakes


def test_predict_with_a_window_checkpoint_matches_the_run(reference, tmp_path, cache_dir):
    """`genshift predict --checkpoint` rebuilds the run's detector and gives each eval video the run's score."""
    from protocols.cli import main

    run, _ = reference
    out = tmp_path / "p"
    assert main(["predict", "--checkpoint", str(run / "window_1"), "--dataset", "synthetic-landmarks:smoke",
                 "--split", "eval", "--profile", "fixed", "--out", str(out), "--cache-dir", str(cache_dir),
                 "--no-progress"]) == 0
    with np.load(out / "predictions.npz") as p, np.load(run / "window_1" / "predictions.npz") as w:
        by_id = dict(zip(p["fused_identifiers"].tolist(), p["fused_scores"].tolist(), strict=True))
        for i, s in zip(w["fused_identifiers"].tolist(), w["fused_scores"].tolist(), strict=True):
            assert by_id[i] == pytest.approx(s, abs=1e-6)


def test_lrnet_recipe_preset_runs_window_by_window(tmp_path, cache_dir):
    from protocols.cli import main
    from protocols.config import resolve_config

    cfg = resolve_config("lrnet")
    assert cfg["train"]["branch_epochs"] == {"g1": 750, "g2": 400} and cfg["train"]["batch_size"] == 1024
    assert cfg["train"]["optimizer"] == "adam" and cfg["train"]["lr"] == 0.001
    assert cfg["train"]["selection"] == "best_val_accuracy" and cfg["benchmark"]["real_sampling"] == "repeat"
    assert main(["run", "--preset", "lrnet", "--dataset", "synthetic-landmarks:smoke", "--no-progress",
                 "--no-leaderboard", "--set", "train.epochs=2", "--set", "train.branch_epochs={g1: 2, g2: 1}",
                 "--set", "train.batch_size=64", "--set", "benchmark.generators_per_window=12", "--set", "threads=1",
                 "--runs-dir", str(tmp_path), "--cache-dir", str(cache_dir), "--experiment", "lr"]) == 0
    with np.load(tmp_path / "lr" / "window_0" / "predictions.npz") as z:
        assert str(z["sequence_profile"]) == "lrnet-v1" and str(z["sequence_aggregate"]) == "vote"
        votes = z["fused_scores"]
        counts = np.bincount(z["segment_video"])
        assert np.allclose(votes * counts, np.round(votes * counts), atol=1e-5)  # fractions of segments


def test_image_detector_on_video_frames_through_the_windows(tmp_path, cache_dir):
    from helpers import write_video

    from protocols.cli import main

    root = tmp_path / "vids"
    for method, split, n in (("Origin", "train", 4), ("DF", "train", 2), ("F2F", "train", 2),
                             ("Origin", "test", 4), ("DF", "test", 2), ("F2F", "test", 2)):
        for i in range(n):
            write_video(root / method / "c23" / split / f"{i:03d}.avi", 7 + i, seed=hash((method, split, i)) % 1000)
    assert main(["run", "--preset", "smoke", "--detector", "smallcnn_tune", "--dataset", f"videos:{root}",
                 "--no-progress", "--no-leaderboard", "--set", "benchmark.generators_per_window=1",
                 "--set", "sequence.frames_count=3", "--set", "threads=1", "--runs-dir", str(tmp_path / "runs"),
                 "--cache-dir", str(cache_dir), "--experiment", "frames"]) == 0
    with np.load(tmp_path / "runs" / "frames" / "window_1" / "predictions.npz") as z:
        a = {k: z[k] for k in z.files}
    assert len(a["fused_scores"]) == 8 and np.bincount(a["frame_video"]).tolist() == [3] * 8
    for r in range(8):
        assert a["fused_scores"][r] == pytest.approx(a["frame_scores"][a["frame_video"] == r].mean(), abs=1e-6)


def test_reference_pipeline_is_refused_on_videos(tmp_path, cache_dir, capsys):
    """AI-GenBench's model input is defined for image datasets: a video run asking for it fails in one line."""
    from protocols.cli import main

    code = main(["run", *FLAGS, "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(cache_dir), "--experiment",
                 "refpipe", "--set", "eval.pipeline=reference"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("genshift: error: eval.pipeline: reference is AI-GenBench's model input")
