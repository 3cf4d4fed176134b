"""Detector zoo: DINOv2 and open_clip families, eval crops, checkpoints, plugins (entry points, scaffold), list."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT

from detectors import (
    CheckpointError,
    UnknownDetectorError,
    WeightsMismatchError,
    WeightsUnavailableError,
    count_flops,
    create_detector,
    list_detectors,
    load_detector_from_checkpoint,
)
from detectors import registry as reg
from detectors.cli import main as detectors_main
from detectors.dinov2_models import TIMM_ARCH

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _on_meta(name: str):
    with torch.device("meta"):
        return create_detector(name, pretrained="none")


def _save_like_engine(det, window_dir: Path, cfg: dict) -> None:
    """Write a checkpoint exactly as the engine does (detectors.checkpoint.save_checkpoint)."""
    from detectors.checkpoint import save_checkpoint

    window_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(det, window_dir, {"window": 0, "config": cfg})


# ------------------------------------------------------------------------------------------------ DINOv2


def test_dinov2_names_map_to_timm_lvd142m_weights():
    import timm

    expected = {f"dinov2_vit{s}14{r}_{m}" for s in "sblg" for r in ("", "_reg") for m in ("probe", "tune")}
    assert expected <= set(list_detectors())
    assert TIMM_ARCH["dinov2_vits14"] == "vit_small_patch14_dinov2"
    assert TIMM_ARCH["dinov2_vitg14_reg"] == "vit_giant_patch14_reg4_dinov2"
    for arch in TIMM_ARCH.values():
        assert timm.models.get_pretrained_cfg(f"{arch}.lvd142m") is not None, arch


def test_dinov2_small_builds_on_cpu_at_224_with_imagenet_stats():
    assert _on_meta("dinov2_vits14_reg_probe").meta.n_params == pytest.approx(21.63e6, rel=1e-3)
    det = create_detector("dinov2_vits14_reg_probe", pretrained="none", depth=2)  # 2 blocks: a fast real forward
    m = det.meta
    assert (m.family, m.input_size, m.feature_dim) == ("dinov2", 224, 384)
    assert m.mean == pytest.approx(IMAGENET_MEAN) and m.std == pytest.approx(IMAGENET_STD)
    assert det.backbone.pos_embed.shape[1] == 16 * 16  # 224 / 14 = 16 patches a side (registers carry no pos)
    det.eval()
    with torch.no_grad():
        assert det(torch.randn(2, 3, 224, 224)).shape == (2,)


@pytest.mark.parametrize("name,params,dim", [("dinov2_vitl14_tune", 303.2e6, 1024),
                                             ("dinov2_vitg14_reg_probe", 1134.8e6, 1536)])
def test_dinov2_large_variants_instantiate_on_meta(name, params, dim):
    det = _on_meta(name)
    assert det.meta.n_params == pytest.approx(params, rel=1e-3) and det.meta.feature_dim == dim
    assert det.meta.input_size == 224


def test_flops_count_attention_on_cpu_as_on_meta():
    """`detectors list` counts on the meta device, a run on its own device: both must count attention."""
    cpu = create_detector("dinov2_vits14_probe", pretrained="none", depth=2)
    with torch.device("meta"):
        meta = create_detector("dinov2_vits14_probe", pretrained="none", depth=2)
    assert count_flops(cpu) == count_flops(meta) > 2e9


def test_dinov2_local_file_at_518_in_meta_layout_loads_resampled(tmp_path):
    """A native-resolution (518) file, in timm layout plus Meta's 'mask_token', loads strictly into the 224 model."""
    import timm

    torch.manual_seed(0)
    src = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=518, depth=2)
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    assert sd["pos_embed"].shape[1] == 37 * 37 + 1
    sd["mask_token"] = torch.zeros(1, 384)  # present in Meta's dinov2_vits14_pretrain.pth
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(sd, path)
    det = create_detector("dinov2_vits14_probe", pretrained=str(path), depth=2)
    got = det.backbone.state_dict()
    assert torch.equal(got["blocks.1.attn.qkv.weight"], sd["blocks.1.attn.qkv.weight"])
    assert got["pos_embed"].shape[1] == 16 * 16 + 1
    assert torch.equal(got["pos_embed"][:, 0], sd["pos_embed"][:, 0])  # class position kept as is
    sd["blocks.0.bogus"] = torch.zeros(1)
    torch.save(sd, path)
    with pytest.raises(WeightsMismatchError, match="blocks.0.bogus"):
        create_detector("dinov2_vits14_probe", pretrained=str(path), depth=2)


def test_dinov2_offline_fails_fast_naming_the_file(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        create_detector("dinov2_vitb14_probe")
    assert time.perf_counter() - t0 < 10
    msg = str(info.value)
    assert "vit_base_patch14_dinov2.lvd142m" in msg and "model.safetensors" in msg and "--pretrained" in msg


# ----------------------------------------------------------------------------------------------- open_clip


def test_openclip_any_model_and_tag_by_name(monkeypatch):
    det = _on_meta("openclip:ViT-B-32@laion2b_s34b_b79k_probe")
    assert det.meta.backbone == "ViT-B-32@laion2b_s34b_b79k" and det.meta.feature_dim == 512
    assert det.meta.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="laion"):  # the tag in the name is the default source
        create_detector("openclip:ViT-B-32@laion2b_s34b_b79k_probe")
    with pytest.raises(UnknownDetectorError) as info:
        create_detector("openclip:ViT-B-32@laion2b_s34b_b97k_probe")
    assert "openclip:ViT-B-32@laion2b_s34b_b79k_probe" in info.value.suggestions
    with pytest.raises(UnknownDetectorError) as info:
        create_detector("openclip:ViT-B-23@openai_tune")
    assert any(s.startswith("openclip:ViT-B-32@") for s in info.value.suggestions)


@pytest.mark.parametrize("name,size,dim", [("RN50_tune", 224, 1024), ("ViT-B-16_probe", 224, 512),
                                           ("ViT-L-14_probe", 224, 768)])
def test_openai_clip_backbones_instantiate(name, size, dim):
    det = _on_meta(name)
    assert (det.meta.family, det.meta.input_size, det.meta.feature_dim) == ("open_clip", size, dim)


def test_openclip_visual_only_file_and_tune_checkpoint_load(tmp_path):
    src = create_detector("openclip:ViT-S-32_tune", pretrained="none")
    visual = {f"visual.{k}": v.clone() for k, v in src.backbone.state_dict().items()}
    path = tmp_path / "visual.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in visual.items()}, str(path))
    det = create_detector("openclip:ViT-S-32_probe", pretrained=str(path))
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(det.backbone.state_dict()[k], v), k
    assert det.meta.pretrained == str(path.resolve())


def test_tune_checkpoint_as_pretrained_backbone(tmp_path):
    """`--pretrained window_k/checkpoint.safetensors` of a tune run starts a new detector from its backbone."""
    src = create_detector("smallcnn_tune", seed=8)
    _save_like_engine(src, tmp_path / "w0", {})
    det = create_detector("smallcnn_probe", pretrained=str(tmp_path / "w0" / "checkpoint.safetensors"), seed=1)
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(det.backbone.state_dict()[k], v), k


@pytest.mark.slow
def test_rn50_real_forward_on_cpu():
    det = create_detector("RN50_probe", pretrained="none").eval()
    with torch.no_grad():
        assert det(torch.randn(1, 3, 224, 224)).shape == (1,)


# ------------------------------------------------------------------------------------------ eval crops


def test_five_crop_matches_torchvision_and_upscales_small_images():
    from torchvision.transforms.functional import five_crop

    from benchmark.images import crops_per_image, input_crops

    img = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    crops = input_crops(img, 32, "five_crop")
    assert crops.shape == (5, 32, 32, 3) and crops.dtype == np.uint8 and crops_per_image("five_crop") == 5
    ref = five_crop(torch.from_numpy(img).permute(2, 0, 1), [32, 32])  # TL, TR, BL, BR, centre
    for got, want in zip(crops, ref, strict=True):
        assert np.array_equal(got, want.permute(1, 2, 0).numpy())
    small = input_crops(img, 64, "five_crop")  # short side 50 < 64: upscaled to 64x90 first, then cropped
    assert small.shape == (5, 64, 64, 3)
    assert np.array_equal(small[0], small[2]) and np.array_equal(small[1], small[3])  # height is exactly 64


def test_single_crop_strategies():
    import cv2

    from benchmark.images import EVAL_INPUT_STRATEGIES, adapt_to_input, input_crops

    assert set(EVAL_INPUT_STRATEGIES) == {"center_crop", "resize_center_crop", "resize", "five_crop"}
    img = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    for strategy in ("center_crop", "resize_center_crop", "resize"):
        out = input_crops(img, 24, strategy)
        assert out.shape == (1, 24, 24, 3) and np.array_equal(out[0], adapt_to_input(img, 24, strategy))
    assert np.array_equal(input_crops(img, 20, "center_crop")[0], img[10:30, 20:40])
    # 'resize' squeezes the whole image (aspect ratio not kept): a left/right split image keeps its split.
    halves = np.zeros((40, 80, 3), np.uint8)
    halves[:, 40:] = 255
    out = input_crops(halves, 20, "resize")[0]
    assert (out[:, :8] == 0).all() and (out[:, 12:] == 255).all()
    up = input_crops(img, 80, "resize")[0]
    assert np.abs(up.astype(int) - cv2.resize(img, (80, 80), interpolation=cv2.INTER_CUBIC)).max() == 0
    with pytest.raises(ValueError, match="several crops"):
        adapt_to_input(img, 24, "five_crop")
    with pytest.raises(ValueError, match="unknown eval input strategy"):
        input_crops(img, 24, "ten_crop")


# ------------------------------------------------------------------------------------- honest probe/tune


def test_probe_with_batchnorm_backbone_is_deterministic_in_train_mode():
    """timm EfficientNet (BN + drop-path): a probe's features do not depend on train()/eval()."""
    det = create_detector("timm:efficientnet_lite0_probe", pretrained="none", drop_path_rate=0.2, drop_rate=0.3)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 3
    before = {k: v.clone() for k, v in det.backbone.state_dict().items()}
    det.train()
    f1 = det.features(x)
    f2 = det.features(x)
    assert torch.equal(f1, f2) and f1.grad_fn is None
    assert all(torch.equal(v, before[k]) for k, v in det.backbone.state_dict().items())
    tune = create_detector("timm:efficientnet_lite0_tune", pretrained="none")
    tune.train()
    tune(x).sum().backward()
    no_grad = [n for n, p in tune.named_parameters() if p.grad is None]
    assert not no_grad, no_grad


# ------------------------------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize("mode", ["probe", "tune"])
def test_load_detector_from_checkpoint_round_trip(tmp_path, mode):
    from safetensors.torch import save_file

    backbone_file = tmp_path / "bb.safetensors"
    seed_src = create_detector("smallcnn_tune", seed=3)
    save_file({k: v.contiguous() for k, v in seed_src.backbone.state_dict().items()}, str(backbone_file))
    det = create_detector(f"smallcnn_{mode}", pretrained=str(backbone_file))
    with torch.no_grad():
        det.head.weight.normal_(generator=torch.Generator().manual_seed(1))
        det.backbone.stem[0].weight.add_(0.0 if mode == "probe" else 0.5)
    _save_like_engine(det, tmp_path / "window_0", {"detector": det.meta.name})
    loaded = load_detector_from_checkpoint(tmp_path / "window_0")
    assert loaded.meta.name == det.meta.name and loaded.meta.pretrained == str(backbone_file.resolve())
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    det.eval()
    assert torch.equal(loaded(x), det(x)) and not loaded.training

    doc = json.loads((tmp_path / "window_0" / "checkpoint.json").read_text())
    doc["detector"]["input_size"] = 128
    (tmp_path / "window_0" / "checkpoint.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="input_size"):
        load_detector_from_checkpoint(tmp_path / "window_0")


def test_checkpoint_with_only_name_and_config(tmp_path):
    """checkpoint.json whose 'detector' is the bare name (metadata absent): rebuilt from the resolved config."""
    det = create_detector("smallcnn_probe", seed=0)
    with torch.no_grad():
        det.head.bias.fill_(0.25)
    from detectors.checkpoint import save_checkpoint

    (tmp_path / "w").mkdir()
    save_checkpoint(det, tmp_path / "w", {"detector": "smallcnn_probe", "window": 0})
    doc = json.loads((tmp_path / "w" / "checkpoint.json").read_text())
    assert doc["detector"] == "smallcnn_probe"  # extra keys override the metadata, as the engine's identity does
    doc["config"] = {"detector": "smallcnn_probe", "pretrained": "default"}
    (tmp_path / "w" / "checkpoint.json").write_text(json.dumps(doc))
    loaded = load_detector_from_checkpoint(tmp_path / "w")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(x), det.eval()(x))


def test_checkpoint_errors_and_probe_checkpoint_as_pretrained(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint.json"):
        load_detector_from_checkpoint(tmp_path)
    probe = create_detector("smallcnn_probe")
    _save_like_engine(probe, tmp_path / "w", {})
    with pytest.raises(WeightsMismatchError, match="load_detector_from_checkpoint"):
        create_detector("smallcnn_tune", pretrained=str(tmp_path / "w" / "checkpoint.safetensors"))


def test_checkpoint_loading_needs_neither_protocols_nor_lightning(tmp_path):
    det = create_detector("smallcnn_tune", seed=4)
    _save_like_engine(det, tmp_path / "w", {})
    code = ("import sys; from detectors import load_detector_from_checkpoint as L; d = L(sys.argv[1]); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('protocols', 'lightning', 'pytorch_lightning')]; "
            "assert not bad, bad; print(d.meta.name)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "w")], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "smallcnn_tune"


# ---------------------------------------------------------------------------------------------- plugins


@pytest.fixture
def fresh_registry(monkeypatch):
    """Registry state and entry-point cache restored after the test; entry points re-read from sys.path."""
    monkeypatch.setattr(reg, "_exact", dict(reg._exact))
    monkeypatch.setattr(reg, "_patterns", dict(reg._patterns))
    monkeypatch.setattr(reg, "_entry_points", None)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return monkeypatch


def _write_dist(site: Path, module: str, body: str, entries: dict[str, str]) -> None:
    """A minimal installed distribution (module + .dist-info with entry_points.txt), as pip would leave it."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(body)
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entries.items())
    (info / "entry_points.txt").write_text(f"[{reg.ENTRY_POINT_GROUP}]\n{lines}\n")


PLUGIN_BODY = '''
from detectors.smallcnn import make_smallcnn


class PluginBoom(RuntimeError):
    pass


def make(name, pretrained="default", **kw):
    return make_smallcnn(name, pretrained=pretrained, **kw)


def boom(name, pretrained="default", **kw):
    raise PluginBoom("plugin-specific failure: weights server said no")
'''


def test_installed_entry_point_plugins_are_found_and_errors_propagate(tmp_path, fresh_registry):
    site = tmp_path / "site"
    _write_dist(site, "gs_plug_demo", PLUGIN_BODY, {"plugdemo": "gs_plug_demo:make", "plugboom": "gs_plug_demo:boom",
                                                   "fam:*": "gs_plug_demo:make"})
    fresh_registry.syspath_prepend(str(site))
    names = list_detectors()
    assert {"plugdemo_probe", "plugdemo_tune", "plugboom_tune"} <= set(names)
    assert "fam:*" in list_detectors(include_patterns=True)
    det = create_detector("plugdemo_probe")
    assert det.meta.name == "plugdemo_probe" and det.is_probe
    assert create_detector("fam:x_tune").meta.name == "fam:x_tune"
    import gs_plug_demo

    with pytest.raises(gs_plug_demo.PluginBoom, match="weights server said no"):
        create_detector("plugboom_tune")
    with pytest.raises(gs_plug_demo.PluginBoom):  # the CLI does not wrap it either
        detectors_main(["detectors", "show", "plugboom_probe"])


def test_unknown_name_via_cli_is_fast_and_lists_closest(capsys):
    list_detectors()  # imports done; what is timed is the name check itself
    t0 = time.perf_counter()
    rc = detectors_main(["detectors", "show", "dinov2_vitb41_probe"])
    assert time.perf_counter() - t0 < 1.0
    assert rc == 2
    err = capsys.readouterr().err
    assert "dinov2_vitb14_probe" in err and "unknown detector" in err


def test_list_rows_have_params_and_flops(tmp_path):
    from detectors.listing import detector_rows, family_hint

    for name in list_detectors():  # every built-in name routes to a known family without building anything
        assert family_hint(name) in {"smallcnn", "smallseg", "open_clip", "dinov2", "torchvision", "lrnet",
                                     "format"}, name
    rows = detector_rows(family="smallcnn", cache_file=tmp_path / "c.json")
    by_name = {r["name"]: r for r in rows}
    tune = create_detector("smallcnn_tune")
    assert by_name["smallcnn_tune"]["flops"] == count_flops(tune)
    assert by_name["smallcnn_probe"]["n_trainable"] == 193 and by_name["smallcnn_tune"]["norm"].startswith("mean=")
    assert {r["measured_on"] for r in rows} == {"meta"}  # built without memory; CPU is only a fallback
    t0 = time.perf_counter()
    assert detector_rows(family="smallcnn", cache_file=tmp_path / "c.json") == rows  # served from the cache
    assert time.perf_counter() - t0 < 2.0


def test_scaffolded_plugin_installs_and_is_listed(tmp_path, fresh_registry, capsys):
    rc = detectors_main(["detectors", "new", "scafdet", "--dir", str(tmp_path)])
    assert rc == 0
    root = tmp_path / "genshift-scafdet"
    for rel in ("pyproject.toml", "genshift_scafdet/detector.py", "tests/test_genshift_scafdet.py", "README.md"):
        assert (root / rel).is_file(), rel
    assert detectors_main(["detectors", "new", "scafdet", "--dir", str(tmp_path)]) == 2  # never overwrites
    assert detectors_main(["detectors", "new", "smallcnn", "--dir", str(tmp_path)]) == 2  # name taken
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--target", str(site), str(root)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    fresh_registry.syspath_prepend(str(site))
    fresh_registry.setattr(reg, "_entry_points", None)  # as in a new process after `pip install`
    capsys.readouterr()
    assert detectors_main(["detectors", "list", "--family", "scafdet", "--format", "json", "--no-cache"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["scafdet_probe", "scafdet_tune"]
    assert all(r["n_params"] > 0 and r["flops"] > 0 for r in rows)


@pytest.mark.slow
def test_scaffolded_plugin_completes_a_smoke_run(tmp_path, cache_dir):
    """The user's path: scaffold, install, `genshift run --preset smoke --detector <name>_tune` (~2 min)."""
    import os

    assert detectors_main(["detectors", "new", "smokedet", "--dir", str(tmp_path)]) == 0
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(site), str(tmp_path / "genshift-smokedet")], check=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "protocols", "run", "--preset", "smoke", "--detector",
                          "smokedet_tune", "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(cache_dir),
                          "--experiment", "exp", "--no-progress", "--no-leaderboard"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    info = json.loads((tmp_path / "runs" / "exp" / "run.json").read_text())
    assert info["detector"]["name"] == "smokedet_tune" and info["detector"]["family"] == "smokedet"
    assert (tmp_path / "runs" / "exp" / "window_0" / "predictions.npz").is_file()
    sys.path.insert(0, str(site))  # the plugin's factory is needed to rebuild its checkpoint here
    try:
        reg._entry_points = None
        det = load_detector_from_checkpoint(tmp_path / "runs" / "exp" / "window_0")
    finally:
        sys.path.remove(str(site))
        reg._entry_points = None
    assert det.meta.name == "smokedet_tune"


@pytest.mark.slow
def test_full_list_builds_every_registered_detector(tmp_path, capsys):
    """Every built-in family instantiates offline (pretrained none, meta device) with parameters and FLOPs."""
    from detectors.listing import detector_rows

    rows = detector_rows(cache_file=tmp_path / "c.json")
    concrete = [r for r in rows if not r.get("pattern")]
    assert not [r for r in concrete if "error" in r]
    assert {r["name"] for r in concrete} == set(list_detectors())
    assert all(r["n_params"] > 0 and r["flops"] > 0 for r in concrete)
    assert {r["family"] for r in concrete} >= {"smallcnn", "open_clip", "dinov2", "torchvision"}


# ------------------------------------------------------------------------------ one smoke window per family

CLIP = (0.48145466, 0.4578275, 0.40821073)
HALF = (0.5, 0.5, 0.5)
_slow = pytest.mark.slow
# (name, family, input size, mean recorded in run.json): the smallest member of every family in both modes, then
# the named reference backbones. One thread on a busy 2-core machine: the fast ones take 1-4 s each, RN50,
# ViT-B-16 and dinov2_vits14 10-30 s, the large probes 1.5-3.5 min (ViT-L-14 2.6 GB, dinov2_vitg14 5.6 GB RSS).
FAMILY_SMOKE = [
    ("smallcnn_probe", "smallcnn", 56, HALF), ("smallcnn_tune", "smallcnn", 56, HALF),
    ("smallseg_probe", "smallseg", 64, HALF), ("smallseg_tune", "smallseg", 64, HALF),
    ("timm:test_vit_probe", "timm", 160, HALF), ("timm:test_vit_tune", "timm", 160, HALF),
    ("torchvision:mobilenet_v3_small_probe", "torchvision", 224, IMAGENET_MEAN),
    ("torchvision:mobilenet_v3_small_tune", "torchvision", 224, IMAGENET_MEAN),
    ("openclip:ViT-S-32_probe", "open_clip", 224, CLIP), ("openclip:ViT-S-32_tune", "open_clip", 224, CLIP),
    pytest.param("RN50_probe", "open_clip", 224, CLIP, marks=_slow),
    pytest.param("RN50_tune", "open_clip", 224, CLIP, marks=_slow),
    pytest.param("ViT-B-16_probe", "open_clip", 224, CLIP, marks=_slow),
    pytest.param("ViT-B-16_tune", "open_clip", 224, CLIP, marks=_slow),
    pytest.param("dinov2_vits14_probe", "dinov2", 224, IMAGENET_MEAN, marks=_slow),
    pytest.param("dinov2_vits14_tune", "dinov2", 224, IMAGENET_MEAN, marks=_slow),
    pytest.param("dinov2_vits14_reg_tune", "dinov2", 224, IMAGENET_MEAN, marks=_slow),
    pytest.param("ViT-L-14_probe", "open_clip", 224, CLIP, marks=_slow),
    pytest.param("dinov2_vitl14_probe", "dinov2", 224, IMAGENET_MEAN, marks=_slow),
    pytest.param("dinov2_vitg14_probe", "dinov2", 224, IMAGENET_MEAN, marks=_slow),
]


@pytest.fixture(scope="module")
def one_window_dataset(tmp_path_factory) -> str:
    """A csv: dataset with one generator, hence one window: 4 training and 2 eval images (64-96 px)."""
    from helpers import write_csv_dataset

    return f"csv:{write_csv_dataset(tmp_path_factory.mktemp('one-window'), {'GanA': '2018-01-01'})}"


def run_one_window(name: str, dataset: str, runs: Path, cache_dir: Path) -> Path:
    """`genshift run` of ``name`` with --pretrained none (offline) on ``dataset``; returns the run directory."""
    from protocols.cli import main

    assert main(["run", "--preset", "smoke", "--dataset", dataset, "--detector", name, "--pretrained", "none",
                 "--runs-dir", str(runs), "--cache-dir", str(cache_dir), "--experiment", "exp", "--no-progress",
                 "--no-leaderboard", "--set", "threads=1"]) == 0
    return runs / "exp"


@pytest.mark.parametrize("name,family,size,mean", FAMILY_SMOKE)
def test_family_runs_one_smoke_window_offline(name, family, size, mean, one_window_dataset, tmp_path, cache_dir):
    from safetensors import safe_open

    run = run_one_window(name, one_window_dataset, tmp_path / "runs", cache_dir)
    info = json.loads((run / "run.json").read_text())
    assert len(info["windows"]) == 1
    det = info["detector"]
    assert (det["name"], det["family"], det["input_size"], det["pretrained"]) == (name, family, size, "none")
    assert det["mean"] == pytest.approx(mean) and det["n_params"] > 0 and det["flops"] > 0
    window = run / "window_0"
    assert (window / "done").is_file() and (window / "predictions.npz").is_file()
    with safe_open(str(window / "checkpoint.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert "head.weight" in keys
    frozen = det["mode"] == "probe"  # honest probe: no backbone weight in its checkpoint (a decoder may train)
    assert any(k.startswith("backbone.") for k in keys) is not frozen, keys


def test_run_seed_sets_smallcnn_init_and_probe_checkpoint_rebuilds_it(one_window_dataset, tmp_path, cache_dir):
    """The run seed is the random init's seed; a probe's random backbone is rebuilt from checkpoint.json."""
    from protocols.cli import main

    assert main(["run", "--preset", "smoke", "--dataset", one_window_dataset, "--detector", "smallcnn_probe",
                 "--runs-dir", str(tmp_path), "--cache-dir", str(cache_dir), "--experiment", "s1", "--seed", "1",
                 "--no-progress", "--no-leaderboard", "--set", "threads=1"]) == 0
    window = tmp_path / "s1" / "window_0"
    assert json.loads((window / "checkpoint.json").read_text())["detector_kwargs"] == {"seed": 1}
    loaded = load_detector_from_checkpoint(window)
    seed0, seed1 = create_detector("smallcnn_probe", seed=0), create_detector("smallcnn_probe", seed=1)
    assert torch.equal(loaded.backbone.stem[0].weight, seed1.backbone.stem[0].weight)
    assert not torch.equal(seed0.backbone.stem[0].weight, seed1.backbone.stem[0].weight)


@pytest.mark.slow
def test_dinov2_giant_tune_trains_every_parameter_at_reduced_depth():
    """dinov2_vitg14 tune at full width (1536, 24 heads) but 2 blocks: a full-depth tune step needs ~16 GB."""
    det = create_detector("dinov2_vitg14_reg_tune", pretrained="none", depth=2)
    assert det.meta.feature_dim == 1536 and det.meta.n_trainable == det.meta.n_params
    before = det.backbone.blocks[1].attn.qkv.weight.detach().clone()
    det.train()
    opt = torch.optim.SGD(det.trainable_parameters(), lr=0.1)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    torch.nn.functional.binary_cross_entropy_with_logits(det(x), torch.tensor([0.0, 1.0])).backward()
    no_grad = [k for k, p in det.named_parameters() if p.grad is None or not p.grad.any()]
    assert not no_grad, no_grad
    opt.step()
    assert not torch.equal(det.backbone.blocks[1].attn.qkv.weight, before)
