"""genshift detectors: the Detector contract, the name registry, and pretrained-weight handling."""

from .base import Detector, DetectorMeta, count_flops
from .registry import UnknownDetectorError, create_detector, list_detectors, register_detector, split_mode
from .weights import WeightsMismatchError, WeightsUnavailableError

__all__ = [
    "Detector",
    "DetectorMeta",
    "UnknownDetectorError",
    "WeightsMismatchError",
    "WeightsUnavailableError",
    "count_flops",
    "create_detector",
    "list_detectors",
    "register_detector",
    "split_mode",
]
