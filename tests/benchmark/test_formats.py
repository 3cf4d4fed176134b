"""Source formats: the probe and JPEG quality estimate (against ImageMagick), re-encoding profiles, the
`synthetic:formats` presets, the format-only baseline end to end, and the leaderboard's format view."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import numpy as np
import pytest
from helpers import TEST_DATA
from PIL import Image
from sklearn.metrics import roc_auc_score

from benchmark.degradations import degradation_key, degrade
from benchmark.formats import (
    FEATURE_NAMES,
    estimate_jpeg_quality,
    evaluated_format,
    fill_formats,
    format_features,
    ijg_table,
    jpeg_quantization_tables,
    parse_profile,
    probe_bytes,
    probe_file,
)
from benchmark.manifest import Manifest
from benchmark.synthetic import SYNTHETIC_PRESETS, build_synthetic
from leaderboard.formats_view import composition, pair_table

GOLDEN = TEST_DATA / "jpeg_quality_imagemagick.json"


def _noise() -> np.ndarray:
    return (np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)


def _encode(kind: str, arg: str) -> bytes:
    """The golden's images, remade as its "images" entry describes."""
    img, buf = _noise(), io.BytesIO()
    if kind == "pil":
        Image.fromarray(img).save(buf, "JPEG", quality=int(arg))
    elif kind == "cv2":
        import cv2

        return cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(arg)])[1].tobytes()
    elif kind == "gray":
        Image.fromarray(img).convert("L").save(buf, "JPEG", quality=int(arg))
    elif kind == "preset":
        Image.fromarray(img).save(buf, "JPEG", qtables=arg)
    return buf.getvalue()


def test_jpeg_quality_matches_imagemagick_for_ijg_encoders():
    """ImageMagick's `identify %Q` (golden, made by ImageMagick itself) on Pillow and OpenCV files at every
    quality 1..100 and a grayscale file: our estimate is exact. Non-IJG tables (Pillow's Photoshop-like
    presets) get the nearest IJG quality, which may differ from ImageMagick's own heuristic by a few points."""
    golden = json.loads(GOLDEN.read_text())["quality"]
    assert len(golden) > 200
    for name, want in golden.items():
        kind, _, arg = name.partition("_")
        fmt, got = probe_bytes(_encode(kind, arg))
        assert fmt == "jpeg"
        if kind == "preset":
            assert abs(got - want) <= 6, (name, want, got)
        else:
            assert got == want, (name, want, got)


def test_ijg_scaling_and_table_parsing_by_hand():
    # q=50: scale 100, the Annex K tables themselves; q=90: scale 20 → (16·20+50)//100 = 3; q=1 clamps to 255.
    assert ijg_table(np.array([16, 99]), 50).tolist() == [16, 99]
    assert ijg_table(np.array([16, 99]), 90).tolist() == [3, 20]
    assert ijg_table(np.array([16, 99]), 1).tolist() == [255, 255]
    buf = io.BytesIO()
    Image.fromarray(_noise()).save(buf, "JPEG", quality=90)
    tables = jpeg_quantization_tables(buf.getvalue())
    assert tables[0][0] == 3 and tables[0][1] == 2  # natural order: 11·20 → 2 (second entry of row 0)
    assert estimate_jpeg_quality(tables) == 90 and estimate_jpeg_quality({}) is None
    assert jpeg_quantization_tables(buf.getvalue()[:10]) is None  # ends before the tables: read more


def test_probe_reads_bytes_not_names(tmp_path):
    img = Image.fromarray(_noise())
    for fmt, kw, want in (("PNG", {}, "png"), ("WEBP", {"quality": 80}, "webp"), ("BMP", {}, "other"),
                          ("JPEG", {"quality": 77}, "jpeg")):
        p = tmp_path / "image.png"  # every file named .png: the name is not trusted
        img.save(p, fmt, **kw)
        got = probe_file(p)
        assert got == (want, 77 if want == "jpeg" else None), (fmt, got)
    assert probe_bytes(b"\xff\xd8\xff\xe0 broken")[0] == "jpeg"  # a broken JPEG: its format, no quality


def test_reencode_profile_parses_and_validates():
    assert parse_profile("aigenbench-v1") == ("aigenbench-v1", None)
    assert parse_profile("fixed+reencode75") == ("fixed", 75)
    for bad in ("aigenbench-v2", "fixed+reencode0", "fixed+reencode101", "fixed+reencode", "fixed+jpeg90"):
        with pytest.raises(ValueError, match="profile"):
            parse_profile(bad)
    assert evaluated_format("png", None, "aigenbench-v1+reencode95") == ("jpeg", 95)
    assert evaluated_format("png", None, "aigenbench-v1") == ("png", None)


def test_reencode_profile_is_the_base_chain_on_the_reencoded_image():
    """`<profile>+reencode<Q>` = JPEG at Q with Pillow, decode, then the profile's chain with the same seed."""
    img = np.random.default_rng(3).integers(0, 256, (300, 280, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    reencoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    for base in ("aigenbench-v1", "fixed"):
        out, steps = degrade(img, 5, f"{base}+reencode90")
        want, _ = degrade(reencoded, 5, base)
        assert np.array_equal(out, want), base
        assert steps[0] == {"step": "reencode", "fired": True, "backend": "pil", "quality": 90}
        assert degradation_key(f"{base}+reencode90")["profile"] == f"{base}+reencode90"


def test_formats_preset_plants_the_shortcut_and_records_it(cache_dir):
    m = build_synthetic(cache_dir, "formats-smoke", 0, progress=False)
    default = build_synthetic(cache_dir, "smoke", 0, progress=False)
    assert {s.format for s in default.samples} == {"png"}  # the default benchmark stays all PNG
    reals = [s for s in m.samples if s.label == 0]
    fakes = [s for s in m.samples if s.label == 1]
    assert sum(s.format == "jpeg" for s in reals) / len(reals) > 0.75
    assert sum(s.format == "png" for s in fakes) / len(fakes) > 0.7
    assert len({s.format for s in fakes}) == 3
    for s in m.samples[:: max(1, len(m.samples) // 40)]:  # what the manifest says is what the bytes say
        assert probe_file(m.root / s.path) == (s.format, s.jpeg_quality), s.path
        assert s.path.endswith({"jpeg": ".jpg", "png": ".png", "webp": ".webp"}[s.format])
    # Same pixels as the PNG benchmark where both are lossless; the checksum ignores the derived fields.
    pair = next((a, b) for a, b in zip(m.samples, default.samples, strict=True) if a.format == "png")
    assert np.array_equal(np.asarray(Image.open(m.root / pair[0].path)), np.asarray(Image.open(default.root / pair[1].path)))
    blank = Manifest(m.name, m.root, [replace(s, format="", jpeg_quality=None) for s in m.samples], dict(m.timeline),
                     dict(m.extra))
    assert blank.checksum == m.checksum
    filled = fill_formats(blank)
    assert [(s.format, s.jpeg_quality) for s in filled.samples] == [(s.format, s.jpeg_quality) for s in m.samples]
    assert fill_formats(m) is None
    assert SYNTHETIC_PRESETS["formats"].train_fakes == SYNTHETIC_PRESETS["default"].train_fakes


def test_format_features_are_one_hot_by_format_and_quality_bin():
    x = format_features([("png", None), ("jpeg", 95), ("jpeg", 96), ("jpeg", None), ("webp", 90)])
    assert x.shape == (5, len(FEATURE_NAMES)) and (x.sum(axis=1) == 1).all()
    names = [FEATURE_NAMES[i] for i in x.argmax(axis=1)]
    assert names == ["png", "jpeg:91-95", "jpeg:96-100", "jpeg:unknown", "webp"]
    with pytest.raises(ValueError, match="no format recorded"):
        format_features([("", None)])


def test_pair_table_matches_sklearn():
    rng = np.random.default_rng(1)
    n = 400
    y = rng.integers(0, 2, n)
    fmt = np.where(rng.random(n) < np.where(y == 1, 0.2, 0.8), "jpeg", "png")
    s = rng.random(n) + 0.3 * (fmt == "png")
    arrays = {"fused_labels": y, "fused_scores": s.astype(np.float32), "fused_source_format": fmt,
              "fused_jpeg_quality": np.where(fmt == "jpeg", 90, -1)}
    t = pair_table(arrays).set_index(["real_format", "fake_format"])
    s32 = s.astype(np.float32)
    assert t.loc[("all", "all"), "auroc"] == pytest.approx(roc_auc_score(y, s32), abs=1e-12)
    for a in ("jpeg", "png"):
        for b in ("jpeg", "png"):
            sel = ((y == 0) & (fmt == a)) | ((y == 1) & (fmt == b))
            assert t.loc[(a, b), "auroc"] == pytest.approx(roc_auc_score(y[sel], s32[sel]), abs=1e-12), (a, b)
            assert t.loc[(a, b), "n_real"] == ((y == 0) & (fmt == a)).sum()
    comp = composition(arrays).set_index(["class", "format"])
    assert comp.loc[("real", "jpeg"), "jpeg_quality_median"] == 90


@pytest.fixture(scope="module")
def format_runs(tmp_path_factory, cache_dir):
    """The format-only baseline on `synthetic:formats-smoke`, plain and under a re-encoding profile."""
    from protocols.cli import main

    runs = tmp_path_factory.mktemp("format-runs")
    for name, profile in (("plain", "aigenbench-v1"), ("reencode", "aigenbench-v1+reencode95")):
        assert main(["run", "--preset", "smoke", "--dataset", "synthetic:formats-smoke", "--detector", "format_only",
                     "--runs-dir", str(runs), "--cache-dir", str(cache_dir), "--experiment", name, "--no-progress",
                     "--no-leaderboard", "--set", f"degradation.profile={profile}",
                     "--set", "train.epochs=3"]) == 0
    return runs


def _load(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_format_only_baseline_measures_the_shortcut(format_runs, tmp_path, capsys):
    """Formats differ by class: the baseline separates them by the container alone (AUROC well above 0.5). Under
    the re-encoding profile every eval image is JPEG at one quality: it cannot (AUROC exactly 0.5)."""
    from protocols.cli import main as leaderboard_main

    plain, reenc = format_runs / "plain", format_runs / "reencode"
    n = len(json.loads((plain / "run.json").read_text())["windows"])
    for k in range(n):
        z, r = _load(plain / f"window_{k}" / "predictions.npz"), _load(reenc / f"window_{k}" / "predictions.npz")
        assert roc_auc_score(z["fused_labels"], z["fused_scores"]) > 0.75, k
        assert roc_auc_score(r["fused_labels"], r["fused_scores"]) == 0.5, k
        assert str(z["degradation_profile"]) == "aigenbench-v1"
        assert str(r["degradation_profile"]) == "aigenbench-v1+reencode95"
        assert set(z["fused_source_format"].tolist()) == {"jpeg", "png", "webp"}  # the source's, in both
        assert np.array_equal(z["fused_source_format"], r["fused_source_format"])
    init = _load(plain / "window_init" / "predictions.npz")
    assert np.all(init["fused_scores"] == 0.5) and int(init["window"]) == -1  # zero-initialised lookup table
    # Profiles are evaluation-defining: refused together, two tables with --group-by.
    assert leaderboard_main(["leaderboard", str(format_runs), "--out", str(tmp_path / "lb"), "--quiet"]) == 2
    assert "degradation.profile" in capsys.readouterr().err
    assert leaderboard_main(["leaderboard", str(format_runs), "--out", str(tmp_path / "lb"),
                             "--quiet", "--group-by", "degradation.profile"]) == 0
    md = (tmp_path / "lb" / "leaderboard.md").read_text()
    assert "## Source formats" in md and "real jpeg × fake png" in md
    rows = (tmp_path / "lb" / "formats.csv").read_text().splitlines()
    assert rows[0] == "experiment,window,group,real_format,fake_format,n_real,n_fake,auroc"
    assert any(r.startswith("plain,0,next,jpeg,png,") and r.endswith(",1.0") for r in rows)


def test_folder_source_records_each_files_format(tmp_path):
    from helpers import write_folder_dataset

    from benchmark.sources import load_source

    root = write_folder_dataset(tmp_path / "mine", {"GanA": "2018-01-01"})
    real = sorted((root / "train" / "real").glob("*.png"))[0]
    Image.open(real).convert("RGB").save(real.with_suffix(".jpg"), "JPEG", quality=70)
    real.unlink()
    m = load_source(f"folder:{root}", tmp_path / "cache", progress=False)
    by_path = {s.path: (s.format, s.jpeg_quality) for s in m.samples}
    assert by_path[f"train/real/{real.stem}.jpg"] == ("jpeg", 70)
    assert {v for k, v in by_path.items() if k.endswith(".png")} == {("png", None)}
    assert m.extra["formats_version"] >= 1
