"""genshift detectors: the Detector contract, the name registry, and pretrained-weight handling."""

from .base import Detector, DetectorMeta, count_flops
from .checkpoint import CheckpointError, load_detector_from_checkpoint
from .registry import UnknownDetectorError, create_detector, list_detectors, register_detector, split_mode
from .weights import WeightsMismatchError, WeightsUnavailableError

__all__ = [
    "CheckpointError",
    "Detector",
    "DetectorMeta",
    "UnknownDetectorError",
    "WeightsMismatchError",
    "WeightsUnavailableError",
    "count_flops",
    "create_detector",
    "list_detectors",
    "load_detector_from_checkpoint",
    "register_detector",
    "split_mode",
]
