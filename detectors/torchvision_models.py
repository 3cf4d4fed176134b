"""torchvision classification models as detectors: ``torchvision:<model>_<mode>`` and ``resnet18_<mode>``.

The model's last nn.Linear (its classifier) is replaced by Identity; its in_features is the feature size.
Input size and mean/std come from the weights' own transforms. ``pretrained``: 'default' (the DEFAULT
weights), a weights name such as 'IMAGENET1K_V1', a local file (loaded strictly, classifier discarded), or 'none'.
"""

from __future__ import annotations

from torch import nn

from .base import Detector
from .registry import UnknownDetectorError, closest_names, split_mode
from .weights import (
    ensure_downloadable,
    load_file_into,
    parse_source,
    provide_hint,
    torch_hub_cache_hint,
    torch_hub_cached_file,
)

PREFIX = "torchvision:"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _strip_classifier(model: nn.Module, arch: str) -> tuple[str, int]:
    """Replace the last nn.Linear by Identity; return its qualified name and in_features."""
    last = None
    for qual, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            last = (qual, mod)
    if last is None:
        raise ValueError(f"torchvision {arch} has no nn.Linear classifier to replace; it is not supported")
    qual, linear = last
    parent_name, _, child = qual.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, nn.Identity())
    return qual, int(linear.in_features)


def _weights_enum(arch: str):
    from torchvision import models

    try:
        return models.get_model_weights(arch)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"torchvision model {arch!r} has no weights enum ({exc})") from exc


def check_torchvision_name(name: str) -> tuple[str, str]:
    """(model, mode) of a torchvision detector name, or UnknownDetectorError with torchvision's closest models."""
    from torchvision import models

    full = name if name.startswith(PREFIX) else PREFIX + name
    arch, mode = split_mode(full[len(PREFIX):])
    available = models.list_models(module=models)
    if arch not in available:
        close = closest_names(arch, available)
        raise UnknownDetectorError(
            f"unknown detector {name!r}: torchvision has no classification model {arch!r}. "
            f"Closest: {close or 'none'}", name, [f"{PREFIX}{c}_{mode}" for c in close],
        )
    return arch, mode


def make_torchvision(name: str, pretrained: str = "default", **kwargs) -> Detector:
    """Factory for ``torchvision:<model>_<mode>`` (and aliases such as ``resnet18_<mode>``)."""
    from torchvision import models

    arch, mode = check_torchvision_name(name)
    source = parse_source(pretrained)
    enum = _weights_enum(arch)
    if source.kind == "tag":
        tag = "DEFAULT" if source.value == "default" else source.value
        try:
            weights = enum[tag]
        except KeyError:
            raise ValueError(f"torchvision {arch} has no weights {tag!r}; available: {[w.name for w in enum]}") from None
        if not torch_hub_cached_file(weights.url):
            fname = weights.url.rsplit("/", 1)[-1]
            ensure_downloadable(weights.url, f"torchvision weights {arch}.{weights.name}",
                                provide_hint(fname, torch_hub_cache_hint(weights.url)))
        model = models.get_model(arch, weights=weights, **kwargs)
        described = weights.name  # the bare weights name: passing it back as pretrained rebuilds the same model
    else:
        weights = enum.DEFAULT  # only for its preprocessing metadata (input size, mean/std); nothing is loaded
        model = models.get_model(arch, weights=None, **kwargs)
        described = source.describe()
    classifier, feature_dim = _strip_classifier(model, arch)
    if source.kind == "file":
        load_file_into(model, source.value, drop_prefixes=[classifier], key_map=None)
    tf = weights.transforms()
    mean, std = tuple(getattr(tf, "mean", IMAGENET_MEAN)), tuple(getattr(tf, "std", IMAGENET_STD))
    crop = getattr(tf, "crop_size", [224])
    input_size = int(crop[0] if isinstance(crop, (list, tuple)) else crop)
    return Detector(
        model, name=name, family="torchvision", backbone_name=arch, mode=mode, input_size=input_size,
        mean=mean, std=std, feature_dim=feature_dim, pretrained=described, eval_resize="resize_center_crop",
    )
