"""The embedded synthetic dataset: timeline, determinism, self-repair, masks, sizes, disjoint sources."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.synthetic import (
    SYNTHETIC_PRESETS,
    SyntheticDatasetWarning,
    SyntheticPreset,
    build_synthetic,
    dataset_dirname,
)
from benchmark.timeline import make_windows


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    cache = tmp_path_factory.mktemp("synthetic")
    m = build_synthetic(cache, "smoke", seed=0, progress=False)
    return cache, m


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A fresh 1+1-fakes-per-generator build: repair logic does not depend on size, so keep it cheap."""
    monkeypatch.setitem(SYNTHETIC_PRESETS, "tiny", SyntheticPreset(train_fakes=1, eval_fakes=1))
    cache = tmp_path / "cache"
    return cache, build_synthetic(cache, "tiny", seed=0, progress=False)


def test_presets_and_layout(smoke):
    cache, m = smoke
    assert {"default", "smoke"} <= set(SYNTHETIC_PRESETS)
    assert m.root == cache / dataset_dirname("smoke", 0)
    assert (m.root / "manifest.json").is_file()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")], "temporary build dirs left behind"
    preset = SYNTHETIC_PRESETS["smoke"]
    for split, n in (("train", preset.train_fakes), ("eval", preset.eval_fakes)):
        rows = m.split(split)
        assert [s.id for s in rows] == list(range(len(rows)))  # id = row index within its split
        per_gen = Counter(s.generator for s in rows if s.label == 1)
        assert set(per_gen) == set(m.timeline) and set(per_gen.values()) == {n}
        assert sum(s.label == 0 for s in rows) == sum(per_gen.values())  # as many reals as fakes
        assert all((s.generator == "") == (s.label == 0) for s in rows)
        assert all(s.path.startswith(f"{split}/") for s in rows)


def test_timeline_has_enough_generators_and_windows(smoke):
    _, m = smoke
    assert len(m.timeline) >= 20
    dates = sorted(m.timeline.values())
    assert dates[0].year == 2017 and dates[-1].year == 2025
    assert len(set(dates)) < len(dates), "no generator pair shares a date (tie merging untested)"
    windows = make_windows(m.timeline, 4)
    assert len(windows) >= 5
    assert any(len(w) > 4 for w in windows), "the date tie should make a window larger than 4"


def test_regeneration_is_byte_identical(smoke, tmp_path):
    _, m = smoke
    m2 = build_synthetic(tmp_path, "smoke", seed=0, progress=False, workers=1)
    assert m2.checksum == m.checksum
    assert _tree_hashes(m2.root) == _tree_hashes(m.root)


def test_seed_changes_the_images():
    from benchmark.synthetic import _plans, _render

    plan = _plans(SYNTHETIC_PRESETS["smoke"])[0]
    assert not np.array_equal(_render(plan, 0)[0], _render(plan, 1)[0])


def test_load_without_changes_is_silent(smoke, recwarn):
    cache, m = smoke
    again = build_synthetic(cache, "smoke", seed=0, progress=False)
    assert again.checksum == m.checksum
    assert not [w for w in recwarn if issubclass(w.category, SyntheticDatasetWarning)]


def test_corrupted_and_missing_files_are_rebuilt(tiny):
    cache, m = tiny
    before = _tree_hashes(m.root)
    img = next(s for s in m.split("eval") if s.label == 1)
    masked = next(s for s in m.samples if s.mask is not None)
    data = bytearray((m.root / img.path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (m.root / img.path).write_bytes(bytes(data))
    (m.root / masked.mask).unlink()
    with pytest.warns(SyntheticDatasetWarning) as rec:
        m2 = build_synthetic(cache, "tiny", seed=0, progress=False)
    message = " ".join(str(w.message) for w in rec)
    assert img.path in message and masked.mask in message
    assert m2.checksum == m.checksum
    assert _tree_hashes(m.root) == before


@pytest.mark.parametrize("damage", ["truncate", "edit_record", "delete"])
def test_damaged_manifest_triggers_full_rebuild(tiny, damage):
    """A truncated or edited manifest, or none at all (an interrupted build), means a full rebuild."""
    cache, m = tiny
    before = _tree_hashes(m.root)
    mpath = m.root / "manifest.json"
    text = mpath.read_text()
    if damage == "truncate":
        mpath.write_text(text[: len(text) // 2])
    elif damage == "edit_record":
        doc = json.loads(text)
        doc["samples"][0]["label"] = 1 - doc["samples"][0]["label"]  # checksum no longer matches
        mpath.write_text(json.dumps(doc))
    else:
        mpath.unlink()
    with pytest.warns(SyntheticDatasetWarning, match="rebuilding it from scratch"):
        m2 = build_synthetic(cache, "tiny", seed=0, progress=False)
    assert m2.checksum == m.checksum
    assert _tree_hashes(m.root) == before
    assert [p.name for p in cache.iterdir()] == [m.root.name], "temporary or old build dirs left behind"


def test_partial_fakes_have_binary_masks_of_image_size(smoke):
    _, m = smoke
    partial = {s.generator for s in m.samples if s.mask is not None}
    assert len(partial) >= 2
    for s in m.samples:
        if s.generator in partial:
            assert s.mask is not None
        if s.mask is None:
            continue
        assert s.label == 1
        mask = np.asarray(Image.open(m.abspath(s.mask)))
        assert mask.shape == (s.height, s.width)
        assert set(np.unique(mask).tolist()) == {0, 255}
        frac = (mask > 0).mean()
        assert 0.1 < frac < 0.9
    assert all(s.mask is None for s in m.samples if s.generator not in partial)


def test_partial_fakes_change_pixels_only_inside_mask(smoke):
    """Outside the mask a partial fake must look like an untouched image: no artifact leaks out."""
    from benchmark.synthetic import _plans, _render

    _, m = smoke
    s = next(s for s in m.samples if s.mask is not None)
    plan = next(p for p in _plans(SYNTHETIC_PRESETS["smoke"]) if (p.split, p.id) == (s.split, s.id))
    img, mask = _render(plan, 0)
    assert np.array_equal(img, np.asarray(Image.open(m.abspath(s.path))))
    assert np.array_equal(mask, np.asarray(Image.open(m.abspath(s.mask))))


def test_sizes_vary_and_match_files(smoke):
    _, m = smoke
    for s in m.samples[::7]:
        with Image.open(m.abspath(s.path)) as im:
            assert im.size == (s.width, s.height) and im.mode == "RGB"
    sizes = {(s.width, s.height) for s in m.samples}
    assert len(sizes) > 50
    assert any(min(wh) > 64 for wh in sizes) and all(min(wh) >= 64 for wh in sizes)
    assert any(w != h for w, h in sizes) and max(max(wh) for wh in sizes) > 150


def test_fakes_never_share_a_source_with_reals(smoke):
    _, m = smoke
    hashes = [s.sha256 for s in m.samples]
    assert len(set(hashes)) == len(hashes)
    real_origins = {s.origin for s in m.samples if s.label == 0}
    fake_origins = {s.origin for s in m.samples if s.label == 1}
    assert not real_origins & fake_origins
    assert len(real_origins) + len(fake_origins) == len(m.samples)


def _phase_energy(img: np.ndarray, period: int) -> float:
    """Variance of the per-phase means of the high-pass luma residual (a periodic pattern inflates it)."""
    y = img.astype(np.float64).mean(axis=2)
    k = np.ones(3) / 3
    blur = np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), 1, y)
    blur = np.apply_along_axis(lambda c: np.convolve(c, k, mode="same"), 0, blur)
    r = (y - blur)[1:-1, 1:-1]
    h, w = (r.shape[0] // period) * period, (r.shape[1] // period) * period
    phases = r[:h, :w].reshape(h // period, period, w // period, period).mean(axis=(0, 2))
    return float(phases.var())


def test_checkerboard_generator_leaves_a_periodic_trace(smoke):
    """Independent check that artifacts exist: a stride-4 upsampler's fakes carry period-4 energy."""
    _, m = smoke
    load = lambda s: np.asarray(Image.open(m.abspath(s.path)))  # noqa: E731
    fakes = [_phase_energy(load(s), 4) for s in m.samples if s.generator == "CheckerGAN-s4"]
    reals = [_phase_energy(load(s), 4) for s in m.samples if s.label == 0][:40]
    assert np.median(fakes) > 10 * np.median(reals)


def test_bad_arguments_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic preset"):
        build_synthetic(tmp_path, "huge")
    with pytest.raises(ValueError, match="seed"):
        build_synthetic(tmp_path, "smoke", seed=-1)
