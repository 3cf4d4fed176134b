"""DINOv2 backbones through timm: ``dinov2_vit{s,b,l,g}14[_reg]_<probe|tune>``.

Weights are timm's ``lvd142m`` tags (Meta's DINOv2 release; ``_reg`` = the 4-register variant). DINOv2 was
trained at 518 px but these detectors run at 224 px (16x16 patches of 14 px) to keep training affordable;
position embeddings are resampled to 224 when weights load (pass ``img_size=518`` for the native size).
Normalisation is ImageNet mean/std, as in the DINOv2 release; features are the CLS token. Local files may be
in timm's layout, Meta's original layout (``dinov2_vits14_pretrain.pth``) or a genshift tune checkpoint.
"""

from __future__ import annotations

from .base import Detector
from .builtins import DINOV2_TIMM_ARCH as TIMM_ARCH
from .registry import split_mode
from .timm_models import build_timm

INPUT_SIZE = 224
TAG = "lvd142m"


def _vit_filter(state_dict: dict, model) -> dict:
    """timm's ViT checkpoint filter: Meta's layout -> timm's, position embeddings resampled to the model grid."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    return checkpoint_filter_fn(state_dict, model)


def make_dinov2(name: str, pretrained: str = "default", img_size: int = INPUT_SIZE, **kwargs) -> Detector:
    """Factory for the DINOv2 names; 'default' = timm tag lvd142m; kwargs go to timm.create_model."""
    backbone_name, mode = split_mode(name)
    return build_timm(name, TIMM_ARCH[backbone_name], mode, pretrained, family="dinov2", default_tag=TAG,
                      key_map=None, transform=_vit_filter, img_size=img_size, **kwargs)
