"""Efficient defaults (protocols/speed.py): glibc's malloc keeps large blocks (it stops mapping them from the OS
anew), unless the user chose the allocator's settings; `precision: auto` refuses unknown values."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
from helpers import ROOT

from protocols.allocator import MALLOC_MMAP_THRESHOLD
from protocols.speed import resolve_precision

REPO = ROOT
glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt and mallinfo2 are glibc's")

# A child process (the allocator's settings are process-wide): allocate one 64 MiB block with malloc and print
# how many bytes glibc holds in mmapped blocks (mallinfo2.hblkhd) before and while it is allocated.
PROBE = """
import ctypes, sys
from protocols.allocator import keep_large_allocations

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
applied = keep_large_allocations() if sys.argv[1] == "tuned" else None
before = libc.mallinfo2().hblkhd
block = libc.malloc(64 << 20)
print(applied is not None, libc.mallinfo2().hblkhd - before)
libc.free(ctypes.c_void_p(block))
"""


def _env_without_allocator_choices() -> dict:
    """This environment less anything by which the user chooses malloc settings (those leave the default be)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}


def _probe(mode: str, env: dict) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env=env, cwd=REPO)
    applied, mapped = out.stdout.split()
    return applied == "True", int(mapped)


@glibc
def test_large_blocks_come_from_the_heap_once_tuned():
    env = _env_without_allocator_choices()
    applied, mapped = _probe("default", env)
    assert not applied and mapped >= 64 << 20  # glibc's default: a fresh mapping for the block
    applied, mapped = _probe("tuned", env)
    assert applied and mapped == 0 and MALLOC_MMAP_THRESHOLD > 64 << 20  # served from (and kept in) the heap


@glibc
def test_the_users_own_allocator_settings_are_left_alone():
    env = _env_without_allocator_choices() | {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    applied, mapped = _probe("tuned", env)
    assert not applied and mapped >= 64 << 20  # the user's 1 MiB threshold holds


def test_unknown_precision_names_the_key_and_the_choices():
    with pytest.raises(ValueError, match="eval.precision: unknown precision 'fp8'; expected one of auto"):
        resolve_precision("fp8", {"accelerator": "cpu"}, "eval.precision")
