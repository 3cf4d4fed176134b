"""Any timm model as a detector: ``timm:<model>_<probe|tune>`` (headless backbone, num_classes=0).

Input size and mean/std come from the model's own pretrained_cfg. ``pretrained``: 'default' (timm's default
tag), another timm tag, a local file (loaded strictly; the source classifier is discarded; known foreign
layouts are converted, see weights.KEY_CONVERTERS), or 'none'.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Detector
from .registry import UnknownDetectorError, closest_names, split_mode
from .weights import (
    ensure_downloadable,
    hf_cache_hint,
    hf_cached_file,
    load_file_into,
    parse_source,
    provide_hint,
    torch_hub_cache_hint,
    torch_hub_cached_file,
)

PREFIX = "timm:"
_HF_FILES = ("model.safetensors", "pytorch_model.bin")


def check_timm_model(name: str, arch: str, prefix: str = PREFIX) -> None:
    """UnknownDetectorError with timm's closest models unless timm knows ``arch`` (a '.tag' suffix is ignored)."""
    import timm

    if not arch or not timm.is_model(arch.split(".")[0]):
        close = closest_names(arch, timm.list_models()) if arch else []
        raise UnknownDetectorError(
            f"unknown detector {name!r}: timm has no model {arch!r}. Closest timm models: {close or 'none'}",
            name, [f"{prefix}{c}_{split_mode(name)[1]}" for c in close],
        )


def check_timm_name(name: str) -> None:
    """Library check of a ``timm:<model>_<mode>`` name (imports timm, builds nothing)."""
    check_timm_model(name, split_mode(name[len(PREFIX):])[0])


def _ensure_hub_weights(arch_tag: str, cfg) -> None:
    """Make sure timm's own download will find the file: cached already, or network is reachable."""
    if cfg.hf_hub_id:
        if hf_cached_file(cfg.hf_hub_id, _HF_FILES):
            return
        url = f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/{_HF_FILES[0]}"
        ensure_downloadable(url, f"timm weights {arch_tag}",
                            provide_hint(_HF_FILES[0], hf_cache_hint(cfg.hf_hub_id, _HF_FILES[0])))
    elif cfg.url:
        if torch_hub_cached_file(cfg.url):
            return
        ensure_downloadable(cfg.url, f"timm weights {arch_tag}",
                            provide_hint(cfg.url.rsplit("/", 1)[-1], torch_hub_cache_hint(cfg.url)))
    else:
        raise ValueError(f"timm {arch_tag} has no downloadable weights (no hf_hub_id or url in its pretrained_cfg)")


def build_timm(
    name: str,
    arch: str,
    mode: str,
    pretrained: str,
    *,
    family: str = "timm",
    default_tag: str | None = None,
    key_map: str | None = "auto",
    transform: Callable[[dict, Any], dict] | None = None,
    **kwargs,
) -> Detector:
    """Headless timm ``arch`` wrapped as a Detector; shared by ``timm:*`` and named families such as DINOv2.

    ``pretrained``: 'default' (``default_tag`` or timm's default), a timm tag, a file, or 'none'. kwargs go to
    timm.create_model; an ``img_size`` there fixes the input size (pretrained position embeddings are resampled).
    """
    import timm

    source = parse_source(pretrained)
    base_arch = arch.split(".")[0]
    if source.kind == "tag":
        tag = default_tag if source.value == "default" else source.value
        arch_tag = arch if tag is None else f"{base_arch}.{tag}"
        cfg = timm.models.get_pretrained_cfg(arch_tag)
        if cfg is None:
            tags = timm.list_pretrained(f"{base_arch}.*")
            raise ValueError(f"timm has no pretrained weights {arch_tag!r}; available: {tags or 'none'}")
        _ensure_hub_weights(arch_tag, cfg)
        backbone = timm.create_model(arch_tag, pretrained=True, num_classes=0, **kwargs)
        described = cfg.tag or tag or "default"  # the bare tag: passing it back as pretrained rebuilds the same model
    else:
        backbone = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
        described = source.describe()
        if source.kind == "file":
            classifier = backbone.pretrained_cfg.get("classifier") or ""
            prefixes = classifier if isinstance(classifier, (tuple, list)) else [classifier]
            load_file_into(backbone, source.value, drop_prefixes=prefixes, key_map=key_map, transform=transform)
    pcfg = backbone.pretrained_cfg
    img_size = kwargs.get("img_size")
    if img_size is not None:
        input_size = int(img_size[-1] if isinstance(img_size, (tuple, list)) else img_size)
    else:
        input_size = int(pcfg.get("input_size", (3, 224, 224))[-1])
    # With num_classes=0 timm returns pooled features of size head_hidden_size where a pre-logits layer exists.
    feature_dim = int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)
    return Detector(
        backbone, name=name, family=family, backbone_name=arch, mode=mode, input_size=input_size,
        mean=tuple(pcfg.get("mean", (0.485, 0.456, 0.406))), std=tuple(pcfg.get("std", (0.229, 0.224, 0.225))),
        feature_dim=feature_dim, pretrained=described, eval_resize="resize_center_crop",
    )


def make_timm(name: str, pretrained: str = "default", key_map: str | None = "auto", **kwargs) -> Detector:
    """Factory for ``timm:<model>_<mode>``; kwargs go to timm.create_model."""
    if not name.startswith(PREFIX):
        raise UnknownDetectorError(f"{name!r} is not a timm detector name (expected '{PREFIX}<model>_<mode>')", name)
    arch, mode = split_mode(name[len(PREFIX):])
    check_timm_name(name)
    return build_timm(name, arch, mode, pretrained, key_map=key_map, **kwargs)
