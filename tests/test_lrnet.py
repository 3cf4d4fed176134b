"""LRNet reproduced exactly: key layout, strict and safe loading, and numbers made by LRNet's own code.

tests/data/lrnet_golden.json was written by LRNet's own code (frederickszk/LRNet @ 9a172a0: training/utils/model.py,
data.py, dataset.py, metric.py and evaluate.py's mix), run outside this repository:
- `handmade`: seeded weights in LRNet's key layout and hand-made landmark sequences, both from the formulas
  below (so the test rebuilds them without LRNet's files), evaluated as evaluate.py does (branch `all`); and
  the same sequences with one frame appended, which makes LRNet's own `range(0, T - 30, 30)` yield every full
  segment (what profile `fixed` scores);
- `published`: LRNet's published weights on its four demo landmark files (checked only when
  GENSHIFT_LRNET_REPO points at a checkout of LRNet; nothing is downloaded).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from detectors import create_detector
from detectors.weights import WeightsMismatchError

GOLDEN = json.loads((Path(__file__).parent / "data" / "lrnet_golden.json").read_text())
LAYOUT = [("hidden_state", (2, 1, 32)), ("gru.weight_ih_l0", (96, 136)), ("gru.weight_hh_l0", (96, 32)),
          ("gru.bias_ih_l0", (96,)), ("gru.bias_hh_l0", (96,)), ("gru.weight_ih_l0_reverse", (96, 136)),
          ("gru.weight_hh_l0_reverse", (96, 32)), ("gru.bias_ih_l0_reverse", (96,)),
          ("gru.bias_hh_l0_reverse", (96,)), ("dense.1.fn.net.0.weight", (64, 64)), ("dense.1.fn.net.0.bias", (64,)),
          ("dense.1.fn.net.3.weight", (64, 64)), ("dense.1.fn.net.3.bias", (64,)), ("dense.3.weight", (2, 64)),
          ("dense.3.bias", (2,))]


def seeded_state(seed: int) -> dict[str, torch.Tensor]:
    """The golden weights' formula: per key in LAYOUT order, uniform(-0.4, 0.4) (hidden_state: standard normal)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, shape in LAYOUT:
        v = rng.standard_normal(shape) if k == "hidden_state" else rng.uniform(-0.4, 0.4, shape)
        out[k] = torch.from_numpy(v.astype(np.float32))
    return out


def handmade(frames: int, seed: int) -> np.ndarray:
    """The golden sequences' formula: sinusoids around a random face plus noise."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(-0.8, 0.8, 136)
    freq = rng.uniform(0.05, 0.4, 136)
    phase = rng.uniform(0, 2 * np.pi, 136)
    amp = rng.uniform(0.01, 0.08, 136)
    t = np.arange(frames)[:, None]
    return base + amp * np.sin(freq * t + phase) + 0.01 * rng.standard_normal((frames, 136))


def write_layout(root: Path) -> Path:
    """The hand-made videos in LRNet's layout (Origin = real, DF = fake), raw, test split."""
    for name, spec in GOLDEN["handmade"]["sequences"].items():
        d = root / ("Origin" if spec["label"] == 0 else "DF") / "raw" / "test"
        d.mkdir(parents=True, exist_ok=True)
        np.savetxt(d / f"{name}.txt", handmade(spec["frames"], spec["seed"]), fmt="%.5f", delimiter=" ")
    return root


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("lrnet-weights")
    torch.save(seeded_state(1), d / "g1.pth")  # LRNet's files: torch.save(model.state_dict(), ...)
    torch.save(seeded_state(2), d / "g2.pth")
    return d


def test_branch_has_lrnets_key_layout():
    det = create_detector("lrnet", pretrained="none")
    for b in ("g1", "g2"):
        sd = getattr(det, b).state_dict()
        assert [(k, tuple(v.shape)) for k, v in sd.items()] == LAYOUT
    assert det.meta.n_params == 2 * sum(int(np.prod(s)) for _, s in LAYOUT)
    assert create_detector("lrnet_g1", pretrained="none").branch_names == ("g1",)
    assert create_detector("lrnet_g2", pretrained="none").branch_names == ("g2",)


def test_strict_loading_names_missing_and_extra_keys(weights_dir, tmp_path):
    det = create_detector("lrnet_g1", pretrained=str(weights_dir / "g1.pth"))
    assert torch.equal(det.g1.gru.weight_ih_l0, seeded_state(1)["gru.weight_ih_l0"])
    both = create_detector("lrnet", pretrained=str(weights_dir))
    assert torch.equal(both.g2.dense[3].weight, seeded_state(2)["dense.3.weight"])
    sd = seeded_state(1)
    del sd["dense.3.bias"]
    sd["dense.4.weight"] = torch.zeros(2, 64)
    torch.save(sd, tmp_path / "g1.pth")
    with pytest.raises(WeightsMismatchError) as e:
        create_detector("lrnet_g1", pretrained=str(tmp_path / "g1.pth"))
    assert "dense.3.bias" in str(e.value) and "dense.4.weight" in str(e.value)
    assert e.value.missing == ["dense.3.bias"] and e.value.unexpected == ["dense.4.weight"]
    with pytest.raises(FileNotFoundError, match="g2.pth"):  # a directory must hold every branch
        create_detector("lrnet", pretrained=str(tmp_path))
    with pytest.raises(WeightsMismatchError, match="one LRNet branch"):
        create_detector("lrnet", pretrained=str(weights_dir / "g1.pth"))


def test_loading_is_weights_only(tmp_path):
    torch.save({"hidden_state": torch.zeros(2, 1, 32), "payload": Path("x")}, tmp_path / "g1.pth")
    with pytest.raises(Exception, match="(?i)weights only|weights_only|unsupported"):
        create_detector("lrnet_g1", pretrained=str(tmp_path / "g1.pth"))


def test_default_weights_say_where_they_are():
    from detectors.weights import WeightsUnavailableError

    with pytest.raises(WeightsUnavailableError, match="g1.pth and g2.pth"):
        create_detector("lrnet", pretrained="default")


def _predict(tmp_path, weights_dir, detector, *extra) -> dict:
    from protocols.cli import main

    root = write_layout(tmp_path / "lm")
    out = tmp_path / f"out-{detector}-{'-'.join(extra) or 'default'}"
    assert main(["predict", "--detector", detector, "--pretrained", str(weights_dir), "--dataset", f"landmarks:{root}",
                 "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress", *extra]) == 0
    with np.load(out / "predictions.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["csv"] = (out / "predictions.csv").read_text()
    return arrays


def _per_video(arrays: dict) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for s, v in zip(arrays["segment_scores"], arrays["segment_video"], strict=True):
        out.setdefault(str(arrays["fused_video"][v]), []).append(float(s))
    return out


def test_lrnet_v1_matches_lrnets_own_evaluation(tmp_path, weights_dir):
    """Segments, difference input, mix and vote as LRNet's evaluate.py computes them (profile lrnet-v1)."""
    ref = GOLDEN["handmade"]["lrnet_v1"]
    a = _predict(tmp_path, weights_dir, "lrnet")
    assert str(a["sequence_profile"]) == "lrnet-v1" and str(a["sequence_aggregate"]) == "vote"
    got = _per_video(a)
    assert sorted(got) == sorted(ref["segments"])  # r25 (< 30 frames) and r30 (exactly 30) have no segment
    for name, seg in ref["segments"].items():
        np.testing.assert_allclose(got[name], seg["mix"], atol=2e-6, rtol=0)
    video = {str(v): float(s) for v, s in zip(a["fused_video"], a["fused_scores"], strict=True)}
    for name, vote in zip(ref["videos_with_segments"], ref["prediction_video"], strict=True):
        assert video[name] == pytest.approx(vote, abs=1e-7)
    assert np.isnan(video["r30"]) and np.isnan(video["r25"])
    assert "no_segment" in a["csv"] and "too_short" in a["csv"]  # named, never dropped
    # LRNet's defect: the 30-frame video's label is appended without a prediction, so its video-level arrays
    # have different lengths (labels shift against predictions); genshift keeps one row per video instead.
    assert len(ref["labels_video"]) == len(ref["prediction_video"]) + 1
    assert len(a["fused_scores"]) == len(GOLDEN["handmade"]["sequences"])


@pytest.mark.parametrize("branch", ["g1", "g2"])
def test_single_branches_match_lrnet(tmp_path, weights_dir, branch):
    ref = GOLDEN["handmade"]["lrnet_v1"]["segments"]
    got = _per_video(_predict(tmp_path, weights_dir, f"lrnet_{branch}"))
    for name, seg in ref.items():
        np.testing.assert_allclose(got[name], seg[branch], atol=1e-6, rtol=0)


def test_fixed_profile_scores_every_full_segment(tmp_path, weights_dir):
    """Profile fixed: the 30-frame video and the last full segment of a multiple of 30 are scored; mean score."""
    ref = GOLDEN["handmade"]["last_segment_padded"]["segments"]
    a = _predict(tmp_path, weights_dir, "lrnet", "--profile", "fixed")
    assert str(a["sequence_aggregate"]) == "mean"
    got = _per_video(a)
    assert sorted(got) == sorted(ref)  # now with r30
    assert len(got["r30"]) == 1 and len(got["r60"]) == 2 and len(got["f120"]) == 4
    video = {str(v): float(s) for v, s in zip(a["fused_video"], a["fused_scores"], strict=True)}
    for name, seg in ref.items():
        np.testing.assert_allclose(got[name], seg["mix"], atol=2e-6, rtol=0)
        assert video[name] == pytest.approx(float(np.mean(seg["mix"])), abs=2e-6)
    assert np.isnan(video["r25"])  # shorter than one segment under every profile


def test_predict_writes_documented_keys(tmp_path, weights_dir):
    a = _predict(tmp_path, weights_dir, "lrnet", "--split", "eval")
    for key in ("fused_scores", "fused_logits", "fused_labels", "fused_generator_ids", "fused_identifiers",
                "generator_id_to_name", "fused_paths", "fused_splits", "fused_compression", "fused_video",
                "fused_frames", "segment_scores", "segment_video", "segment_start", "sequence_profile"):
        assert key in a, key
    assert list(a["generator_id_to_name"]) == ["", "DF"]
    assert set(a["fused_compression"]) == {"raw"} and set(a["fused_splits"]) == {"eval"}
    assert all(p.startswith(("Origin/raw/test/", "DF/raw/test/")) for p in a["fused_paths"])
    assert a["segment_video"].max() < len(a["fused_scores"]) and np.all(np.diff(a["segment_video"]) >= 0)


@pytest.mark.skipif(not os.environ.get("GENSHIFT_LRNET_REPO"), reason="set GENSHIFT_LRNET_REPO to a checkout of "
                    "frederickszk/LRNet to check its published weights on its demo landmark files")
@pytest.mark.parametrize("weights", ["training_ffpp_raw", "demo_dfo"])
def test_published_weights_on_lrnets_demo_files(tmp_path, weights):
    import hashlib
    import shutil

    from protocols.cli import main

    repo = Path(os.environ["GENSHIFT_LRNET_REPO"])
    wdir = repo / ("training/weights/torch" if weights == "training_ffpp_raw" else "demo/model_weights")
    ref = GOLDEN["published"][weights]
    assert hashlib.sha256((wdir / "g1.pth").read_bytes()).hexdigest() == ref["g1_sha256"]
    root = tmp_path / "lm"
    for name in ref["videos"]:
        d = root / "DF" / "raw" / "test"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / "demo" / "landmarks" / f"{name}.txt", d)
    out = tmp_path / "out"
    assert main(["predict", "--detector", "lrnet", "--pretrained", str(wdir), "--dataset", f"landmarks:{root}",
                 "--out", str(out), "--cache-dir", str(tmp_path / "c"), "--no-progress"]) == 0
    with np.load(out / "predictions.npz") as z:
        a = {k: z[k] for k in z.files}
    got = _per_video(a)
    for name, rec in ref["videos"].items():
        np.testing.assert_allclose(got[name], rec["mix"], atol=2e-6, rtol=0)
        row = list(a["fused_video"]).index(name)
        assert float(a["fused_scores"][row]) == pytest.approx(rec["vote"], abs=1e-7)


def test_lrnet_detectors_are_listed_with_size_and_flops(tmp_path):
    from detectors.listing import detector_rows

    rows = {r["name"]: r for r in detector_rows(family="lrnet", cache_file=tmp_path / "c.json")}
    assert set(rows) == {"lrnet", "lrnet_g1", "lrnet_g2"}
    assert rows["lrnet"]["n_params"] == 2 * rows["lrnet_g1"]["n_params"] == 82308
    # one 30-frame segment: per branch and direction, 30 GRU steps of 3 gates × (136 + 32) × 32 multiply-adds
    assert rows["lrnet_g1"]["flops"] >= 2 * 2 * 30 * 3 * (136 + 32) * 32
    assert rows["lrnet"]["eval_resize"] == "none" and rows["lrnet"]["input_size"] == 30
