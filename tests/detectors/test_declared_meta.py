"""Declared detector metadata (detectors/builtins.py DECLARED, register_detector(meta=...)): what the cache plan
reads before any model is built must be what the built model reports, for every named detector."""

from __future__ import annotations

import pytest
import torch

from detectors import create_detector, init_seed_kwargs, list_detectors
from detectors import registry as reg
from detectors.builtins import BUILTINS, MODELESS, DeclaredMeta

FIELDS = ("name", "mode", "input_size", "input_kind", "feature_dim", "eval_resize", "has_localization")
# Built for real on the CPU in the default suite: small, or cheap to initialise at random.
CHEAP = ("smallcnn_probe", "smallcnn_tune", "smallseg_probe", "smallseg_tune", "resnet18_probe", "resnet18_tune",
         "lrnet", "lrnet_g1", "lrnet_g2", "format_only")


def _named() -> list[str]:
    """Every concrete built-in name (patterns such as timm:* serve many models and declare nothing)."""
    return [n for n in list_detectors() if n in MODELESS or n.rpartition("_")[0] in BUILTINS]


def _built_fields(name: str, device: str | None = None) -> dict:
    kwargs = init_seed_kwargs(name, 0)
    if device is None:
        det = create_detector(name, pretrained="none", **kwargs)
    else:
        with torch.device(device):  # parameters without storage: the architecture, and so its metadata, only
            det = create_detector(name, pretrained="none", **kwargs)
    return {f: getattr(det.meta, f) for f in FIELDS}


def test_every_named_builtin_declares_its_metadata():
    names = _named()
    assert len(names) > 40 and set(CHEAP) <= set(names)
    assert [n for n in names if reg.declared_meta(n) is None] == []
    assert reg.declared_meta("timm:resnet18_probe") is None  # a family pattern: the library's, learnt when built


@pytest.mark.parametrize("name", CHEAP)
def test_declared_metadata_equals_the_built_model_cheap(name):
    assert reg.declared_meta(name) == _built_fields(name)


def test_declared_metadata_equals_the_architecture_of_every_named_detector():
    """Every named detector built on torch's meta device (no weights, no memory): its metadata comes from the
    architecture, so this checks every declaration in seconds; the slow test below builds them for real."""
    wrong = {}
    for name in _named():
        built = _built_fields(name, device="meta")
        if reg.declared_meta(name) != built:
            wrong[name] = (reg.declared_meta(name), built)
    assert wrong == {}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(n for n in _named() if n.endswith("_probe")) - set(CHEAP)))
def test_declared_metadata_equals_the_built_model_big(name):
    assert reg.declared_meta(name) == _built_fields(name)


def test_a_registration_declares_or_forgets_metadata(monkeypatch):
    monkeypatch.setattr(reg, "_exact", dict(reg._exact))
    monkeypatch.setattr(reg, "_declared", dict(reg._declared))
    meta = DeclaredMeta(32, 16, "center_crop")

    def factory(name, pretrained="default", **kw):
        raise AssertionError("never built")

    reg.register_detector("declared_test", factory, meta=meta)
    assert reg.declared_meta("declared_test_probe") == {
        "name": "declared_test_probe", "mode": "probe", "input_size": 32, "input_kind": "image", "feature_dim": 16,
        "eval_resize": "center_crop", "has_localization": False}
    reg.register_detector("declared_test_tune", lambda name, **kw: None, overwrite=True)  # another factory
    assert reg.declared_meta("declared_test_tune") is None and reg.declared_meta("declared_test_probe") is not None
    reg.register_detector("smallcnn_tune", lambda name, **kw: None, overwrite=True)
    assert reg.declared_meta("smallcnn_tune") is None  # the built-in declaration described the built-in factory
    with pytest.raises(ValueError, match="pattern"):
        reg.register_detector("decl:*", factory, meta=meta)


def test_a_built_model_that_contradicts_its_declaration_stops_the_run(monkeypatch):
    from detectors.smallcnn import make_smallcnn
    from protocols.detector_memo import check_declared

    monkeypatch.setattr(reg, "_exact", dict(reg._exact))
    monkeypatch.setattr(reg, "_declared", dict(reg._declared))
    reg.register_detector("liar", make_smallcnn, meta=DeclaredMeta(224, 192, "center_crop"))
    check_declared(create_detector("smallcnn_probe", pretrained="none"))  # the built-in's declaration holds
    with pytest.raises(RuntimeError, match=r"'liar_probe' was registered with metadata .*'input_size': \(224, 56\)"):
        check_declared(create_detector("liar_probe", pretrained="none"))
