"""open_clip image towers as detectors: ``RN50_probe``, ``ViT-L-14_tune``, ... (OpenAI weights) and any
open_clip model/tag as ``openclip:<model>@<tag>_<mode>`` (e.g. ``openclip:ViT-B-32@laion2b_s34b_b79k_probe``).

Only the visual tower is kept; its output (the CLIP image embedding) feeds the linear head. Weights come from
the open_clip pretrained tag (default 'openai'), resolved from the local cache first; without network the
failure is immediate and says which file to fetch.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager

from .base import Detector
from .registry import UnknownDetectorError, closest_names, split_mode
from .weights import (
    WeightsMismatchError,
    WeightsUnavailableError,
    ensure_downloadable,
    hf_cache_hint,
    hf_cached_file,
    is_detector_checkpoint,
    load_file_into,
    load_state_dict_file,
    load_strict,
    parse_source,
    pickled_objects_error,
    provide_hint,
)

DEFAULT_TAG = "openai"
PREFIX = "openclip:"
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
    """Load weights strictly: a visual-only or genshift checkpoint into the image tower, else a full CLIP file.

    Full CLIP files (including OpenAI's TorchScript archives) go through open_clip's converters; every missing
    or unexpected key is an error in both cases.
    """
    import open_clip

    try:
        sd = load_state_dict_file(path)
    except (ValueError, RuntimeError, pickle.UnpicklingError):
        sd = None  # not a plain state dict (e.g. a TorchScript archive): open_clip's loader understands it
    if sd is not None and is_detector_checkpoint(sd):
        load_file_into(model.visual, path, key_map=None)
        return
    if sd is not None and all(k.startswith("visual.") for k in sd):
        load_strict(model.visual, {k[len("visual."):]: v for k, v in sd.items()}, f"{path} (visual tower)")
        return
    try:
        incompatible = open_clip.load_checkpoint(model, path, strict=False)  # torch.load with weights_only=True
    except pickle.UnpicklingError as e:
        raise pickled_objects_error(path, e) from None
    missing = list(getattr(incompatible, "missing_keys", []))
    unexpected = list(getattr(incompatible, "unexpected_keys", []))
    if missing or unexpected:
        raise WeightsMismatchError(
            f"weights from {path} do not match open_clip {arch}: missing keys ({len(missing)}): {missing[:25]}; "
            f"unexpected keys ({len(unexpected)}): {unexpected[:25]}. Expected a full CLIP state dict, the "
            "visual tower alone ('visual.*' keys), or a genshift tune checkpoint.",
            sorted(missing), sorted(unexpected), [],
        )


def parse_openclip_name(name: str) -> tuple[str, str | None, str]:
    """'RN50_probe' -> ('RN50', None, 'probe'); 'openclip:ViT-B-32@laion2b_s34b_b79k_tune' -> (arch, tag, mode)."""
    if name.startswith(PREFIX):
        base, mode = split_mode(name[len(PREFIX):])
        arch, _, tag = base.partition("@")
        return arch, (tag or None), mode
    arch, mode = split_mode(name)
    return arch, None, mode


def _check_openclip_name(name: str, arch: str, tag: str | None, mode: str) -> None:
    """Unknown architectures or tags are name errors, listed with the closest valid spellings."""
    import open_clip

    models = open_clip.list_models()
    if arch not in models:
        close = closest_names(arch, models)
        raise UnknownDetectorError(
            f"unknown detector {name!r}: open_clip has no model {arch!r}. Closest: {close or 'none'}",
            name, [f"{PREFIX}{c}@{DEFAULT_TAG}_{mode}" for c in close],
        )
    if tag is not None:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if tag not in tags:
            close = closest_names(tag, tags) or tags
            raise UnknownDetectorError(
                f"unknown detector {name!r}: open_clip model {arch} has no pretrained tag {tag!r}; "
                f"its tags: {tags or 'none'}", name, [f"{PREFIX}{arch}@{t}_{mode}" for t in close],
            )


def check_openclip_name(name: str) -> None:
    """Library check of an open_clip detector name: the model and tag exist (imports open_clip, builds nothing)."""
    _check_openclip_name(name, *parse_openclip_name(name))


def make_openclip(name: str, pretrained: str = "default", **kwargs) -> Detector:
    """Factory for ``<arch>_<mode>`` and ``openclip:<arch>[@<tag>]_<mode>``.

    pretrained: 'default' (the tag in the name, else 'openai'), another tag, a local file, or 'none'.
    kwargs go to open_clip.create_model; the device defaults to torch's default device (meta works).
    """
    import open_clip
    import torch

    arch, name_tag, mode = parse_openclip_name(name)
    _check_openclip_name(name, arch, name_tag, mode)
    default = name_tag or DEFAULT_TAG
    source = parse_source(default if pretrained == "default" else pretrained)
    path, cfg = _resolve_tag_file(arch, source.value) if source.kind == "tag" else (None, {})  # fail before building
    kwargs.setdefault("device", torch.get_default_device())
    with _quiet_random_init_warning(active=source.kind != "none"):  # we load the weights ourselves right after
        model = open_clip.create_model(arch, pretrained=None, **kwargs)
    visual = model.visual
    if getattr(visual, "output_tokens", False):  # CoCa's tower also returns its tokens: keep encode_image's pooled one
        visual.output_tokens = False
    pp = dict(getattr(visual, "preprocess_cfg", {}) or {})
    mean = cfg.get("mean", pp.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = cfg.get("std", pp.get("std", open_clip.OPENAI_DATASET_STD))
    if source.kind != "none":
        _load_visual(model, path or source.value, arch)
    size = visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    return Detector(
        visual, name=name, family="open_clip", backbone_name=arch if name_tag is None else f"{arch}@{name_tag}",
        mode=mode, input_size=size, mean=mean, std=std, feature_dim=_embed_dim(visual, arch),
        pretrained=source.describe(), eval_resize="resize_center_crop",
    )


def _embed_dim(visual, arch: str) -> int:
    """The image tower's output width: its `output_dim`, or (towers built from timm, e.g. EVA02) the model's
    `embed_dim` from open_clip's config."""
    import open_clip

    dim = getattr(visual, "output_dim", None)
    return int(dim if dim is not None else open_clip.get_model_config(arch)["embed_dim"])


def make_reference_openclip(name: str, pretrained: str = "default", **kwargs) -> Detector:
    """AI-GenBench's open_clip names (``clipL14commonpool_tune``, ``clipL14openai_probe``, ...; builtins
    REFERENCE_OPENCLIP): the same architecture and pretrained tag as the reference, and its head: the image embedding
    L2-normalised (``encode_image(x, normalize=True)``) into a linear layer whose weight starts as N(0, 0.02)."""
    import torch

    from .builtins import REFERENCE_OPENCLIP

    base, mode = split_mode(name)
    if base not in REFERENCE_OPENCLIP:
        raise UnknownDetectorError(f"unknown detector {name!r}: not one of AI-GenBench's open_clip names "
                                   f"{sorted(REFERENCE_OPENCLIP)}", name, closest_names(base, list(REFERENCE_OPENCLIP)))
    arch, tag = REFERENCE_OPENCLIP[base]
    det = make_openclip(f"{PREFIX}{arch}@{tag}_{mode}", pretrained=pretrained, **kwargs)
    det.meta.name, det.meta.feature_norm = name, "l2"
    with torch.no_grad():
        torch.nn.init.normal_(det.head.weight, 0.0, 0.02)
    return det
