"""AI-GenBench's model names resolve to the same backbones and pretrained tags, with the reference's head."""

from __future__ import annotations

import pytest
import torch

from detectors import create_detector
from detectors.builtins import REFERENCE_OPENCLIP
from detectors.registry import list_detectors
from detectors.weights import WeightsUnavailableError

# The reference's dict_pretrain (algorithms/models/openclip_models.py): name -> (architecture, open_clip tag or the
# Hugging Face repository it downloads with hf_hub_download).
REFERENCE_TABLE = {
    "clipL14openai": ("ViT-L-14", "openai"),
    "clipL14laion400m": ("ViT-L-14", "laion400m_e32"),
    "clipL14laion2B": ("ViT-L-14", "laion2b_s32b_b82k"),
    "clipL14datacomp": ("ViT-L-14", "laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K"),
    "clipL14commonpool": ("ViT-L-14", "laion/CLIP-ViT-L-14-CommonPool.XL-s13B-b90K"),
    "clipaL14datacomp": ("ViT-L-14-CLIPA", "datacomp1b"),
    "cocaL14laion2B": ("coca_ViT-L-14", "laion2b_s13b_b90k"),
    "clipg14laion2B": ("ViT-g-14", "laion2b_s34b_b88k"),
    "eva2L14merged2b": ("EVA02-L-14", "merged2b_s4b_b131k"),
    "clipB16laion2B": ("ViT-B-16", "laion2b_s34b_b88k"),
}


def test_every_reference_name_is_registered_with_the_same_backbone_and_weights():
    from open_clip import pretrained

    names = set(list_detectors())
    assert set(REFERENCE_OPENCLIP) == set(REFERENCE_TABLE)
    for name, (arch, source) in REFERENCE_TABLE.items():
        assert {f"{name}_probe", f"{name}_tune"} <= names
        our_arch, tag = REFERENCE_OPENCLIP[name]
        assert our_arch == arch
        if "/" in source:  # the reference downloads this repository's open_clip_pytorch_model.bin
            assert pretrained.get_pretrained_cfg(arch, tag)["hf_hub"].rstrip("/") == source
        else:
            assert tag == source
    for name in ("RN50_probe", "RN50_tune", "dinov2_vitl14_probe", "dinov2_vitl14_tune"):  # the reference's too
        assert name in names


def test_reference_head_normalises_the_embedding():
    torch.manual_seed(0)
    det = create_detector("clipB16laion2B_tune", pretrained="none")
    assert det.meta.name == "clipB16laion2B_tune" and det.meta.backbone == "ViT-B-16@laion2b_s34b_b88k"
    assert det.meta.feature_norm == "l2" and det.meta.mode == "tune"
    feats = det.features(torch.rand(2, 3, 224, 224))
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(2))
    assert 0.01 < float(det.head.weight.detach().std()) < 0.03  # N(0, 0.02), the reference's ChannelLinear init
    probe = create_detector("clipB16laion2B_probe", pretrained="none")
    assert probe.is_probe and probe.meta.n_trainable == probe.meta.feature_dim + 1


def test_reference_name_fetches_the_references_weights():
    with torch.device("meta"), pytest.raises(WeightsUnavailableError, match="CLIP-ViT-L-14-CommonPool.XL-s13B-b90K"):
        create_detector("clipL14commonpool_tune")


def test_detectors_list_shows_reference_names():
    """`genshift detectors list` lists every registered name (above) and measures each row like this one."""
    from detectors.listing import family_hint, measure

    assert family_hint("clipL14commonpool_probe") == "open_clip"
    row = measure("clipL14commonpool_probe", raise_errors=True)
    assert row["family"] == "open_clip" and row["backbone"] == "ViT-L-14@commonpool_xl_s13b_b90k"
    assert row["input_size"] == 224 and row["feature_dim"] == 768 and row["measured_on"] == "meta"
