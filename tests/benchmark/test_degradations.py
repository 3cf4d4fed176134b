"""Tests for benchmark/degradations.py: reference golden hashes, determinism, firing rates, contracts."""

from __future__ import annotations

import hashlib
import json
import math
import random

import numpy as np
import pytest
import torch
from helpers import TEST_DATA
from torchvision.transforms import RandomResizedCrop

from benchmark import degradations as D
from benchmark.degradations import PROFILES, degradation_key, degrade

GOLDEN_PATH = TEST_DATA / "degradations_golden.json"

# Deterministic synthetic test images (height, width); some exceed 1080 on one or both sides.
# The golden file was produced from exactly these images (see its "images" entry for their hashes).
TEST_IMAGE_SIZES = [(48, 64), (257, 300), (720, 1280), (1200, 900), (1350, 1500), (1081, 1081)]


def make_test_image(index: int) -> np.ndarray:
    """Synthetic uint8 RGB image from integer arithmetic only (identical on every platform/version)."""
    h, w = TEST_IMAGE_SIZES[index]
    y = np.arange(h, dtype=np.uint64)[:, None, None]
    x = np.arange(w, dtype=np.uint64)[None, :, None]
    c = np.arange(3, dtype=np.uint64)[None, None, :]
    k = np.uint64(index + 1)
    mask = np.uint64(0xFFFFFFFF)
    texture = (
        (
            (x * np.uint64(73856093))
            ^ (y * np.uint64(19349663))
            ^ (c * np.uint64(83492791))
            ^ (k * np.uint64(2654435761))
        )
        & mask
    ) >> np.uint64(24)
    gradient = (x * np.uint64(200)) // np.uint64(max(w - 1, 1)) + (y * np.uint64(55)) // np.uint64(
        max(h - 1, 1)
    )
    block = np.uint64(16) * (index + 1)
    checker = (((x // block) + (y // block)) % np.uint64(2)) * np.uint64(40)
    value = gradient.astype(np.int64) + checker.astype(np.int64) + (texture.astype(np.int64) >> 2) - 32
    value = value + (c.astype(np.int64) * 30 if index != 1 else 0)  # image 1 is grey (equal channels)
    img = np.clip(value, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(img, (h, w, 3)))


def sha256_array(arr: np.ndarray) -> str:
    """Hash of shape + bytes of a uint8 array."""
    h = hashlib.sha256(repr(tuple(arr.shape)).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _load_golden() -> dict:
    if not GOLDEN_PATH.exists():
        pytest.fail(f"{GOLDEN_PATH} missing: regenerate it with the reference (see its 'generator' notes)")
    return json.loads(GOLDEN_PATH.read_text())


def test_golden_inputs_match_generator():
    golden = _load_golden()
    for entry in golden["images"]:
        img = make_test_image(entry["index"])
        assert list(img.shape) == entry["shape"], entry
        assert sha256_array(img) == entry["sha256"], (
            f"make_test_image({entry['index']}) changed; the golden file no longer matches its inputs"
        )


def test_aigenbench_v1_matches_reference_golden():
    golden = _load_golden()
    recorded = golden["versions"]
    installed = D._library_versions()
    images = {e["index"]: make_test_image(e["index"]) for e in golden["images"]}
    mismatches = []
    for case in golden["cases"]:
        out, _ = degrade(images[case["image"]], case["position"], "aigenbench-v1", golden["base_seed"])
        if sha256_array(out) != case["sha256"]:
            mismatches.append((case["image"], case["position"], list(out.shape), case["shape"]))
    if mismatches:
        differing = {
            k: (recorded.get(k), installed.get(k))
            for k in set(recorded) | set(installed)
            if recorded.get(k) != installed.get(k)
        }
        pytest.fail(
            f"{len(mismatches)}/{len(golden['cases'])} outputs differ from the AI-GenBench reference "
            f"(image, position, our shape, reference shape; first 10): {mismatches[:10]}.\n"
            f"Library versions differing (golden, installed): {differing or 'none'}.\n"
            f"Golden versions: {recorded}\nInstalled: {installed}"
        )


def test_deterministic_and_position_dependent():
    img = make_test_image(1)
    a, rec_a = degrade(img, 17)
    b, rec_b = degrade(img, 17)
    assert np.array_equal(a, b) and rec_a == rec_b
    outs = [degrade(img, p)[0] for p in range(40)]
    distinct = {sha256_array(o) for o in outs}
    assert len(distinct) > 20  # ~25% of positions leave a small image untouched (0.9*0.5*0.7*0.8*0.75*0.9)
    fixed_a, _ = degrade(img, 17, "fixed")
    assert np.array_equal(fixed_a, degrade(img, 17, "fixed")[0])


def test_does_not_touch_caller_rng_state():
    torch.manual_seed(5)
    random.seed(5)
    expected_t, expected_r = torch.rand(1), random.random()
    torch.manual_seed(5)
    random.seed(5)
    degrade(make_test_image(0), 3)
    assert torch.rand(1) == expected_t and random.random() == expected_r


@pytest.mark.parametrize("profile", PROFILES)
def test_step_firing_frequencies(profile):
    img = np.full((12, 12, 3), 128, dtype=np.uint8)
    n = 2000 if profile == "aigenbench-v1" else 1000
    expected = {
        "grayscale": 0.1,
        "jpeg_1": 0.5,
        "noise": 0.3,
        "jpeg_2": 0.2,
        "random_resized_crop": 0.25,
        "jpeg_3": 0.1,
    }
    counts = dict.fromkeys(expected, 0)
    qualities = set()
    for pos in range(n):
        _, records = degrade(img, pos, profile)
        assert [r["step"] for r in records] == ["crop_if_large", *expected]
        assert not records[0]["fired"]
        for r in records[1:]:
            counts[r["step"]] += r["fired"]
            if r["step"].startswith("jpeg") and r["fired"]:
                qualities.add(r["quality"])
                assert r["backend"] in ("cv2", "pil")
    for step, p in expected.items():
        sd = math.sqrt(n * p * (1 - p))
        assert abs(counts[step] - n * p) < 4.5 * sd, (step, counts[step], n * p)
    if profile == "aigenbench-v1":
        assert qualities == {50, 100}
    else:
        assert qualities <= set(range(50, 101)) and len(qualities) > 30


@pytest.mark.parametrize(
    "shape", [(700, 1085, 3), (1100, 500, 3), (1300, 1200, 3), (1080, 1080, 3), (1081, 40, 3)]
)
@pytest.mark.parametrize("profile", PROFILES)
def test_crop_if_large(shape, profile):
    img = np.zeros(shape, dtype=np.uint8)
    img[..., 0] = (np.arange(shape[1]) % 251)[None, :]
    img[..., 1] = (np.arange(shape[0]) % 241)[:, None]
    large = shape[0] > 1080 or shape[1] > 1080
    lefts = set()
    for pos in range(6):
        out, records = degrade(img, pos, profile)
        crop = records[0]
        assert crop["step"] == "crop_if_large" and crop["fired"] == large
        if not large:
            continue
        assert (crop["height"], crop["width"]) == (min(shape[0], 1080), min(shape[1], 1080))
        assert 0 <= crop["top"] <= shape[0] - crop["height"] and 0 <= crop["left"] <= shape[1] - crop["width"]
        assert max(out.shape[:2]) <= 1080
        lefts.add((crop["top"], crop["left"]))
        if profile == "fixed":
            assert (crop["top"], crop["left"]) == (
                (shape[0] - crop["height"]) // 2,
                (shape[1] - crop["width"]) // 2,
            )
        if not any(r["fired"] for r in records[1:]):
            t, left = crop["top"], crop["left"]
            assert np.array_equal(out, img[t : t + crop["height"], left : left + crop["width"]])
    if large and profile == "aigenbench-v1" and min(shape[0], shape[1]) > 1080:
        assert len(lefts) > 1  # the reference crops at a seeded random position


def test_output_contract_and_input_untouched():
    for idx in (0, 2):
        img = make_test_image(idx)
        before = img.copy()
        for profile in PROFILES:
            for pos in range(15):
                out, records = degrade(img, pos, profile)
                assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
                assert out.flags["C_CONTIGUOUS"] and not np.shares_memory(out, img)
                assert len(records) == 7 and all(isinstance(r["fired"], bool) for r in records)
                json.dumps(records)
        assert np.array_equal(img, before)


def test_rrc_box_matches_torchvision():
    for seed in range(200):
        h, w = 40 + seed % 300, 30 + (seed * 7) % 400
        torch.manual_seed(seed)
        expected = RandomResizedCrop.get_params(torch.empty(3, h, w), list(D.RRC_SCALE), list(D.RRC_RATIO))
        gen = torch.Generator().manual_seed(seed)
        assert D._rrc_box(h, w, gen) == expected


def test_grayscale_records_and_size_of_rrc():
    img = make_test_image(1)
    seen_rrc = 0
    for pos in range(120):
        out, records = degrade(img, pos)
        rrc = records[5]
        if rrc["fired"]:
            seen_rrc += 1
            assert 256 <= rrc["size"] <= 512 and out.shape[:2] == (rrc["size"], rrc["size"])
            assert rrc["interpolation"] in ("bilinear", "bicubic", "lanczos")
        if records[1]["fired"] and not any(r["fired"] for r in records[2:]):
            assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    assert seen_rrc > 12


def test_bad_arguments():
    img = make_test_image(0)
    with pytest.raises(ValueError, match="aigenbench-v1, fixed"):
        degrade(img, 0, "nope")
    with pytest.raises(ValueError, match="aigenbench-v1"):
        degradation_key("nope")
    with pytest.raises(ValueError, match="uint8"):
        degrade(img.astype(np.float32), 0)
    with pytest.raises(ValueError, match="HxWx3"):
        degrade(img[..., :1], 0)
    with pytest.raises(ValueError, match="position"):
        degrade(img, -1)
    with pytest.raises(ValueError, match="2\\^31"):
        degrade(img, 2**31)


def test_degradation_key():
    key = degradation_key("aigenbench-v1")
    assert key["profile"] == "aigenbench-v1" and key["base_seed"] == 4321
    for lib in ("numpy", "Pillow", "opencv", "torchvision", "albumentations"):
        assert key["versions"][lib]
    assert "albumentations" not in degradation_key("fixed")["versions"]
    assert degradation_key("fixed", base_seed=7)["base_seed"] == 7
    json.dumps(key)
