"""Strategies in real runs: naive is today's training bit for bit, the strategy is recorded everywhere, a SIGKILL
inside a window of an `ewc` or a `replay` run resumes to the same predictions, probes on cached features, DDP, and
a scaffolded third-party strategy plugin."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    ROOT,  # noqa: E402
    SMALL_RUN_FLAGS,
)
from test_runs_resume import assert_same_predictions, run_cli

from protocols.predictions import SCHEMA_VERSION
from protocols.resume import TRAIN_STATE
from protocols.strategies import registry as sreg
from protocols.strategies.hooks import STATE_FILE

# sha256 of fused_logits (float32 little-endian) of the two-window smoke run (conftest.SMALL_RUN_FLAGS,
# smallcnn_tune, seed 0) made by genshift before strategies existed (commit 04922d9), on the development machine
# (torch 2.14.1, bf16 autocast available on its CPU, so precision `auto` resolved to bf16-mixed).
NAIVE_GOLDEN = {
    "torch": "2.14.1", "bf16": True,
    "fused_logits_sha256": ["8957704a6bd46e1632fd7e180ea03b3ba19b5875ed4ea37e9fbb7c07c792eeed",
                            "2a45580c7750024b9904d6486ecd2ccb6b9539618e19f8e967b571e91f0b0571"],
}


def load(run: Path, k: int) -> dict:
    with np.load(run / f"window_{k}" / "predictions.npz", allow_pickle=False) as z:
        return {key: z[key] for key in z.files}


def test_naive_predictions_are_bit_identical_to_genshift_before_strategies(small_reference):
    from protocols.speed import bf16_supported

    env = {"torch": torch.__version__.split("+")[0], "bf16": bf16_supported(False)}
    if env != {k: NAIVE_GOLDEN[k] for k in env}:
        pytest.skip(f"golden made with {NAIVE_GOLDEN['torch']}, bf16 {NAIVE_GOLDEN['bf16']}; this machine {env}")
    run = small_reference()
    for k, expected in enumerate(NAIVE_GOLDEN["fused_logits_sha256"]):
        logits = load(run, k)["fused_logits"]
        assert hashlib.sha256(logits.astype("<f4").tobytes()).hexdigest() == expected, f"window {k}"
    info = json.loads((run / "run.json").read_text())
    assert info["cl_strategy"] == {"name": "naive"} and info["config"]["cl_strategy"] == {"name": "naive"}
    assert str(load(run, 0)["cl_strategy"]) == "naive" and not list(run.rglob(STATE_FILE))


def _strategy_flags(name: str, *params: str) -> tuple[str, ...]:
    return ("--benchmark-type", "continual", "--cl-strategy", name, *(a for p in params for a in ("--set", p)))


@pytest.mark.parametrize("name,params", [("replay", ("cl_strategy.memory_size=40",)),
                                         ("ewc", ("cl_strategy.lambda=50",))])
def test_sigkill_inside_a_window_of_a_strategy_run_resumes_to_identical_predictions(
        tmp_path, cache_dir, small_reference, name, params):
    extra = _strategy_flags(name, *params)
    reference = small_reference("smallcnn_tune", 0, *extra)
    runs = tmp_path / "runs"
    # killed after window 0's checkpoint (weights, strategy state) but before `done`: restored, not retrained
    proc = run_cli(runs, cache_dir, *extra, die_at="before_done:0")
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert (runs / "exp" / "window_0" / STATE_FILE).is_file()
    # killed inside window 1 after batch 5; the train state saved after batch 4 holds the strategy's state
    proc = run_cli(runs, cache_dir, *extra, die_at="train_batch:1:5")
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert "window 1/2: training already finished, weights restored" in proc.stdout
    state = torch.load(runs / "exp" / "window_1" / TRAIN_STATE, weights_only=True)
    assert state["batches_done"] == 4 and state["strategy"]["name"] == name and state["strategy"]["state"]
    proc = run_cli(runs, cache_dir, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "window 2/2: resuming after batch 4/" in proc.stdout
    assert_same_predictions(runs / "exp", reference)
    info = json.loads((runs / "exp" / "run.json").read_text())
    assert info["cl_strategy"]["name"] == name and info["config"]["cl_strategy"] == info["cl_strategy"]
    z = load(runs / "exp", 1)
    assert str(z["cl_strategy"]) == name and int(z["schema_version"]) == SCHEMA_VERSION
    assert json.loads(str(z["cl_strategy_params"])) == {k: v for k, v in info["cl_strategy"].items() if k != "name"}
    if name == "replay":  # window 1 trained on its own images plus 40 memory images of window 0
        doc = torch.load(runs / "exp" / "window_0" / STATE_FILE, weights_only=True)
        kept = [i for ids in doc["state"]["memory"]["kept"] for i in ids]
        assert len(kept) == 40 and doc["state"]["memory"]["groups"][0] == "real"


def test_sigkill_between_the_strategy_state_and_the_checkpoint_retrains_the_window_to_identical_predictions(
        tmp_path, cache_dir, small_reference):
    """A window whose strategy state was written but whose checkpoint was not is not finished: it trains again
    (from its last train state) and rewrites the state; the run ends as an uninterrupted one."""
    extra = _strategy_flags("ewc", "cl_strategy.lambda=50")
    reference = small_reference("smallcnn_tune", 0, *extra)
    runs = tmp_path / "runs"
    proc = run_cli(runs, cache_dir, *extra, die_at="strategy_state:0")
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert (runs / "exp" / "window_0" / STATE_FILE).is_file()
    assert not (runs / "exp" / "window_0" / "checkpoint.json").exists()
    proc = run_cli(runs, cache_dir, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "window 1/2: training already finished" not in proc.stdout
    assert_same_predictions(runs / "exp", reference)


def test_strategies_train_probe_heads_on_cached_features(tmp_path, cache_dir):
    """A probe with the feature cache trains its head on cached features, memory rows included."""
    from protocols.cli import main

    for name in ("replay", "ewc", "lwf", "der++"):
        rc = main(["run", *SMALL_RUN_FLAGS, "--detector", "smallcnn_probe", *_strategy_flags(name),
                   "--runs-dir", str(tmp_path), "--cache-dir", str(cache_dir), "--experiment", name])
        assert rc == 0, name
        info = json.loads((tmp_path / name / "run.json").read_text())
        assert info["caches"].get("train_features"), "the probe feature cache was not used"
        assert (tmp_path / name / "window_1" / STATE_FILE).is_file() or name == "lwf"
        if name == "ewc":  # the Fisher covers the trained parameters only: the head
            state = torch.load(tmp_path / name / "window_0" / STATE_FILE, weights_only=True)["state"]
            assert set(state["importance"]) == {"head.weight", "head.bias"}


def test_default_experiment_names_tell_strategies_apart():
    from protocols.config import resolve_config
    from protocols.engine import experiment_name

    naive = resolve_config("smoke")
    assert experiment_name(naive).endswith("__cumulative__seed0")  # unchanged for fine-tuning
    ewc = resolve_config("smoke", overrides=[{"cl_strategy": {"name": "der++"}}])
    assert experiment_name(ewc).endswith("__cumulative__derpp__seed0")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ewc", "replay"])
def test_two_gloo_processes_run_a_strategy_like_one(tmp_path, cache_dir, small_reference, name):
    """DDP: every process runs the strategy's hooks on the same data; the memory rows are split with the batch."""
    extra = ("--set", "cache.probe_features=false", "--set", "train.lr=0.01", *_strategy_flags(name))
    single = small_reference("smallcnn_probe", 0, *extra)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, "-m", "protocols", "run", *SMALL_RUN_FLAGS, "--detector", "smallcnn_probe",
         "--runs-dir", str(tmp_path), "--cache-dir", str(cache_dir), "--experiment", "ddp", *extra,
         "--set", "devices=2", "--set", "accelerator=cpu", "--set", "strategy=ddp"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for k in range(2):
        np.testing.assert_allclose(load(tmp_path / "ddp", k)["fused_logits"], load(single, k)["fused_logits"],
                                   rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ plugins
@pytest.fixture
def fresh_strategy_registry(monkeypatch):
    monkeypatch.setattr(sreg, "_entry_points", None)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return monkeypatch


def test_scaffolded_strategy_plugin_installs_is_listed_and_passes_its_tests(tmp_path, fresh_strategy_registry,
                                                                            capsys):
    from protocols.cli import main

    assert main(["strategies", "new", "anchor-l2", "--dir", str(tmp_path)]) == 0
    root = tmp_path / "genshift-strategy-anchor-l2"
    for rel in ("pyproject.toml", "genshift_strategy_anchor_l2/strategy.py",
                "tests/test_genshift_strategy_anchor_l2.py", "README.md"):
        assert (root / rel).is_file(), rel
    assert main(["strategies", "new", "anchor-l2", "--dir", str(tmp_path)]) == 2  # never overwrites
    assert main(["strategies", "new", "ewc", "--dir", str(tmp_path)]) == 2  # name taken
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--target", str(site), str(root)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    fresh_strategy_registry.syspath_prepend(str(site))
    fresh_strategy_registry.setattr(sreg, "_entry_points", None)  # as in a new process after `pip install`
    capsys.readouterr()
    assert main(["strategies", "list", "--format", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["anchor-l2"]["defaults"] == {"lambda": 1.0} and rows["anchor-l2"]["source"].startswith("plugin")
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    own = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert own.returncode == 0, own.stdout[-3000:]


@pytest.mark.slow
def test_scaffolded_strategy_plugin_completes_a_smoke_run(tmp_path, cache_dir):
    """The user's path: scaffold, install, `genshift run --preset smoke --cl-strategy <name>` (a subprocess)."""
    from protocols.cli import main

    assert main(["strategies", "new", "smokeanchor", "--dir", str(tmp_path)]) == 0
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(site), str(tmp_path / "genshift-strategy-smokeanchor")], check=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "protocols", "run", *SMALL_RUN_FLAGS, "--benchmark-type",
                          "continual", "--cl-strategy", "smokeanchor", "--set", "cl_strategy.lambda=5",
                          "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(cache_dir), "--experiment", "exp"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    info = json.loads((tmp_path / "runs" / "exp" / "run.json").read_text())
    assert info["cl_strategy"] == {"name": "smokeanchor", "lambda": 5.0}
    doc = torch.load(tmp_path / "runs" / "exp" / "window_0" / STATE_FILE, weights_only=True)
    assert set(doc["state"]["anchor"]) == set(torch.load(tmp_path / "runs" / "exp" / "window_1" / STATE_FILE,
                                                         weights_only=True)["state"]["anchor"])
    assert (tmp_path / "runs" / "exp" / "window_1" / "predictions.npz").is_file()


VIDEO_FLAGS = ["--preset", "video", "--dataset", "synthetic-landmarks:smoke", "--no-progress", "--no-leaderboard",
               "--set", "benchmark.generators_per_window=6", "--set", "train.epochs=1", "--set", "train.batch_size=16",
               "--set", "threads=1"]


def _state(run: Path, k: int) -> dict:
    return torch.load(run / f"window_{k}" / STATE_FILE, weights_only=True)["state"]


@pytest.mark.parametrize("name,params", [("replay", ("cl_strategy.memory_size=20",)), ("ewc", ())])
def test_strategies_train_a_sequence_detector_on_video_segments(tmp_path, cache_dir, name, params):
    """LRNet trains on landmark segments, a varying number per video: the memory replays a video's segments,
    EWC's importance pass reads each video's first segment."""
    from protocols.cli import main

    assert main(["run", *VIDEO_FLAGS, *_strategy_flags(name, *params), "--runs-dir", str(tmp_path), "--cache-dir",
                 str(cache_dir), "--experiment", name]) == 0
    for k in (0, 1):
        z = load(tmp_path / name, k)
        assert str(z["cl_strategy"]) == name and np.isfinite(z["fused_scores"]).all()
    state = _state(tmp_path / name, 0)
    if name == "ewc":
        assert any(float(v.abs().sum()) > 0 for v in state["importance"].values())


def test_der_plus_plus_stores_the_logits_of_every_frame_of_a_memory_video(tmp_path, cache_dir):
    """An image detector on video frames: each memory video keeps one stored logit per training frame."""
    from helpers import write_video as _video

    from protocols.cli import main

    root = tmp_path / "vids"
    for method, split, n in (("Origin", "train", 4), ("DF", "train", 2), ("F2F", "train", 2),
                             ("Origin", "test", 4), ("DF", "test", 2), ("F2F", "test", 2)):
        for i in range(n):
            _video(root / method / "c23" / split / f"{i:03d}.avi", 7 + i, seed=hash((method, split, i)) % 1000)
    assert main(["run", "--preset", "smoke", "--detector", "smallcnn_tune", "--dataset", f"videos:{root}",
                 "--no-progress", "--no-leaderboard", "--set", "benchmark.generators_per_window=1",
                 "--set", "sequence.frames_count=3", "--set", "threads=1", *_strategy_flags("der++"),
                 "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(cache_dir), "--experiment", "frames"]) == 0
    run = tmp_path / "runs" / "frames"
    state = _state(run, 0)
    counts = state["stored_counts"].tolist()
    assert counts and set(counts) == {3} and len(state["stored_logits"]) == sum(counts)
    assert str(load(run, 1)["cl_strategy"]) == "der++"
    assert torch.isfinite(_state(run, 1)["stored_logits"]).all()
