"""open_clip image towers as detectors (``RN50_probe``, ``RN50_tune``, ``ViT-L-14_probe``, ...).

Only the visual tower is kept; its output (the CLIP image embedding) feeds the linear head. Weights come from
the open_clip pretrained tag (default 'openai'), resolved from the local cache first; without network the
failure is immediate and says which file to fetch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from .base import Detector
from .registry import register_detector, split_mode
from .weights import (
    WeightsMismatchError,
    WeightsUnavailableError,
    ensure_downloadable,
    hf_cache_hint,
    hf_cached_file,
    parse_source,
    provide_hint,
)

# open_clip architectures that have an 'openai' tag; importing open_clip to list them would cost seconds.
OPENAI_MODELS = ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336")
DEFAULT_TAG = "openai"
_HF_DEFAULT_FILE = "open_clip_pytorch_model.bin"
_HF_SAFE_FILE = "open_clip_model.safetensors"


def _resolve_tag_file(arch: str, tag: str) -> tuple[str, dict]:
    """Local path of the checkpoint for (arch, tag): cached file, or a download when possible, else a fast error."""
    from open_clip import pretrained as oc_pretrained

    cfg = oc_pretrained.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = oc_pretrained.list_pretrained_tags_by_model(arch)
        raise ValueError(f"open_clip has no pretrained tag {tag!r} for {arch}; known tags: {tags}, "
                         "or pass a local weight file / 'none'")
    hub = cfg.get("hf_hub", "")
    if hub:
        if hub.endswith("/"):  # open_clip convention: trailing slash means the default file name
            repo_id, filename = hub[:-1], _HF_DEFAULT_FILE
        else:
            repo_id, filename = os.path.split(hub)
        candidates = [_HF_SAFE_FILE, filename] if filename == _HF_DEFAULT_FILE else [filename]
        cached = hf_cached_file(repo_id, candidates)
        if cached:
            return cached, cfg
        url = f"https://huggingface.co/{repo_id}/resolve/main/{filename}"
        ensure_downloadable(url, f"open_clip weights {arch}/{tag}",
                            provide_hint(filename, hf_cache_hint(repo_id, filename)))
    elif cfg.get("url"):
        url = cfg["url"]
        cache = os.path.expanduser(os.path.join("~", ".cache", "clip", os.path.basename(url)))
        if os.path.isfile(cache):
            return cache, cfg
        ensure_downloadable(url, f"open_clip weights {arch}/{tag}",
                            provide_hint(os.path.basename(url), f"{cache} (open_clip URL cache)"))
    else:
        raise WeightsUnavailableError(f"open_clip tag {arch}/{tag} has neither hf_hub nor url in its config: {cfg}")
    path = oc_pretrained.download_pretrained(cfg)
    if not path or not os.path.isfile(path):
        raise WeightsUnavailableError(f"open_clip returned no file for {arch}/{tag} (got {path!r})")
    return path, cfg


@contextmanager
def _quiet_random_init_warning(active: bool) -> Iterator[None]:
    """Hide open_clip's 'initialized randomly' root-log warning, which is false when weights are loaded next."""

    def _filter(record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    if active:
        root.addFilter(_filter)
    try:
        yield
    finally:
        root.removeFilter(_filter)


def _load_visual(model, path: str, arch: str) -> None:
    """Load a full CLIP checkpoint via open_clip's converters; every missing or unexpected key is an error."""
    import open_clip

    incompatible = open_clip.load_checkpoint(model, path, strict=False)
    missing = list(getattr(incompatible, "missing_keys", []))
    unexpected = list(getattr(incompatible, "unexpected_keys", []))
    if missing or unexpected:
        raise WeightsMismatchError(
            f"weights from {path} do not match open_clip {arch}: missing keys ({len(missing)}): {missing[:25]}; "
            f"unexpected keys ({len(unexpected)}): {unexpected[:25]}",
            sorted(missing), sorted(unexpected), [],
        )


def make_openclip(name: str, pretrained: str = "default", **kwargs) -> Detector:
    """Factory for ``<open_clip arch>_<mode>``; pretrained is 'default' (=openai), a tag, a file, or 'none'."""
    import open_clip

    arch, mode = split_mode(name)
    source = parse_source(DEFAULT_TAG if pretrained == "default" else pretrained)
    path, cfg = _resolve_tag_file(arch, source.value) if source.kind == "tag" else (None, {})  # fail before building
    with _quiet_random_init_warning(active=source.kind != "none"):  # we load the weights ourselves right after
        model = open_clip.create_model(arch, pretrained=None, **kwargs)
    visual = model.visual
    pp = dict(getattr(visual, "preprocess_cfg", {}) or {})
    mean = cfg.get("mean", pp.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = cfg.get("std", pp.get("std", open_clip.OPENAI_DATASET_STD))
    if source.kind != "none":
        _load_visual(model, path or source.value, arch)
    size = visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    return Detector(
        visual, name=name, family="open_clip", backbone_name=arch, mode=mode, input_size=size, mean=mean, std=std,
        feature_dim=int(visual.output_dim), pretrained=source.describe(), eval_resize="resize_center_crop",
    )


for _arch in OPENAI_MODELS:
    register_detector(_arch, make_openclip)
