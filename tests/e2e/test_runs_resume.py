"""Runs that survive: SIGKILL at any moment, preemption signals, stale states, locks, samplers, loggers.

The end-to-end tests run a two-window smoke benchmark (conftest.SMALL_RUN_FLAGS) as a subprocess that kills
itself at a chosen point (protocols.faults), re-run the same command, and compare the predictions byte for
byte with an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT, SMALL_RUN_FLAGS
from torch.utils.data import BatchSampler, RandomSampler

from protocols import distributed
from protocols.distributed import EvalBatches, TrainBatches, gather_predictions
from protocols.resume import EXIT_PREEMPTED, TRAIN_STATE, load_train_state, save_train_state
from protocols.rundir import RunDir, RunDirError


def run_cli(runs: Path, cache_dir: Path, *extra: str, die_at: str | None = None, timeout: int = 300):
    env = os.environ | {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    env.pop("GENSHIFT_DIE_AT", None)
    if die_at:
        env["GENSHIFT_DIE_AT"] = die_at
    return subprocess.run([sys.executable, "-m", "protocols", "run", *SMALL_RUN_FLAGS, "--runs-dir", str(runs),
                           "--cache-dir", str(cache_dir), "--experiment", "exp", *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def assert_same_predictions(run_dir: Path, reference: Path, windows: int = 2) -> None:
    for k in range(windows):
        got = (run_dir / f"window_{k}" / "predictions.npz").read_bytes()
        assert got == (reference / f"window_{k}" / "predictions.npz").read_bytes(), f"window {k} differs"
        assert (run_dir / f"window_{k}" / "done").is_file()


# ---------------------------------------------------------------- samplers (fast, no training)

def test_train_batches_follow_torch_shuffled_batches_and_resume_at_any_batch():
    n, bs, seed = 37, 8, 1234
    g = torch.Generator().manual_seed(seed)
    first_epoch = list(BatchSampler(RandomSampler(range(n), generator=g), bs, drop_last=False))
    g = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(n, generator=g).tolist() for _ in range(3)]  # one fresh permutation per epoch
    reference = [p[i:i + bs] for p in perms for i in range(0, n, bs)]
    assert reference[:5] == first_epoch  # the first epoch is exactly torch's shuffled batches
    full = list(TrainBatches(n, bs, epochs=3, seed=seed))
    assert full == reference and len(full) == 3 * 5
    for start in (0, 1, 4, 5, 14, 15):
        assert list(TrainBatches(n, bs, 3, seed, start=start)) == reference[start:]
        assert len(TrainBatches(n, bs, 3, seed, start=start)) == 15 - start


@pytest.mark.parametrize("world", [2, 3])
def test_train_batches_split_each_global_batch_across_ranks(monkeypatch, world):
    n, bs, seed = 30, 9, 7  # the last batch of each epoch has 3 samples
    single = list(TrainBatches(n, bs, 2, seed))
    shards = []
    for rank in range(world):
        monkeypatch.setattr(distributed, "rank_world", lambda r=rank: (r, world))
        shards.append(list(TrainBatches(n, bs, 2, seed)))
    for i, batch in enumerate(single):
        assert sum((s[i] for s in shards), []) == batch  # contiguous parts, in order, nothing padded
    monkeypatch.setattr(distributed, "rank_world", lambda: (0, 4))
    with pytest.raises(RuntimeError, match="fewer than the 4 processes"):
        list(TrainBatches(n, bs, 2, seed))  # a last batch of 3 cannot feed 4 processes: said, not padded


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_eval_batches_give_every_position_exactly_once(monkeypatch, world):
    n, bs = 23, 4
    single = [list(range(i, min(n, i + bs))) for i in range(0, n, bs)]
    seen = []
    for rank in range(world):
        monkeypatch.setattr(distributed, "rank_world", lambda r=rank: (r, world))
        batches = list(EvalBatches(n, bs))
        assert len(batches) == len(EvalBatches(n, bs))
        assert all(b in single for b in batches)  # whole single-process batches: same shapes, same numbers
        seen += [i for b in batches for i in b]
    assert sorted(seen) == list(range(n))


def test_gather_refuses_missing_or_duplicated_positions():
    out = [(torch.tensor([0.5, 0.1]), torch.tensor([1, 0])), (torch.tensor([0.3]), torch.tensor([2]))]
    logits, pos = gather_predictions(out, 3)
    assert pos.tolist() == [0, 1, 2] and np.allclose(logits, [0.1, 0.5, 0.3])
    with pytest.raises(RuntimeError, match="1 missing"):
        gather_predictions(out, 4)
    with pytest.raises(RuntimeError, match="1 duplicated"):
        gather_predictions(out + [(torch.tensor([0.9]), torch.tensor([2]))], 3)


# ---------------------------------------------------------------- train state identity, lock

def test_stale_train_state_of_another_run_is_never_restored(tmp_path, capsys):
    from detectors import create_detector

    det = create_detector("smallcnn_tune", pretrained="none")
    opt = torch.optim.SGD(det.parameters(), lr=0.1, momentum=0.9)
    identity = {"run_id": "aaa", "config_hash": "h1", "window": 1, "batches": 10}
    path = tmp_path / TRAIN_STATE
    save_train_state(path, identity, 4, det, opt, None, 1.5, 3)
    doc = load_train_state(path, identity)
    assert doc["batches_done"] == 4 and doc["loss_count"] == 3
    for key, value in det.trainable_state_dict().items():
        assert torch.equal(doc["model"][key], value), key
    assert load_train_state(path, identity | {"run_id": "bbb"}) is None
    assert not path.exists() and len(list(tmp_path.glob(f"{TRAIN_STATE}.stale-*"))) == 1
    assert "run_id: saved 'aaa', now 'bbb'" in capsys.readouterr().err


def test_second_process_on_a_run_directory_is_refused(tmp_path):
    first = RunDir(tmp_path / "exp")
    first.lock()
    try:
        with pytest.raises(RunDirError, match="in use by another genshift process"):
            RunDir(tmp_path / "exp").lock()
    finally:
        first.unlock()
    RunDir(tmp_path / "exp").lock()  # free again once the first let go


# ---------------------------------------------------------------- end to end

KILL_POINTS = ["train_batch:0:5", "predict_batch:0:3", "predictions_tmp:1"]  # training, evaluation, writing


def test_sigkill_at_several_moments_then_rerun_gives_identical_predictions(tmp_path, cache_dir, small_reference):
    reference = small_reference()
    runs = tmp_path / "runs"
    for point in KILL_POINTS:
        proc = run_cli(runs, cache_dir, die_at=point)
        assert proc.returncode == -9, (point, proc.stderr[-3000:])
        if point == "train_batch:0:5":  # killed after batch 5; the state saved after batch 4 is there
            state = torch.load(runs / "exp" / "window_0" / TRAIN_STATE, weights_only=True)
            assert state["batches_done"] == 4 and state["identity"]["window"] == 0
        if point == "predict_batch:0:3":  # the run before was killed after window 0's batch 5
            assert "window 1/2: resuming after batch 4/10" in proc.stdout
        if point == "predictions_tmp:1":  # a half-written predictions file is never taken for a finished one
            assert not (runs / "exp" / "window_1" / "predictions.npz").exists()
            assert not (runs / "exp" / "window_1" / "done").exists()
    proc = run_cli(runs, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "window 2/2: training already finished, weights restored" in proc.stdout
    assert_same_predictions(runs / "exp", reference)
    assert not list((runs / "exp").rglob(".*.tmp"))  # no temporary files left behind
    assert not list((runs / "exp").rglob(TRAIN_STATE))  # finished windows drop their train states


@pytest.mark.slow
def test_sigkill_at_every_point(tmp_path, cache_dir, small_reference):
    reference = small_reference()
    runs = tmp_path / "runs"
    points = ["train_batch:0:1", "train_state_tmp:0:2", "train_batch:0:10", "predict_batch:0:1",
              "predictions_tmp:0", "before_done:0", "train_state_tmp:1:4", "train_batch:1:13", "predict_batch:1:7",
              "before_done:1"]
    for point in points:
        proc = run_cli(runs, cache_dir, die_at=point)
        assert proc.returncode == -9, (point, proc.stderr[-3000:])
        if point == "predict_batch:1:7":
            assert "window 2/2: resuming after batch 12/19" in proc.stdout
    assert run_cli(runs, cache_dir).returncode == 0
    assert_same_predictions(runs / "exp", reference)


@pytest.mark.slow
def test_preemption_signal_checkpoints_exits_75_and_resumes_with_loggers(tmp_path, cache_dir, small_reference):
    reference = small_reference()
    runs = tmp_path / "runs"
    loggers = ["--set", "loggers=[csv,tensorboard,wandb]"]
    proc = run_cli(runs, cache_dir, *loggers, die_at="train_batch:1:7:USR1")
    assert proc.returncode == EXIT_PREEMPTED, proc.stderr[-3000:]
    assert "received SIGUSR1" in proc.stderr and "run the same command again" in proc.stderr
    state = torch.load(runs / "exp" / "window_1" / TRAIN_STATE, weights_only=True)
    assert state["batches_done"] == 7  # saved at the signal, not only at the last multiple of 2
    proc = run_cli(runs, cache_dir, *loggers, die_at="train_batch:1:11:TERM")  # SIGTERM: Lightning's path
    assert proc.returncode == EXIT_PREEMPTED, proc.stderr[-3000:]
    assert torch.load(runs / "exp" / "window_1" / TRAIN_STATE, weights_only=True)["batches_done"] == 11
    proc = run_cli(runs, cache_dir, *loggers)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_predictions(runs / "exp", reference)
    info = json.loads((runs / "exp" / "run.json").read_text())
    assert len(info["attempts"]) == 3 and info["run_id"]

    # One continuous step axis: window 0 has 10 steps, window 1 19; each attempt logs into its own CSV.
    logs = runs / "exp" / "logs"
    import csv

    rows = [r for f in sorted((logs / "csv").glob("attempt_*/metrics.csv")) for r in csv.DictReader(f.open())]
    evals = {int(float(r["window"])): int(r["step"]) for r in rows if r.get("window")}
    assert evals == {0: 10, 1: 29}
    train_steps = sorted({int(r["step"]) for r in rows if r.get("train/loss")})
    assert train_steps[0] >= 1 and train_steps[-1] <= 29 and any(s > 10 for s in train_steps)
    assert list((logs / "tensorboard").rglob("events.out.tfevents.*"))
    wandb_runs = list((logs / "wandb").glob("offline-run-*"))
    assert wandb_runs and all(info["run_id"] in p.name for p in wandb_runs)  # one W&B run id, resumed


def test_force_new_moves_a_run_of_another_config_aside(tmp_path, cache_dir, small_reference, capsys):
    from protocols.cli import main

    reference = small_reference()
    runs = tmp_path / "runs"
    runs.mkdir()
    args = ["run", *SMALL_RUN_FLAGS, "--runs-dir", str(runs), "--cache-dir", str(cache_dir), "--experiment", "exp"]
    assert main([*args, "--set", "train.lr=0.02"]) == 0
    before = (runs / "exp" / "window_0" / "predictions.npz").read_bytes()
    assert main(args) == 2  # refused: another config, differing key named
    assert "train.lr: 0.02 != 0.01" in capsys.readouterr().err
    assert (runs / "exp" / "window_0" / "predictions.npz").read_bytes() == before
    assert main([*args, "--force-new"]) == 0
    aside = list(runs.glob("exp.old-*"))
    assert len(aside) == 1 and (aside[0] / "window_0" / "predictions.npz").read_bytes() == before
    assert_same_predictions(runs / "exp", reference)
