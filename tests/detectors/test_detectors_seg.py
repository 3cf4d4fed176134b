"""Segmentation detectors (smallseg, timmseg): contract, checkpoints, masks, and learning to localize."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmark.images import adapt_to_input, load_rgb
from benchmark.masks import adapt_mask_to_input, load_mask
from detectors import create_detector, load_detector_from_checkpoint
from detectors.segmentation import localization_loss
from leaderboard.pixel_metrics import localization_metrics

SMALL = {"widths": (8, 16, 16, 32), "decoder_width": 8}


def test_contract_shapes_and_meta() -> None:
    det = create_detector("smallseg_tune", **SMALL).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        logits, maps = det.forward_with_map(x)
        assert torch.equal(det(x), logits)
    assert logits.shape == (3,) and maps.shape == (3, 1, 64, 64)
    assert det.meta.has_localization and det.meta.to_dict()["has_localization"] is True
    assert det.meta.n_params == sum(p.numel() for p in det.parameters())
    plain = create_detector("smallcnn_tune")
    assert plain.meta.has_localization is False
    with pytest.raises(NotImplementedError, match="no localization head"):
        plain.forward_with_map(x)


def test_probe_trains_head_and_decoder_only_and_round_trips() -> None:
    det = create_detector("smallseg_probe", **SMALL)
    keys = set(det.trainable_state_dict())
    assert keys and all(k.startswith(("head.", "decoder.")) for k in keys)
    assert any(k.startswith("decoder.") for k in keys)
    assert all(not p.requires_grad for p in det.backbone.parameters())
    other = create_detector("smallseg_probe", seed=1, **SMALL)
    other.load_trainable_state_dict(det.trainable_state_dict())
    for k, v in det.trainable_state_dict().items():
        assert torch.equal(other.trainable_state_dict()[k], v)
    with pytest.raises(Exception, match="decoder"):
        other.load_trainable_state_dict({k: v for k, v in det.trainable_state_dict().items() if "head" in k})


def test_checkpoint_round_trip(tmp_path) -> None:
    from safetensors.torch import save_file

    det = create_detector("smallseg_tune", seed=3).eval()
    save_file({k: v.contiguous() for k, v in det.trainable_state_dict().items()}, str(tmp_path / "checkpoint.safetensors"))
    (tmp_path / "checkpoint.json").write_text(json.dumps({"detector": det.meta.to_dict()}))
    back = load_detector_from_checkpoint(tmp_path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(back.forward_with_map(x)[1], det.forward_with_map(x)[1])


def test_timmseg_random_init_and_refuses_weights() -> None:
    det = create_detector("timmseg:resnet10t_tune").eval()
    with torch.no_grad():
        logits, maps = det.forward_with_map(torch.randn(1, 3, 96, 96))
    assert logits.shape == (1,) and maps.shape == (1, 1, 96, 96) and det.meta.has_localization
    with pytest.raises(ValueError, match="randomly initialised only"):
        create_detector("timmseg:resnet10t_tune", pretrained="a1_in1k")


@pytest.mark.parametrize("strategy", ["center_crop", "resize_center_crop", "resize"])
@pytest.mark.parametrize("hw", [(40, 50), (90, 70), (64, 64)])
def test_mask_follows_image_geometry(strategy: str, hw: tuple[int, int]) -> None:
    h, w = hw
    mask = np.zeros((h, w), bool)
    mask[h // 4: 3 * h // 4, w // 3:] = True
    img = np.repeat((mask * 255).astype(np.uint8)[..., None], 3, axis=2)
    got = adapt_mask_to_input(mask, 64, strategy)
    ref = adapt_to_input(img, 64, strategy)[..., 0] > 127
    assert got.shape == (64, 64) and got.dtype == bool
    assert (got != ref).mean() < 0.05  # differences only along the boundary (interpolation kinds differ)
    if min(h, w) >= 64 and strategy == "center_crop":
        assert np.array_equal(got, ref)


def test_loss_ignores_images_without_mask_and_balances_classes() -> None:
    logits = torch.zeros(2, requires_grad=True)
    maps = torch.zeros(2, 1, 4, 4, requires_grad=True)
    masks = torch.zeros(2, 1, 4, 4)
    masks[0, 0, 0, 0] = 1
    total, parts = localization_loss(logits, maps, torch.tensor([1.0, 0.0]), masks, torch.tensor([True, False]))
    assert parts["pixel"] == pytest.approx(np.log(2)) and parts["image"] == pytest.approx(np.log(2))
    total.backward()
    assert maps.grad[1].abs().sum() == 0  # the image without a known mask gets no pixel gradient
    # balanced: the single altered pixel weighs as much as the 15 clean ones together
    assert maps.grad[0, 0, 0, 0] == pytest.approx(-0.5 * 0.5 / 1)
    assert maps.grad[0, 0, 0, 1] == pytest.approx(0.5 * 0.5 / 15)
    _, none = localization_loss(logits, maps, torch.tensor([1.0, 0.0]), masks, torch.tensor([False, False]))
    assert none["pixel"] == 0.0


def _crops(items, rng: np.random.Generator, n_per: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Seeded size×size crops; crops of masked images straddle the mask boundary (20–70 % altered)."""
    imgs, masks = [], []
    for img, mask in items:
        for _ in range(n_per):
            for _ in range(50):
                y, x = rng.integers(0, mask.shape[0] - size + 1), rng.integers(0, mask.shape[1] - size + 1)
                if not mask.any() or 0.2 <= mask[y: y + size, x: x + size].mean() <= 0.7:
                    break
            imgs.append(img[y: y + size, x: x + size])
            masks.append(mask[y: y + size, x: x + size])
    return np.stack(imgs), np.stack(masks)


def _tensor(imgs: np.ndarray, det) -> torch.Tensor:
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(det.meta.mean).view(1, 3, 1, 1)) / torch.tensor(det.meta.std).view(1, 3, 1, 1)


def _train_and_score(cache_dir, steps: int) -> tuple[np.ndarray, dict, dict, dict]:
    """Train smallseg_tune with both losses on 32 px crops of the smoke set; score held-out eval partial fakes.

    Returns (per-step [image loss, pixel loss], per-image metrics, pooled metrics, all-ones metrics).
    """
    from benchmark.synthetic import build_synthetic

    m = build_synthetic(cache_dir, "smoke", seed=0, progress=False)

    def items(split: str, partial: bool):
        out = []
        for s in m.split(split):
            if (s.mask is not None) == partial and (partial or s.label == 0):
                img = load_rgb(m.abspath(s.path))
                mask = load_mask(m.abspath(s.mask), (s.height, s.width)) if partial else np.zeros(img.shape[:2], bool)
                out.append((img, mask))
        return out

    train_p, train_r, eval_p = items("train", True), items("train", False), items("eval", True)
    assert len(train_p) >= 10 and len(eval_p) >= 8
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # far faster than 2 contended threads for this tiny model
    try:
        torch.manual_seed(0)
        det = create_detector("smallseg_tune", **SMALL).train()
        opt = torch.optim.Adam(det.parameters(), lr=3e-3)
        rng = np.random.default_rng(0)
        hist = []
        for step in range(steps):
            ip, mp = _crops([train_p[i] for i in rng.integers(0, len(train_p), 8)], rng, 1)
            ir, mr = _crops([train_r[i] for i in rng.integers(0, len(train_r), 8)], rng, 1)
            x = _tensor(np.concatenate([ip, ir]), det)
            masks = torch.from_numpy(np.concatenate([mp, mr])).float()[:, None]
            labels = torch.tensor([1.0] * 8 + [0.0] * 8)
            logits, maps = det.forward_with_map(x)
            loss, parts = localization_loss(logits, maps, labels, masks, torch.ones(16, dtype=torch.bool))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step == int(0.75 * steps):  # a low-LR tail settles the last weights
                for group in opt.param_groups:
                    group["lr"] *= 0.1
            hist.append((parts["image"], parts["pixel"]))
        det.eval()
        imgs, masks = _crops(eval_p, np.random.default_rng(1), 3)
        with torch.no_grad():
            _, maps = det.forward_with_map(_tensor(imgs, det))
    finally:
        torch.set_num_threads(threads)
    probs = torch.sigmoid(maps)[:, 0].numpy()
    ones = localization_metrics(masks, np.ones_like(probs))
    zeros = localization_metrics(masks, np.zeros_like(probs))
    assert zeros["pixel_f1"] == 0.0 and zeros["pixel_iou"] == 0.0
    return (np.asarray(hist), localization_metrics(masks, probs), localization_metrics(masks, probs, mode="pooled"),
            ones)


def test_smallseg_learns_to_localize_partial_fakes(cache_dir) -> None:
    """Both losses fall; on held-out eval partial fakes the map ranks altered pixels well and, at its best
    shared threshold, beats all-ones and all-zeros maps (fixed-0.5 F1 after a short run is too seed-sensitive
    for a fast test; see the slow test)."""
    h, model, pooled, ones = _train_and_score(cache_dir, 300)
    assert h[-30:, 0].mean() < h[:30, 0].mean() and h[-30:, 1].mean() < 0.8 * h[:30, 1].mean()
    assert model["pixel_auroc"] > 0.75 and pooled["pixel_auroc"] > 0.75, (model, pooled)
    assert pooled["pixel_f1_best"] > ones["pixel_f1"] + 0.05, (pooled, ones)
    assert model["pixel_f1"] > 0.3  # all-zeros maps score 0


@pytest.mark.slow
def test_smallseg_fixed_threshold_f1_beats_trivial_maps(cache_dir) -> None:
    _, model, _, ones = _train_and_score(cache_dir, 900)
    assert model["pixel_f1"] > ones["pixel_f1"] + 0.1, (model, ones)
    assert model["pixel_iou"] > ones["pixel_iou"] + 0.1
