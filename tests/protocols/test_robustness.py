"""Robustness grid: single degradations, deterministic per image, scored per window from checkpoints."""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from benchmark import single_degradations as sd
from benchmark.array_store import Field, make_spec
from benchmark.degradations import degrade
from leaderboard import robustness_grid as grid_files
from protocols import robustness as rb
from protocols import robustness_cli


@pytest.fixture(scope="module")
def fake_run(cache_dir, tmp_path_factory):
    """A run directory with two finished windows (untrained smallcnn_tune, seeds 0 and 1) on the smoke set."""
    from safetensors.torch import save_file

    from benchmark.synthetic import build_synthetic
    from detectors import create_detector

    m = build_synthetic(cache_dir, "smoke", seed=0, progress=False)
    run = tmp_path_factory.mktemp("robust-run")
    cfg = {"dataset": "synthetic:smoke", "cache_dir": str(cache_dir), "eval": {"input": None},
           "benchmark": {"eval_balance_seed": 1338, "eval_shuffle_seed": 1340, "eval_pairing_seed": 1341},
           "degradation": {"profile": "aigenbench-v1", "base_seed": 4321}}
    (run / "run.json").write_text(json.dumps({"config": cfg, "manifest_checksum": m.checksum}))
    for k in (0, 1):
        d = run / f"window_{k}"
        d.mkdir()
        det = create_detector("smallcnn_tune", seed=k)
        save_file({n: t.contiguous() for n, t in det.trainable_state_dict().items()}, str(d / "checkpoint.safetensors"))
        (d / "checkpoint.json").write_text(json.dumps({"detector": det.meta.to_dict()}))
        (d / "done").write_text("")
    (run / "window_2").mkdir()  # unfinished: ignored
    return run, m


def _img(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (40, 50, 3), dtype=np.uint8)


def test_single_degradations_are_deterministic_and_graded() -> None:
    img = _img()
    for kind, level in (("blur", 0), ("noise", 0), ("scale", 1.0), ("none", 0)):
        assert sd.apply_single(img, kind, level, 3) is img and sd.is_identity(kind, level)
    assert not any(sd.is_identity(k, lv) for k, lv in (("jpeg", 100), ("blur", 1), ("scale", 0.5), ("mandatory", 1)))
    a, b = sd.apply_single(img, "noise", 10, 3), sd.apply_single(img, "noise", 10, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, sd.apply_single(img, "noise", 10, 4))
    assert abs((a.astype(float) - img).std() - 10) < 1.0  # sigma in /255 units (clipping shrinks it a little)
    assert sd.apply_single(img, "scale", 0.5, 0).shape == (20, 25, 3)
    err = [np.abs(sd.apply_single(img, "jpeg", q, 0).astype(float) - img).mean() for q in (100, 70, 50)]
    assert err[0] < err[1] < err[2]
    blur = [sd.apply_single(img, "blur", s, 0).astype(float).std() for s in (1, 2, 3)]
    assert blur[0] > blur[1] > blur[2]
    cfg = {"degradation": {"profile": "aigenbench-v1", "base_seed": 4321}}
    assert np.array_equal(sd.apply_single(img, "mandatory", 1, 7, cfg), degrade(img, 7, "aigenbench-v1", 4321)[0])
    with pytest.raises(rb.RobustnessError, match="unknown degradation"):
        sd.apply_single(img, "sharpen", 1, 0)


def test_parse_grid() -> None:
    assert sd.parse_grid(None) == sd.DEFAULT_GRID
    assert sd.parse_grid(["jpeg=90,50", "blur"]) == {"none": (0,), "jpeg": (90.0, 50.0), "blur": (0, 1, 2, 3)}
    with pytest.raises(rb.RobustnessError, match="unknown degradation"):
        sd.parse_grid(["jpg"])
    with pytest.raises(rb.RobustnessError, match="bad levels"):
        sd.parse_grid(["jpeg=high"])


def test_grid_scores_windows_and_writes_outputs(fake_run) -> None:
    run, m = fake_run
    parser = argparse.ArgumentParser()
    robustness_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["robustness", str(run), "--degradation", "jpeg=100,50", "--degradation", "mandatory",
                              "--limit", "40", "--no-progress", "--threads", "1"])
    assert args.handler(args) == 0
    rows = list(csv.DictReader((run / "robustness.csv").open()))
    assert [(r["window"], r["degradation"], r["level"]) for r in rows[:4]] == [
        ("0", "none", "0"), ("1", "none", "0"), ("0", "jpeg", "100"), ("1", "jpeg", "100")]
    assert len(rows) == 2 * 4 and all(r["n"] == "40" for r in rows)
    assert (run / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads((run / "robustness.json").read_text())
    assert meta["limit"] == 40 and meta["windows"] == [0, 1]

    # independent check of the clean cell of window 1: own preprocessing, sklearn AUROC
    from benchmark.images import adapt_to_input, load_rgb
    from detectors import load_detector_from_checkpoint

    _, plan = rb.load_eval(json.loads((run / "run.json").read_text()), None, False)
    det = load_detector_from_checkpoint(run / "window_1")
    by_id = {s.id: s for s in m.split("eval")}
    x = np.stack([adapt_to_input(load_rgb(m.abspath(by_id[int(i)].path)), det.meta.input_size, "center_crop")
                  for i in plan.sample_ids[:40]])
    t = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        scores = torch.sigmoid(det(t)).numpy()
    clean = next(r for r in rows if r["window"] == "1" and r["degradation"] == "none")
    assert float(clean["auroc"]) == pytest.approx(roc_auc_score(plan.labels[:40], scores), abs=1e-6)

    summary = list(csv.DictReader((run / "robustness_summary.csv").open()))
    s = next(r for r in summary if r["window"] == "1" and r["degradation"] == "jpeg")
    cells = [float(r["auroc"]) for r in rows if r["window"] == "1" and r["degradation"] == "jpeg"]
    assert float(s["worst_auroc"]) == pytest.approx(min(cells), abs=1e-6)
    base = float(clean["auroc"])
    assert float(s["relative_drop"]) == pytest.approx((base - min(cells)) / base, abs=1e-5)
    assert s["monotone"] in ("True", "False") and float(s["auroc_se"]) > 0  # two jpeg levels: a verdict
    assert next(r for r in summary if r["degradation"] == "none")["monotone"] == ""  # not graded: none

    # per-image scores kept in robustness.csv's row order; their AUROC is the csv's
    z = np.load(run / "robustness_scores.npz")
    assert z["scores"].shape == (8, 40) and list(z["degradation"][:4]) == ["none", "none", "jpeg", "jpeg"]
    assert np.array_equal(z["labels"], plan.labels[:40]) and np.array_equal(z["sample_ids"], plan.sample_ids[:40])
    for r, sc in zip(rows, z["scores"], strict=True):
        assert float(r["auroc"]) == pytest.approx(roc_auc_score(z["labels"], sc), abs=1e-5)


def test_errors_are_specific(fake_run, tmp_path) -> None:
    run, _ = fake_run
    with pytest.raises(rb.RobustnessError, match="not a genshift run directory"):
        rb.read_run(tmp_path)
    with pytest.raises(rb.RobustnessError, match=r"window\(s\) \[2\] are not finished"):
        rb.window_dirs(run, [0, 2])
    assert [k for k, _ in rb.window_dirs(run, None)] == [0, 1]
    rows = [{"window": 0, "degradation": "none", "level": 0, "auroc": math.nan, "n": 0}]
    assert math.isnan(grid_files.summarize(rows)[0]["mean_auroc"])


def test_level_inputs_are_cached_and_damage_is_repaired(fake_run, capsys) -> None:
    run, m = fake_run
    cache = json.loads((run / "run.json").read_text())["config"]["cache_dir"]
    grid = {"none": (0,), "noise": (10.0,)}
    first = rb.robustness_grid(run, [1], grid, limit=12, progress=False)
    stores = [d for d in (Path(cache) / "robustness").iterdir()
              if json.loads((d / "meta.json").read_text())["key"]["kind"] == "noise"]
    assert len(stores) == 1
    chunk = next((stores[0] / "chunks").glob("*.pixels.npy"))
    chunk.write_bytes(b"garbage")
    again = rb.robustness_grid(run, [1], grid, limit=12, progress=False)
    assert "is damaged" in capsys.readouterr().err
    assert again == first == rb.robustness_grid(run, [1], grid, limit=12, progress=False, use_cache=False)
    assert np.load(chunk).shape[:2] == (12, 1)
    with pytest.raises(rb.RobustnessError, match=r"need .* free; nothing was built. Choices: --no-cache"):
        rb.check_level_budget(Path(cache) / "robustness", [make_spec(
            "robustness", {"huge": 1}, 10**9, {"pixels": Field("uint8", (1, 3, 224, 224))})])


def test_summary_monotone_verdict_follows_severity_not_row_order() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(200), np.zeros(200)].astype(int)
    noise = rng.normal(size=400)
    by_level = {100: noise + 2.0 * y, 70: noise + 1.0 * y, 50: noise + 0.3 * y}
    order = (50, 100, 70)  # rows not in severity order
    rows = [{"window": 0, "degradation": "none", "level": 0, "auroc": roc_auc_score(y, by_level[100]), "n": 400}]
    rows += [{"window": 0, "degradation": "jpeg", "level": q, "auroc": roc_auc_score(y, by_level[q]), "n": 400}
             for q in order]
    scores = [by_level[100]] + [by_level[q] for q in order]
    s = next(r for r in grid_files.summarize(rows, y, scores, n_replicates=200) if r["degradation"] == "jpeg")
    assert s["monotone"] is True and s["strict_monotone"] is True and s["falls"] is True and s["max_rise"] < 0
    assert s["total_drop"] == pytest.approx(rows[0]["auroc"] - rows[1]["auroc"])
    assert s["worst_level"] == 50
    with pytest.raises(ValueError, match="one score vector per row"):
        grid_files.summarize(rows, y, scores[:2])


def test_scoring_follows_the_runs_precision_and_layout(capsys) -> None:
    from detectors import create_detector

    doc = {"config": {"eval": {"precision": "auto"}},
           "caches": {"runtime": {"eval_precision": "bf16-mixed", "channels_last": True}}}
    assert rb.run_runtime(doc) == ("bf16-mixed", True)
    assert rb.run_runtime(doc, "32-true") == ("32-true", True)
    assert rb.run_runtime({"config": {"eval": {"precision": "auto"}}}) == ("32-true", False)
    assert "not recorded resolved" in capsys.readouterr().err
    with pytest.raises(rb.RobustnessError, match="unknown precision 'fp8'"):
        rb.run_runtime(doc, "fp8")
    det = create_detector("smallcnn_tune", seed=0).eval()
    x = np.random.default_rng(0).integers(0, 256, (6, 1, 3, 64, 64), dtype=np.uint8)
    fp32 = rb.score_inputs(det, x, 4)
    with torch.no_grad():  # the engine's normalisation: (x - 255 mean) / (255 std)
        ref = torch.sigmoid(det((torch.from_numpy(x[:, 0]).float() - 127.5) / 63.75)).double().numpy()
    np.testing.assert_allclose(fp32, ref, atol=1e-6)
    bf16 = rb.score_inputs(det, x, 4, "bf16-mixed", channels_last=True)
    assert bf16.shape == (6,) and np.abs(bf16 - fp32).max() < 0.05


@pytest.mark.slow
def test_default_detector_auroc_falls_monotonically_with_jpeg_and_blur(tmp_path, cache_dir) -> None:
    """On a real default-preset run: AUROC falls with JPEG quality and blur, within noise."""
    import pandas as pd

    from leaderboard.report import write_leaderboard
    from protocols.config import resolve_config
    from protocols.engine import run_experiment

    cfg = resolve_config("default", overrides=[{"runs_dir": str(tmp_path), "cache_dir": str(cache_dir),
                                                "experiment": "default"}])
    run_dir = run_experiment(cfg, progress=False)
    grid = sd.parse_grid(["jpeg", "blur", "mandatory"])
    result = rb.score_grid(run_dir, grid=grid, progress=False)
    rb.write_outputs(run_dir, result.rows, grid, None, result)

    summary = {(int(r["window"]), r["degradation"]): r for r in csv.DictReader((run_dir / "robustness_summary.csv").open())}
    windows = sorted({k for k, _ in summary})
    assert len(windows) >= 5
    # Every window: no rise beyond the tolerance that the paired bootstrap vouches for ("within noise", the
    # table's `monotone`), and blur costs a significant drop. Not `strict_monotone`: from σ = 1 on the default
    # detector is at chance (AUROC 0.50-0.53) and the paired test flags 0.02 wobbles there as rises.
    for k in windows:
        for kind in ("jpeg", "blur"):
            assert summary[(k, kind)]["monotone"] == "True", (k, kind, summary[(k, kind)])
        assert summary[(k, "blur")]["falls"] == "True", (k, summary[(k, "blur")])
    rows = list(csv.DictReader((run_dir / "robustness.csv").open()))

    def mean(kind: str, level: float) -> float:
        return float(np.mean([float(r["auroc"]) for r in rows if r["degradation"] == kind and float(r["level"]) == level]))

    jpeg = [mean("jpeg", q) for q in (100, 90, 80, 70, 60, 50)]
    blur = [mean("blur", s) for s in (0, 1, 2, 3)]
    assert np.diff(jpeg).max() <= 0.01 and jpeg[0] - jpeg[-1] > 0.01, jpeg  # mean over windows
    # σ ≥ 1 is at chance level (above): the mean over windows may wobble there by a few thousandths
    assert np.diff(blur).max() <= 0.01 and blur[0] - blur[-1] > 0.2, blur
    meta = json.loads((run_dir / "robustness.json").read_text())
    assert meta["mandatory_vs_recorded"] and all(v["agree"] for v in meta["mandatory_vs_recorded"].values())

    write_leaderboard([run_dir], tmp_path / "lb", echo=False, n_replicates=50)
    table = pd.read_csv(tmp_path / "lb" / "leaderboard_robustness.csv")
    assert (table.loc[table["degradation"].isin(["jpeg", "blur"]), "monotone_windows"] == len(windows)).all()
    assert "robustness grid: default" in (tmp_path / "lb" / "leaderboard.html").read_text()


def test_grid_on_an_aigenbench_run_reads_images_through_the_image_store(tmp_path, capsys) -> None:
    """A run on a release-format dataset (images are Arrow rows, `hf-row:` references, not files): the grid reads
    them through the image store, and its mandatory cell reproduces the run's recorded AUROC."""
    from helpers import write_release_dataset

    from protocols.cli import main

    write_release_dataset(tmp_path / "release", train_fakes_per_generator=1, eval_fakes_per_generator=1)
    run = tmp_path / "runs" / "agb"
    assert main(["run", "--preset", "smoke", "--dataset", f"aigenbench:{tmp_path / 'release'}", "--detector",
                 "smallcnn_tune", "--cache-dir", str(tmp_path / "cache"), "--runs-dir", str(tmp_path / "runs"),
                 "--experiment", "agb", "--no-progress", "--no-leaderboard", "--set",
                 "benchmark.generators_per_window=36", "--set", "threads=1"]) == 0
    assert main(["robustness", str(run), "--degradation", "jpeg=90", "--degradation", "mandatory", "--no-progress",
                 "--threads", "1"]) == 0
    rows = list(csv.DictReader((run / "robustness.csv").open()))
    assert [(r["degradation"], r["n"]) for r in rows] == [("none", "72"), ("jpeg", "72"), ("mandatory", "72")]
    check = json.loads((run / "robustness.json").read_text())["mandatory_vs_recorded"]
    assert check["0"]["agree"], check


def test_the_leaderboard_orders_the_kinds_the_benchmark_defines() -> None:
    """The grid's files (leaderboard) order and explain exactly the degradations benchmark/ defines."""
    from leaderboard.robustness_view import KINDS

    assert KINDS == tuple(sd.DEFAULT_GRID) and set(grid_files.LEVEL_MEANING) == set(sd.DEFAULT_GRID)
