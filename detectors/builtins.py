"""The built-in detector names and families, import-light: nothing here imports torch or a model library.

The registry serves these names from this table and imports a family's module only when one of its detectors
is built, so a misspelt name fails in milliseconds. Each entry maps a backbone name (registers ``_probe`` and
``_tune``) or an fnmatch pattern to ``(module:factory, family)``; patterns also carry their name grammar.
Named backbones also declare the facts the cache plan needs (``DECLARED``: input size and kind, feature size, eval
resize, localization), as timm's ``pretrained_cfg`` does, so a run's stores are sized before any model is built.
"""

from __future__ import annotations

from dataclasses import dataclass

# The two training modes every detector name ends with: frozen backbone (`probe`) or everything trained (`tune`).
MODES = ("probe", "tune")

# open_clip architectures that have an 'openai' tag; importing open_clip to list them would cost seconds.
OPENAI_MODELS = ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336")

# DINOv2 backbone name -> timm architecture (lvd142m weights); '_reg' = the 4-register variant.
_DINOV2_SIZES = {"s": "small", "b": "base", "l": "large", "g": "giant"}
DINOV2_TIMM_ARCH: dict[str, str] = {}
for _k, _size in _DINOV2_SIZES.items():
    DINOV2_TIMM_ARCH[f"dinov2_vit{_k}14"] = f"vit_{_size}_patch14_dinov2"
    DINOV2_TIMM_ARCH[f"dinov2_vit{_k}14_reg"] = f"vit_{_size}_patch14_reg4_dinov2"

# AI-GenBench's own open_clip model names (algorithms/models/openclip_models.py, dict_pretrain) -> (architecture,
# open_clip pretrained tag); its hub repositories are those tags' (e.g. laion/CLIP-ViT-L-14-CommonPool.XL-s13B-b90K).
# Its RN50_* (OpenAI CLIP) and dinov2_vitl14_* names are genshift's own names already.
REFERENCE_OPENCLIP: dict[str, tuple[str, str]] = {
    "clipL14openai": ("ViT-L-14", "openai"),
    "clipL14laion400m": ("ViT-L-14", "laion400m_e32"),
    "clipL14laion2B": ("ViT-L-14", "laion2b_s32b_b82k"),
    "clipL14datacomp": ("ViT-L-14", "datacomp_xl_s13b_b90k"),
    "clipL14commonpool": ("ViT-L-14", "commonpool_xl_s13b_b90k"),
    "clipaL14datacomp": ("ViT-L-14-CLIPA", "datacomp1b"),
    "cocaL14laion2B": ("coca_ViT-L-14", "laion2b_s13b_b90k"),
    "clipg14laion2B": ("ViT-g-14", "laion2b_s34b_b88k"),
    "eva2L14merged2b": ("EVA02-L-14", "merged2b_s4b_b131k"),
    "clipB16laion2B": ("ViT-B-16", "laion2b_s34b_b88k"),
}

_OPENCLIP = ("detectors.openclip_models:make_openclip", "open_clip")
_REFERENCE_OPENCLIP = ("detectors.openclip_models:make_reference_openclip", "open_clip")
_DINOV2 = ("detectors.dinov2_models:make_dinov2", "dinov2")
_TORCHVISION = ("detectors.torchvision_models:make_torchvision", "torchvision")

# name or pattern -> (module:factory, family), in registration order (patterns are tried in this order).
BUILTINS: dict[str, tuple[str, str]] = {
    "smallcnn": ("detectors.smallcnn:make_smallcnn", "smallcnn"),
    "smallseg": ("detectors.segmentation:make_smallseg", "smallseg"),
    "timmseg:*": ("detectors.segmentation:make_timmseg", "timmseg"),
    **{arch: _OPENCLIP for arch in OPENAI_MODELS},
    **{name: _REFERENCE_OPENCLIP for name in REFERENCE_OPENCLIP},
    "openclip:*": _OPENCLIP,
    "timm:*": ("detectors.timm_models:make_timm", "timm"),
    **{name: _DINOV2 for name in DINOV2_TIMM_ARCH},
    "torchvision:*": _TORCHVISION,
    "resnet18": _TORCHVISION,
}

# Full names without a _probe/_tune suffix: detectors that have a single way to train (no frozen backbone to
# probe), registered exactly as written. name -> (module:factory, family).
MODELESS: dict[str, tuple[str, str]] = {
    "lrnet": ("detectors.lrnet:make_lrnet", "lrnet"),
    "lrnet_g1": ("detectors.lrnet:make_lrnet", "lrnet"),
    "lrnet_g2": ("detectors.lrnet:make_lrnet", "lrnet"),
    "format_only": ("detectors.format_only:make_format_only", "format"),
}


@dataclass(frozen=True)
class DeclaredMeta:
    """What a detector's metadata (detectors.base.DetectorMeta) will say, known without building it: the fields
    the cache plan reads. Every built-in declaration is checked against the built model by the tests."""

    input_size: int
    feature_dim: int
    eval_resize: str = "resize_center_crop"
    input_kind: str = "image"
    has_localization: bool = False


# backbone (or modeless full name) -> its declared metadata, the same for _probe and _tune and for every weight
# source (the architecture fixes them). Family patterns (timm:*, openclip:*, ...) declare nothing: their sizes are
# the library's, learnt from a built model (protocols/detector_memo.py).
DECLARED: dict[str, DeclaredMeta] = {
    "smallcnn": DeclaredMeta(56, 192, "center_crop"),
    "smallseg": DeclaredMeta(64, 192, "center_crop", has_localization=True),
    "RN50": DeclaredMeta(224, 1024), "RN101": DeclaredMeta(224, 512), "RN50x4": DeclaredMeta(288, 640),
    "RN50x16": DeclaredMeta(384, 768), "RN50x64": DeclaredMeta(448, 1024), "ViT-B-32": DeclaredMeta(224, 512),
    "ViT-B-16": DeclaredMeta(224, 512), "ViT-L-14": DeclaredMeta(224, 768), "ViT-L-14-336": DeclaredMeta(336, 768),
    "clipL14openai": DeclaredMeta(224, 768), "clipL14laion400m": DeclaredMeta(224, 768),
    "clipL14laion2B": DeclaredMeta(224, 768), "clipL14datacomp": DeclaredMeta(224, 768),
    "clipL14commonpool": DeclaredMeta(224, 768), "clipaL14datacomp": DeclaredMeta(224, 768),
    "cocaL14laion2B": DeclaredMeta(224, 768), "clipg14laion2B": DeclaredMeta(224, 1024),
    "eva2L14merged2b": DeclaredMeta(224, 768), "clipB16laion2B": DeclaredMeta(224, 512),
    **{name: DeclaredMeta(224, {"s": 384, "b": 768, "l": 1024, "g": 1536}[name[len("dinov2_vit")]])
       for name in DINOV2_TIMM_ARCH},
    "resnet18": DeclaredMeta(224, 512),
    "lrnet": DeclaredMeta(30, 136, "none", "landmarks"),
    "lrnet_g1": DeclaredMeta(30, 136, "none", "landmarks"),
    "lrnet_g2": DeclaredMeta(30, 136, "none", "landmarks"),
    "format_only": DeclaredMeta(24, 24, "none", "format"),
}

# pattern -> (regular expression a full name must match, the grammar as users read it). Whether the model (or
# tag) exists is the library's answer, given by the factory with the library's closest names.
PATTERN_GRAMMAR: dict[str, tuple[str, str]] = {
    "openclip:*": (r"openclip:[^@\s:]+(@[^@\s:]+)?_(probe|tune)", "openclip:<model>[@<tag>]_<probe|tune>"),
    "timm:*": (r"timm:[^@\s:]+_(probe|tune)", "timm:<model>[.<tag>]_<probe|tune>"),
    "timmseg:*": (r"timmseg:[^@\s:]+_(probe|tune)", "timmseg:<model>_<probe|tune>"),
    "torchvision:*": (r"torchvision:[A-Za-z0-9_]+_(probe|tune)", "torchvision:<model>_<probe|tune>"),
}

# pattern -> module:function(name) raising UnknownDetectorError, with the library's closest names, when the model
# (or tag) in a name does not exist; it imports the library (seconds) and builds nothing.
LIBRARY_NAME_CHECKS: dict[str, str] = {
    "openclip:*": "detectors.openclip_models:check_openclip_name",
    "timm:*": "detectors.timm_models:check_timm_name",
    "timmseg:*": "detectors.segmentation:check_timmseg_name",
    "torchvision:*": "detectors.torchvision_models:check_torchvision_name",
}
