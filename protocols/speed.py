"""Efficient defaults resolved for this machine: precision `auto` (bf16 autocast where supported) and
channels-last `auto` (on for convolutional nets). Resolved values are recorded in run.json."""

from __future__ import annotations

import torch
from torch import nn

PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")


def uses_cuda(cfg: dict) -> bool:
    """Whether Lightning's accelerator for this config will be a CUDA GPU."""
    acc = str(cfg.get("accelerator", "auto") or "auto")
    return acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available())


def bf16_supported(cuda: bool) -> bool:
    """bf16 autocast runs natively: a GPU with bf16, or a CPU with AVX512-BF16/AMX (oneDNN)."""
    if cuda:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(value: str, cfg: dict, key: str) -> str:
    """`auto` -> bf16-mixed where the hardware supports it, else 32-true; other values are checked and kept."""
    value = str(value)
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


def resolve_train_cfg(cfg: dict, model: nn.Module) -> dict:
    """A copy of cfg['train'] with precision and channels_last resolved for this machine and model."""
    tc = dict(cfg["train"])
    tc["precision"] = resolve_precision(tc["precision"], cfg, "train.precision")
    tc["channels_last"] = resolve_channels_last(tc.get("channels_last", False), model)
    return tc


# glibc's malloc maps every block above a threshold (at most 32 MiB when left to adapt) fresh from the OS and
# unmaps it on free, and trims freed memory at the top of its heap. A conv net's activations over a 256-image
# eval batch are such blocks (SmallCNN at 56 px: 25-51 MiB), so each batch page-faulted them in again:
# scoring the embedded benchmark's eval split took 330-430 ms inside a run instead of 210-240 ms.
MALLOC_MMAP_THRESHOLD = 256 << 20  # blocks up to this size come from the heap and are reused
MALLOC_TRIM_THRESHOLD = 512 << 20  # freed memory kept for reuse before the heap is trimmed
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "LD_PRELOAD")


def keep_large_allocations() -> dict | None:
    """Have glibc's malloc keep and reuse large blocks (tensors up to 256 MiB) instead of mapping them from the OS
    anew each time; returns the settings applied, for run.json, or None where they do not apply.

    Left alone where the process is not on glibc, or where the user chose the allocator's settings themselves
    (GLIBC_TUNABLES with glibc.malloc, MALLOC_*_ variables, or another allocator through LD_PRELOAD).
    """
    import ctypes
    import ctypes.util
    import os
    import platform

    if platform.libc_ver()[0] != "glibc":
        return None
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(os.environ.get(k) for k in _MALLOC_ENV):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not (libc.mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD) and
            libc.mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD)):
        raise RuntimeError("glibc's mallopt refused genshift's malloc settings (mmap threshold "
                           f"{MALLOC_MMAP_THRESHOLD >> 20} MiB, trim threshold {MALLOC_TRIM_THRESHOLD >> 20} MiB); "
                           "set MALLOC_MMAP_THRESHOLD_ in the environment to choose your own")
    return {"mmap_threshold": MALLOC_MMAP_THRESHOLD, "trim_threshold": MALLOC_TRIM_THRESHOLD}
