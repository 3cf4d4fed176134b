"""Efficient defaults resolved for this machine: precision `auto` (bf16 autocast where supported) and
channels-last `auto` (on for convolutional nets). Resolved values are recorded in run.json."""

from __future__ import annotations

import torch
from torch import nn

from protocols.config_enums import Accelerator, Precision
from protocols.config_model import ConfigLike, run_config

PRECISIONS = tuple(Precision)


def uses_cuda(cfg: ConfigLike) -> bool:
    """Whether Lightning's accelerator for this config will be a CUDA GPU."""
    acc = run_config(cfg).accelerator
    return acc in (Accelerator.GPU, Accelerator.CUDA) or (acc is Accelerator.AUTO and torch.cuda.is_available())


def bf16_supported(cuda: bool) -> bool:
    """bf16 autocast runs natively: a GPU with bf16, or a CPU with AVX512-BF16/AMX (oneDNN)."""
    if cuda:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(value: str, cfg: ConfigLike, key: str) -> str:
    """`auto` -> bf16-mixed where the hardware supports it, else 32-true; other values are checked and kept."""
    value = str(value.value if isinstance(value, Precision) else value)
    if value not in PRECISIONS:
        raise ValueError(f"{key}: unknown precision {value!r}; expected one of {', '.join(PRECISIONS)}")
    if value != "auto":
        return value
    return "bf16-mixed" if bf16_supported(uses_cuda(cfg)) else "32-true"


def is_conv_net(model: nn.Module) -> bool:
    """A convolutional net: most of its weights are in Conv2d layers with kernels larger than 1×1 beyond a
    patch embedding (a ViT's single patchify conv does not count)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return len(convs) >= 3


def resolve_channels_last(value, model: nn.Module, key: str = "train.channels_last") -> bool:
    """`auto` -> channels-last for conv nets; true/false kept."""
    if value == "auto":
        return is_conv_net(model)
    if isinstance(value, bool):
        return value
    raise ValueError(f"{key}: expected auto, true or false, got {value!r}")


def resolve_train_cfg(cfg: ConfigLike, model: nn.Module) -> dict:
    """The `train` section as a mapping (what DetectorModule reads) with precision and channels_last resolved for
    this machine and model, and the input statistics (`eval.normalize`, protocols/pipeline.py) every
    DetectorModule normalises with."""
    from protocols.pipeline import resolve_pipeline

    rc = run_config(cfg)
    tc = rc.to_dict()["train"]
    tc["precision"] = resolve_precision(rc.train.precision, rc, "train.precision")
    tc["channels_last"] = resolve_channels_last(rc.train.channels_last, model)
    if getattr(model.meta, "input_kind", "image") == "image":  # sequence detectors take their inputs unnormalised
        pipe = resolve_pipeline(rc, model.meta)
        tc["normalize"] = {"name": pipe.normalize, "mean": list(pipe.mean), "std": list(pipe.std)}
    return tc
