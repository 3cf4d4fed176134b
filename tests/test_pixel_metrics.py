"""Pixel-level localization metrics against hand-computed cases and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score, roc_auc_score

from leaderboard import pixel_metrics as pm

# Hand case: 2x3 mask with 3 altered pixels; map > 0.5 on 2 of them and on 1 clean pixel.
MASK = np.array([[1, 1, 1], [0, 0, 0]])
MAP = np.array([[0.9, 0.6, 0.2], [0.7, 0.1, 0.5]])  # 0.5 is not > 0.5: clean


def test_hand_case_fixed_threshold() -> None:
    # TP=2, FP=1, FN=1 -> F1 = 4/6, IoU = 2/4
    assert pm.pixel_f1(MASK, MAP) == pytest.approx(2 / 3)
    assert pm.pixel_iou(MASK, MAP) == pytest.approx(0.5)
    # threshold 0.15: TP=3, FP=2 (0.7, 0.5), FN=0 -> F1 = 6/8, IoU = 3/5
    assert pm.pixel_f1(MASK, MAP, threshold=0.15) == pytest.approx(6 / 8)
    assert pm.pixel_iou(MASK, MAP, threshold=0.15) == pytest.approx(3 / 5)


def test_hand_case_best_threshold_and_auroc() -> None:
    # thresholds (score >= t): 0.9 -> F1 2/4; 0.7 -> 2/5; 0.6 -> 4/6; 0.5 -> 4/7; 0.2 -> 6/8; 0.1 -> 6/9
    f1, t = pm.pixel_f1_best(MASK, MAP)
    assert f1 == pytest.approx(0.75) and t == pytest.approx(0.2)
    # pairs (altered, clean): 0.9 beats all 3, 0.6 beats 0.1 and 0.5, 0.2 beats 0.1 -> 6/9
    assert pm.pixel_auroc(MASK, MAP) == pytest.approx(6 / 9)


def test_undefined_cases_are_nan_with_reason() -> None:
    empty = np.zeros((2, 2), int)
    score = np.full((2, 2), 0.9)
    assert math.isnan(pm.pixel_f1(empty, score))
    assert math.isnan(pm.pixel_iou(empty, score))
    assert all(math.isnan(v) for v in pm.pixel_f1_best(empty, score))
    assert "no altered pixel" in pm.empty_mask_reason(empty)
    assert pm.empty_mask_reason(MASK) is None
    assert math.isnan(pm.pixel_auroc(np.ones((2, 2), int), score))  # single class
    out = pm.localization_metrics([empty, empty], [score, score])
    assert out["n_scored"] == 0 and "no image has an altered pixel" in out["reason"]
    assert all(math.isnan(out[k]) for k in pm.PIXEL_METRIC_NAMES)
    assert pm.localization_metrics([], [])["reason"] == "no images"


def test_validation_errors_are_specific() -> None:
    with pytest.raises(ValueError, match="divided by 255"):
        pm.pixel_f1(MASK * 255, MAP)
    with pytest.raises(ValueError, match="differs from map shape"):
        pm.pixel_f1(MASK, MAP[:, :2])
    with pytest.raises(ValueError, match="probabilities"):
        pm.pixel_f1(MASK, MAP * 3)
    with pytest.raises(ValueError, match="non-finite"):
        pm.pixel_iou(MASK, np.where(MASK == 1, np.nan, 0.0))
    with pytest.raises(ValueError, match="number of images"):
        pm.localization_metrics([MASK], [MAP, MAP])
    with pytest.raises(ValueError, match="mode"):
        pm.localization_metrics([MASK], [MAP], mode="mean")
    with pytest.raises(ValueError, match="image 1"):
        pm.localization_metrics([MASK, MASK], [MAP, MAP[:1]])


def _random_set(seed: int, n: int = 6) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    masks, maps = [], []
    for i in range(n):
        h, w = rng.integers(5, 12, size=2)
        m = np.zeros((h, w), np.uint8)
        m[rng.integers(0, h // 2): rng.integers(h // 2 + 1, h + 1), rng.integers(0, w // 2):] = 1
        if i == n - 1:
            m[:] = 0  # one clean image: excluded from F1/IoU/AUROC averages
        s = np.clip(0.35 * m + rng.random((h, w)) * 0.7, 0, 1).round(2)  # rounding makes ties
        masks.append(m)
        maps.append(s)
    return masks, maps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_image_matches_sklearn(seed: int) -> None:
    masks, maps = _random_set(seed)
    out = pm.localization_metrics(masks, maps)
    used = [(m.ravel(), s.ravel()) for m, s in zip(masks, maps, strict=True) if m.any()]
    f1 = np.mean([f1_score(m, s > 0.5) for m, s in used])
    iou = np.mean([jaccard_score(m, s > 0.5) for m, s in used])
    auc = np.mean([roc_auc_score(m, s) for m, s in used if 0 < m.sum() < m.size])
    best = np.mean([max(f1_score(m, s >= t) for t in np.unique(s)) for m, s in used])
    assert out["n_images"] == 6 and out["n_scored"] == 5
    assert out["pixel_f1"] == pytest.approx(f1, abs=1e-12)
    assert out["pixel_iou"] == pytest.approx(iou, abs=1e-12)
    assert out["pixel_auroc"] == pytest.approx(auc, abs=1e-12)
    assert out["pixel_f1_best"] == pytest.approx(best, abs=1e-12)
    assert out["pixel_f1_best"] >= out["pixel_f1"]


@pytest.mark.parametrize("seed", [3, 4])
def test_pooled_matches_sklearn(seed: int) -> None:
    masks, maps = _random_set(seed)
    out = pm.localization_metrics(masks, maps, threshold=0.4, mode="pooled")
    m = np.concatenate([a.ravel() for a in masks])
    s = np.concatenate([a.ravel() for a in maps])
    assert out["pixel_f1"] == pytest.approx(f1_score(m, s > 0.4), abs=1e-12)
    assert out["pixel_iou"] == pytest.approx(jaccard_score(m, s > 0.4), abs=1e-12)
    assert out["pixel_auroc"] == pytest.approx(roc_auc_score(m, s), abs=1e-12)
    f1s = {t: f1_score(m, s >= t) for t in np.unique(s)}
    t_best = max(f1s, key=lambda t: (f1s[t], t))
    assert out["pixel_f1_best"] == pytest.approx(f1s[t_best], abs=1e-12)
    assert f1s[out["best_threshold"]] == pytest.approx(out["pixel_f1_best"], abs=1e-12)


def test_array_inputs_and_trivial_maps() -> None:
    masks, maps = _random_set(5)
    h, w = 8, 9
    stack_m = np.stack([np.pad(m[:h, :w], ((0, h - m[:h].shape[0]), (0, w - m[:, :w].shape[1]))) for m in masks])
    stack_m[:, 0, 0] = 1  # every image has an altered pixel
    ones, zeros = np.ones(stack_m.shape), np.zeros(stack_m.shape)
    all_ones = pm.localization_metrics(stack_m[:, None], ones[:, None])  # (N, 1, H, W) accepted
    all_zeros = pm.localization_metrics(stack_m, zeros)
    assert all_zeros["pixel_f1"] == 0.0 and all_zeros["pixel_iou"] == 0.0
    fracs = stack_m.reshape(len(stack_m), -1).mean(1)
    assert all_ones["pixel_f1"] == pytest.approx(np.mean(2 * fracs / (1 + fracs)))
    assert all_ones["pixel_iou"] == pytest.approx(np.mean(fracs))
    perfect = pm.localization_metrics(stack_m, stack_m.astype(float))
    assert perfect["pixel_f1"] == perfect["pixel_iou"] == perfect["pixel_f1_best"] == 1.0


def test_per_image_score() -> None:
    assert pm.per_image_localization_score(0.9, 0.6, 0.3) == pytest.approx(0.6)
    assert math.isnan(pm.per_image_localization_score(0.9, float("nan"), 0.3))
    with pytest.raises(ValueError, match="pixel_iou"):
        pm.per_image_localization_score(0.9, 0.5, 1.5)


def test_loupe_score_hand_computed() -> None:
    # Loupe (IJCAI 2025 challenge): pixel terms pooled over the images whose mask has an altered pixel.
    masks = [np.array([[1, 1], [0, 0]]), np.array([[1, 0, 0, 0]]), np.array([[0, 0]])]
    maps = [np.array([[0.9, 0.2], [0.6, 0.1]]), np.array([[0.8, 0.7, 0.3, 0.2]]), np.array([[0.9, 0.9]])]
    # image 1: TP 1, FN 1, FP 1, TN 1; image 2: TP 1, FP 1, TN 2; image 3 (no altered pixel) is skipped.
    # pooled: TP 2, FP 2, FN 1, TN 3 -> F1 = 4/7, IoU altered = 2/5, IoU clean = 3/6, mean IoU = 0.45
    t = pm.loupe_pixel_terms(masks, maps)
    assert t["n_loupe"] == 2
    assert t["loupe_f1"] == pytest.approx(4 / 7)
    assert t["loupe_iou_altered"] == pytest.approx(0.4) and t["loupe_iou_clean"] == pytest.approx(0.5)
    assert t["loupe_miou"] == pytest.approx(0.45)
    assert pm.loupe_score(0.8, t["loupe_f1"], t["loupe_miou"]) == pytest.approx((0.8 + 4 / 7 + 0.45) / 3)
    # the per-image score of the same maps differs: F1 (1/2 + 2/3)/2, IoU (1/3 + 1/2)/2
    per = pm.localization_metrics(masks, maps)
    assert per["pixel_f1"] == pytest.approx(7 / 12) and per["pixel_iou"] == pytest.approx(5 / 12)
    assert pm.per_image_localization_score(0.8, per["pixel_f1"], per["pixel_iou"]) == pytest.approx(0.6)
    # every pixel altered and found: no clean pixel anywhere, the clean IoU is undefined and left out of the mean
    full = pm.loupe_pixel_terms([np.ones((2, 2))], [np.ones((2, 2))])
    assert math.isnan(full["loupe_iou_clean"]) and full["loupe_miou"] == 1.0
    none = pm.loupe_pixel_terms([np.zeros((2, 2))], [np.ones((2, 2))])
    assert math.isnan(none["loupe_f1"]) and none["n_loupe"] == 0 and "no image" in none["reason"]
