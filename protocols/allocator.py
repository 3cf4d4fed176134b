"""glibc's malloc settings for genshift's processes (stdlib only: the CLI applies them before importing torch)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform

# glibc's malloc maps every block above a threshold (at most 32 MiB when left to adapt) fresh from the OS and
# unmaps it on free, and trims freed memory at the top of its heap. A conv net's activations over a 256-image
# eval batch are such blocks (SmallCNN at 56 px: 25-51 MiB), so each batch page-faulted them in again:
# scoring the embedded benchmark's eval split took 330-430 ms inside a run instead of 210-240 ms.
MALLOC_MMAP_THRESHOLD = 256 << 20  # blocks up to this size come from the heap and are reused
MALLOC_TRIM_THRESHOLD = 512 << 20  # freed memory kept for reuse before the heap is trimmed
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "LD_PRELOAD")


@functools.cache
def keep_large_allocations() -> dict | None:
    """Have glibc's malloc keep and reuse large blocks (tensors up to 256 MiB) instead of mapping them from the OS
    anew each time; returns the settings applied, for run.json, or None where they do not apply. Applied once per
    process: later calls (the CLI, the engine, the run.json record) return the first call's answer.

    Left alone where the process is not on glibc, or where the user chose the allocator's settings themselves
    (GLIBC_TUNABLES with glibc.malloc, MALLOC_*_ variables) or may have preloaded another allocator (LD_PRELOAD).
    """
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
