"""aigenbench-baseline training copies, gradient accumulation and drop_last (the reference's training recipe)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from benchmark.reference_train_augment import deterministic_copy, deterministic_seed, post_seed, training_copy
from protocols.distributed import TrainBatches
from protocols.resume import WindowCheckpointer


def _img(h=180, w=240, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_seed_rule_is_the_references():
    assert deterministic_seed(4321, 0, 0) == 4321
    assert deterministic_seed(4321, 7, 3) == 4321 + 3 * 2**27 + 7
    assert deterministic_seed(2**31 - 10, 5, 1) == (2**31 - 10 + 2**27) % 2**31 + 5
    with pytest.raises(ValueError, match="outside"):
        deterministic_seed(2**31 - 2, 5, 0)


def test_training_copy_is_reproducible_and_leaves_global_rngs_alone():
    img = _img()
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    before = (torch.rand(1), random.random(), np.random.rand())
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    a = training_copy(img, 5, 1, 56, run_seed=0, window=2)
    assert (torch.rand(1), random.random(), np.random.rand()) == before
    b = training_copy(img, 5, 1, 56, run_seed=0, window=2)
    assert a.dtype == torch.float32 and a.shape == (3, 56, 56) and torch.equal(a, b)
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    # the deterministic part depends on (position, copy) only; the rot90/flip/resize on the run seed and window too
    assert torch.equal(deterministic_copy(img, 5, 1), deterministic_copy(img, 5, 1))
    assert not torch.equal(deterministic_copy(img, 5, 1), deterministic_copy(img, 6, 1))
    assert post_seed(0, 2, 5, 1) != post_seed(0, 3, 5, 1) != post_seed(1, 2, 5, 1)
    others = [training_copy(img, 5, 1, 56, run_seed=s, window=w) for s, w in ((1, 2), (0, 3), (4, 4), (5, 5))]
    assert any(not torch.equal(a, o) for o in others)


def test_train_batches_drop_last():
    assert len(TrainBatches(10, 4, 1, 0)) == 3
    batches = list(TrainBatches(10, 4, 2, 0, drop_last=True))
    assert len(batches) == 4 and all(len(b) == 4 for b in batches)
    full = list(TrainBatches(10, 4, 2, 0))
    assert [b for b in full if len(b) == 4] == batches  # the same order, only the short batches are gone


def test_checkpointer_saves_only_between_optimizer_steps(tmp_path):
    cp = WindowCheckpointer(tmp_path / "s.pt", {}, every_n=1, start=0, total=10, resume=None, writer=True,
                            accumulate=4)
    steps = []
    for done in range(1, 11):
        cp.done = done
        steps.append(cp._at_step_boundary())
    assert steps == [False, False, False, True, False, False, False, True, False, True]


def _train_head(tmp_path, name: str, **train):
    from protocols.config import resolve_config
    from protocols.engine import run_experiment

    cfg = resolve_config("smoke", overrides=[{
        "runs_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path.parent / "shared-cache"), "experiment": name,
        "detector": "smallcnn_probe", "loggers": [], "threads": 1,
        "benchmark": {"generators_per_window": 25},
        "train": {"num_workers": 0, "precision": "32-true", "grad_clip": 0.0} | train,
        "eval": {"precision": "32-true"}}])
    run = run_experiment(cfg, progress=False)
    from safetensors.torch import load_file

    return load_file(str(run / "window_0" / "checkpoint.safetensors")), run


def test_accumulated_batches_equal_one_large_batch(tmp_path):
    """batch 8 with 2 accumulated steps = batch 16: the same samples per optimizer step, the same number of
    OneCycleLR steps; a probe's head ends with the same weights (up to float summation order)."""
    a, _ = _train_head(tmp_path, "acc", batch_size=8, accumulate_grad_batches=2)
    b, _ = _train_head(tmp_path, "big", batch_size=16)
    c, _ = _train_head(tmp_path, "small", batch_size=8)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    assert any(not torch.allclose(a[k], c[k], atol=1e-6) for k in a)  # without accumulation it differs
