"""The one scoring function: `score_batches` runs batches through `DetectorModule.predict_step`. The engine (every
window, the untrained model, validation and test datasets), `genshift bench`, `genshift robustness` and
`genshift predict` all score with it.

Lightning's `Trainer.predict` sets up a strategy, hooks and a fetcher on every call: about 10 ms on the 2-core
development CPU, whatever the number of images. Once the eval pixels are cached, a small detector scores the
whole eval split in a fraction of a second, so that set-up is a visible share of every window's evaluation
(the target: evaluation from the cache costs at most 1.2× the model forward). A single-process run therefore
scores with this loop; several processes (DDP) pass a Trainer and keep Lightning's predict, which deals batches
to ranks. Both call the same `predict_step` under the same autocast and inference mode, so their logits are
bit-identical (tested).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader

from benchmark.progress import counted_progress
from protocols.config_model import ConfigLike
from protocols.module import DetectorModule
from protocols.resume import check_stop
from protocols.speed import uses_cuda

# Lightning's mixed-precision plugin: autocast to these dtypes (on CPU and GPU alike); "32-true" runs as is.
AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def eval_device(cfg: ConfigLike) -> torch.device:
    """The device a single-process run scores on: the GPU Lightning trains on, else the CPU."""
    return torch.device("cuda") if uses_cuda(cfg) else torch.device("cpu")


def autocast_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast that Lightning's `precision` applies around predict_step, for `device`."""
    if precision in AUTOCAST_DTYPES:
        return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])
    if precision != "32-true":
        raise ValueError(f"eval precision {precision!r}: expected 32-true, bf16-mixed or 16-mixed")
    return contextlib.nullcontext()


def score_batches(module: DetectorModule, loader: DataLoader, precision: str, device: torch.device,
                  progress: bool = False, label: str = "scoring", callbacks: Sequence = (), trainer=None) -> list:
    """predict_step's output for every batch of `loader`, in order ([(logits, positions), …] like Trainer.predict).

    ``callbacks``: Lightning callbacks whose ``on_predict_batch_start`` runs before every batch (the engine's window
    hooks). ``trainer``: a Trainer (`protocols.trainer`) to predict with instead (several processes); then its own
    callbacks are used. Otherwise the module runs in eval mode on `device` under inference mode and `precision`'s autocast. Afterwards every
    submodule is back in its own former mode (a probe's frozen backbone stays in eval) and the module is on the
    CPU, as Lightning leaves them. A signal that asks to stop (protocols.resume) ends the loop between batches
    with `Preempted`; the caller writes nothing until every batch is in.
    """
    if trainer is not None:
        return trainer.predict(module, dataloaders=loader)
    modes = {m: m.training for m in module.modules()}  # as Lightning: every submodule's own mode comes back
    module.to(device).eval()
    outputs = []
    try:
        with counted_progress(progress) as bar, torch.inference_mode(), autocast_context(precision, device):
            task = bar.add_task(label, total=len(loader))
            for i, batch in enumerate(loader):
                check_stop(f"while {label}")
                for cb in callbacks:
                    cb.on_predict_batch_start(None, module, batch, i)
                batch = [b.to(device, non_blocking=True) if isinstance(b, torch.Tensor) else b for b in batch]
                outputs.append(module.predict_step(batch, i))
                bar.advance(task)
    finally:
        for m, training in modes.items():
            m.training = training
        module.to("cpu")
    return outputs
