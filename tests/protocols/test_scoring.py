"""The single-process scoring loop (protocols/scoring.py) gives Lightning predict's logits bit for bit, leaves
every submodule's mode and the weights as they were, and stops between batches when a signal asks."""

from __future__ import annotations

import signal

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from detectors import create_detector, init_seed_kwargs
from protocols import resume
from protocols.cached_data import ArrayEval
from protocols.distributed import EvalBatches, gather_predictions
from protocols.module import DetectorModule
from protocols.scoring import score_batches
from protocols.speed import bf16_supported, resolve_train_cfg
from protocols.trainer import quiet_lightning

PRECISIONS = ["32-true", pytest.param("bf16-mixed", marks=pytest.mark.skipif(
    not bf16_supported(False), reason="this CPU has no native bf16"))]


def _detector(name: str):
    det = create_detector(name, pretrained="none", **init_seed_kwargs(name, 0))
    tc = resolve_train_cfg({"train": {"precision": "32-true", "channels_last": "auto"}, "accelerator": "cpu"}, det)
    if tc["channels_last"]:
        det.to(memory_format=torch.channels_last)
    det.train()  # as the engine leaves it after a window's training
    return det, tc


def _pixels(det, n: int = 70) -> np.ndarray:
    s = det.meta.input_size
    return np.random.default_rng(3).integers(0, 256, (n, 3, s, s), dtype=np.uint8)


def _lightning_logits(det, tc, arr, precision):
    quiet_lightning()  # the engine's filters: the batch sampler returns every index
    loader = DataLoader(ArrayEval(arr), batch_sampler=EvalBatches(len(arr), 32))
    trainer = L.Trainer(accelerator="cpu", devices=1, precision=precision, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=False, deterministic=True)
    return gather_predictions(trainer.predict(DetectorModule(det, tc, 1), dataloaders=loader), len(arr))


def _plain_logits(det, tc, arr, precision):
    loader = DataLoader(ArrayEval(arr), batch_sampler=EvalBatches(len(arr), 32))
    out = score_batches(DetectorModule(det, tc, 1), loader, precision, torch.device("cpu"))
    return gather_predictions(out, len(arr))


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", ["smallcnn_tune", "smallcnn_probe"])
def test_plain_loop_equals_lightning_predict_and_restores_modes(name, precision):
    det, tc = _detector(name)
    arr = _pixels(det)
    modes = {n: m.training for n, m in det.named_modules()}
    state = {k: v.clone() for k, v in det.state_dict().items()}
    plain, pos = _plain_logits(det, tc, arr, precision)
    assert {n: m.training for n, m in det.named_modules()} == modes  # a probe's frozen backbone stays in eval
    assert all(torch.equal(v, det.state_dict()[k]) for k, v in state.items())  # BatchNorm ran on running stats
    reference, ref_pos = _lightning_logits(det, tc, arr, precision)
    assert {n: m.training for n, m in det.named_modules()} == modes
    assert plain.dtype == np.float32 and plain.shape == (len(arr),)
    assert np.array_equal(pos, np.arange(len(arr))) and np.array_equal(ref_pos, pos)
    assert np.array_equal(plain, reference)  # bit for bit, not merely close
    assert np.unique(plain).size > len(arr) // 2  # real scores, not a constant that any two loops would agree on


def test_plain_loop_stops_between_batches_on_a_signal(monkeypatch):
    det, tc = _detector("smallcnn_tune")
    monkeypatch.setattr(resume, "_requested", [signal.SIGTERM])
    with pytest.raises(resume.Preempted, match="SIGTERM while scoring window 2"):
        _ = score_batches(DetectorModule(det, tc, 1), DataLoader(ArrayEval(_pixels(det, 8)), batch_size=4),
                               "32-true", torch.device("cpu"), label="scoring window 2")
    assert det.training  # the mode is restored on the way out


def test_unknown_precision_is_refused_with_the_choices():
    det, tc = _detector("smallcnn_tune")
    with pytest.raises(ValueError, match="'64-true'.*32-true, bf16-mixed or 16-mixed"):
        score_batches(DetectorModule(det, tc, 1), DataLoader(ArrayEval(_pixels(det, 4)), batch_size=4),
                           "64-true", torch.device("cpu"))
