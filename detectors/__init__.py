"""genshift detectors: the Detector contract, the name registry, and pretrained-weight handling.

Importing the package imports only the registry; the names below that need torch load on first access, so
a name check (``check_name``, the CLI's typo path) never pays for torch or a model library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .registry import (
    UnknownDetectorError,
    check_name,
    create_detector,
    init_seed_kwargs,
    list_detectors,
    register_detector,
    split_mode,
)

if TYPE_CHECKING:
    from .base import Detector, DetectorMeta, count_flops
    from .checkpoint import CheckpointError, load_detector_from_checkpoint
    from .weights import WeightsMismatchError, WeightsUnavailableError

# attribute -> submodule that defines it, imported on first access (PEP 562)
_LAZY = {
    "Detector": "base", "DetectorMeta": "base", "count_flops": "base",
    "CheckpointError": "checkpoint", "load_detector_from_checkpoint": "checkpoint",
    "WeightsMismatchError": "weights", "WeightsUnavailableError": "weights",
}

__all__ = [
    "CheckpointError",
    "Detector",
    "DetectorMeta",
    "UnknownDetectorError",
    "WeightsMismatchError",
    "WeightsUnavailableError",
    "check_name",
    "count_flops",
    "create_detector",
    "init_seed_kwargs",
    "list_detectors",
    "load_detector_from_checkpoint",
    "register_detector",
    "split_mode",
]


def __getattr__(name: str) -> Any:
    """Load the torch-dependent exports on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
