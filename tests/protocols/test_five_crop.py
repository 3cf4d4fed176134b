"""five_crop in runs: every crop scored, fused by the mean of the sigmoid scores, crop-level arrays in the npz,
read by the leaderboard and `genshift inspect`; the input pipeline recorded and kept apart in the leaderboard."""

from __future__ import annotations

import json

import numpy as np
import pytest

from leaderboard.crops import crop_frame, crop_summary, pipeline_of, validate_crop_arrays
from protocols.config import ConfigError, resolve_config
from protocols.engine import run_experiment
from protocols.predictions import CROP_KEYS, SCHEMA_VERSION, fuse_crops


def test_fusion_is_the_mean_of_sigmoid_scores_by_hand():
    logits = np.array([0.0, 2.0, -1.0, 1.0, 3.0, 0.5, -4.0, 4.0, 0.0, 0.0, 1.5], dtype=np.float32)
    pos = np.array([0, 0, 0, 0, 0, 1, 2, 2, 2, 2, 2])

    def sig(v):
        return 1.0 / (1.0 + np.exp(-v))

    want = [np.mean([sig(0.0), sig(2.0), sig(-1.0), sig(1.0), sig(3.0)]), sig(0.5),
            np.mean([sig(-4.0), sig(4.0), sig(0.0), sig(0.0), sig(1.5)])]
    out = fuse_crops(logits, pos, 3)
    np.testing.assert_allclose(out["fused_scores"], want, rtol=1e-6)
    assert out["fused_scores"].dtype == np.float32
    np.testing.assert_allclose(out["crop_scores"], sig(logits.astype(np.float64)), rtol=1e-6)
    assert out["fused_logits"][1] == np.float32(0.5)  # one crop: its own logit
    np.testing.assert_allclose(out["fused_logits"][0], np.log(want[0] / (1 - want[0])), rtol=1e-5)
    # not the mean of the logits (the robustness grid's fusion): differs here
    assert abs(want[0] - sig(np.mean([0.0, 2.0, -1.0, 1.0, 3.0]))) > 1e-3
    with pytest.raises(ValueError, match="cover 2 of 3"):
        fuse_crops(logits[:6], pos[:6], 3)


def _cfg(tmp_path, cache_dir, name, **over):
    base = {"runs_dir": str(tmp_path / "runs"), "cache_dir": str(cache_dir), "experiment": name, "loggers": [],
            "threads": 1, "benchmark": {"generators_per_window": 12}}
    for k, v in over.items():
        base[k] = base.get(k, {}) | v if isinstance(v, dict) else v
    return resolve_config("smoke", overrides=[base])


@pytest.fixture(scope="module")
def five_crop_runs(tmp_path_factory, cache_dir):
    """A native five_crop run (smallcnn_tune) and a reference-pipeline five_crop run of a probe (crop features
    from the feature cache), plus a native single-crop run for the leaderboard's refusal."""
    tmp = tmp_path_factory.mktemp("five")
    runs = {
        "native5": _cfg(tmp, cache_dir, "native5", eval={"input": "five_crop"}),
        "ref5": _cfg(tmp, cache_dir, "ref5", detector="smallcnn_probe",
                     eval={"pipeline": "reference", "input": "five_crop"}),
        "native1": _cfg(tmp, cache_dir, "native1"),
    }
    return {name: run_experiment(cfg, progress=False) for name, cfg in runs.items()}


def _npz(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("name", ["native5", "ref5"])
def test_five_crop_run_writes_crop_scores(five_crop_runs, name):
    run = five_crop_runs[name]
    info = json.loads((run / "run.json").read_text())
    assert info["eval_pipeline"]["input"] == "five_crop"
    for k in range(len(info["windows"])):
        z = _npz(run / f"window_{k}" / "predictions.npz")
        assert set(CROP_KEYS) <= set(z) and int(z["schema_version"]) == SCHEMA_VERSION
        validate_crop_arrays(z, name)
        idx = z["crop_to_image_index"]
        counts = np.bincount(idx, minlength=len(z["fused_scores"]))
        assert set(counts.tolist()) <= {1, 5} and counts.max() == 5  # five crops (one where a side is <= 56)
        # fused = mean over the image's crops of sigmoid(crop logit), by hand
        sig = 1 / (1 + np.exp(-z["crop_logits"].astype(np.float64)))
        for img in range(0, len(counts), 17):
            np.testing.assert_allclose(z["fused_scores"][img], sig[idx == img].mean(), rtol=1e-6)
        assert np.array_equal(z["crop_identifiers"], z["fused_identifiers"][idx])
        assert pipeline_of(z)["pipeline"] == ("reference" if name == "ref5" else "native")
    ref = json.loads((run / "run.json").read_text())["caches"]
    if name == "ref5":
        assert "eval_features" in ref  # the probe scored its crops from cached crop features


def test_inspect_and_leaderboard_read_crops(five_crop_runs, tmp_path):
    from leaderboard.inspect import report, sample_frame
    from leaderboard.report import build_leaderboard

    path = five_crop_runs["ref5"] / "window_1" / "predictions.npz"
    text = report(path)
    assert "input pipeline: reference, five_crop, clip statistics, 56 px" in text
    assert "crops of" in text and "mean of the crops' sigmoid scores (checked)" in text
    frame = sample_frame(path)
    assert frame["n_crops"].max() == 5
    summary = crop_summary(_npz(path))
    assert summary["crops"] == int(frame["n_crops"].sum()) and 0 <= summary["auroc_per_crop"] <= 1
    assert len(crop_frame(_npz(path))) == summary["crops"]
    lb = build_leaderboard([five_crop_runs["native5"], five_crop_runs["native1"]], n_replicates=50)
    rows = lb.summary.set_index("experiment")
    assert rows.loc["native5", "crops_per_image"] > 1 and rows.loc["native1", "crops_per_image"] == 1
    assert (rows.loc["native5", "eval.pipeline"], rows.loc["native5", "eval_input"],
            rows.loc["native5", "eval.normalize"]) == ("native", "five_crop", "backbone")
    # a reference-pipeline run and a native one: one table, the pipeline a method-side column of it
    mixed = build_leaderboard([five_crop_runs["ref5"], five_crop_runs["native1"]], n_replicates=50)
    rows = mixed.summary.set_index("experiment")
    assert set(mixed.summary["group"]) == {"all"}
    assert (rows.loc["ref5", "eval.pipeline"], rows.loc["ref5", "eval.normalize"]) == ("reference", "clip")
    assert (rows.loc["native1", "eval.pipeline"], rows.loc["native1", "eval.normalize"]) == ("native", "backbone")


def test_crop_arrays_that_disagree_are_refused(five_crop_runs, tmp_path):
    from leaderboard.continual import load_window_npz

    z = _npz(five_crop_runs["native5"] / "window_0" / "predictions.npz")
    z["crop_scores"] = z["crop_scores"].copy()
    z["crop_scores"][:5] = 1.0
    bad = tmp_path / "bad.npz"
    np.savez(bad, **z)
    with pytest.raises(ValueError, match="not the mean of their crop_scores"):
        load_window_npz(bad)


def test_schema_1_files_read_as_native():
    z = {"fused_scores": np.zeros(2, np.float32)}
    assert pipeline_of(z) == {"pipeline": "native", "input": "?", "normalize": "?", "size": None}
    assert pipeline_of(z, {"detector": {"eval_input": "center_crop", "input_size": 56}})["input"] == "center_crop"


@pytest.mark.parametrize("over, match", [
    ({"pipeline": "exact"}, r"eval.pipeline = 'exact' \(set in command line\): expected one of native, reference"),
    ({"pipeline": "reference", "input": "resize_center_crop"}, "not an input of the reference pipeline"),
    ({"normalize": "imagenet"}, r"eval.normalize = 'imagenet' .*expected one of clip, backbone"),
])
def test_bad_pipeline_settings_fail_with_one_line(over, match):
    from detectors import create_detector
    from protocols.pipeline import resolve_pipeline

    with pytest.raises(ConfigError, match=match):  # the config schema, or the combination with the pipeline
        resolve_pipeline(resolve_config("smoke", overrides=[{"eval": over}]), create_detector("smallcnn_tune").meta)


def test_pipeline_defaults():
    from detectors import create_detector
    from protocols.pipeline import resolve_pipeline

    meta = create_detector("smallcnn_tune").meta
    native = resolve_pipeline(resolve_config("smoke"), meta)
    assert (native.pipeline, native.input, native.normalize, native.mean) == \
        ("native", meta.eval_resize, "backbone", meta.mean)
    ref = resolve_pipeline(resolve_config("aigenbench"), meta)
    assert (ref.pipeline, ref.input, ref.normalize) == ("reference", "resize", "clip")
    assert ref.mean == (0.48145466, 0.4578275, 0.40821073) and not ref.multi_crop


def test_predict_scores_a_checkpoint_with_its_runs_pipeline(five_crop_runs, tmp_path):
    """`genshift predict --checkpoint` of a reference-pipeline five_crop run cuts images as the reference does
    (torchvision v2 on the PIL image, centre crop when a side is <= S) and normalises with CLIP statistics."""
    import torch
    from PIL import Image

    from benchmark.model_input import normalize, reference_crops, to_float
    from detectors import load_detector_from_checkpoint
    from protocols.cli import main

    rng = np.random.default_rng(3)
    root = tmp_path / "imgs"
    sizes = {"real/a.png": (90, 70), "gen/b.png": (50, 80), "gen/c.png": (120, 121)}  # (w, h); b: fallback
    for split in ("train", "eval"):
        for rel, (w, h) in sizes.items():
            (root / split / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / split / rel)
    (root / "timeline.yaml").write_text("gen: 2020-01-01\n")
    window = five_crop_runs["ref5"] / "window_1"
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(window), "--dataset", f"folder:{root}", "--out", str(out),
                 "--split", "eval", "--no-progress", "--cache-dir", str(tmp_path / "cache")]) == 0
    with np.load(out / "predictions.npz", allow_pickle=False) as z:
        got = dict(zip(z["fused_identifiers"].tolist(), z["fused_scores"].tolist(), strict=True))
    det = load_detector_from_checkpoint(window)
    size = det.meta.input_size
    for i, rel in enumerate(sorted(sizes, key=lambda r: f"eval/{r}")):  # ids: index in the split, by path
        img = Image.open(root / "eval" / rel).convert("RGB")
        x = torch.stack([normalize(to_float(c, size), "clip") for c in reference_crops(img, size, "five_crop")])
        assert len(x) == (1 if min(sizes[rel]) <= size else 5)
        with torch.no_grad():
            want = torch.sigmoid(det(x).double()).mean().item()
        assert got[i] == pytest.approx(want, abs=1e-6)
