"""Honest model selection and test datasets: the validation split carved from training (rule, seeds, never the
eval split), selection policies that read validation only, thresholds chosen on validation, test datasets scored
per window and resumed identically, the leaderboard's test tables, and map PNGs from `genshift predict`."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import (
    ROOT,  # noqa: E402
    SMALL_RUN_FLAGS,
)
from PIL import Image

from benchmark.manifest import Sample
from benchmark.validation_split import carve_validation, parse_validation
from leaderboard.metrics import threshold_by_rule, threshold_by_rule_from_counts
from protocols.cli import main

# ---------------------------------------------------------------- the carved split (no training)


def _train_samples() -> tuple[list[Sample], list[list[int]]]:
    """Three windows of two generators each, 9 to 14 images per (class, generator) group, plus a group of one."""
    samples, i = [], 0
    gens = [["g0", "g1"], ["g2", "g3"], ["g4", "g5"]]
    windows: list[list[int]] = [[], [], []]
    for k, pair in enumerate(gens):
        for j, g in enumerate(pair):
            for label, name in ((1, g), (0, "")):
                for _ in range(9 + 2 * k + j + label):
                    samples.append(Sample(i, "train", label, name, f"train/{name or 'real'}/{i}.png", 8, 8))
                    windows[k].append(i)
                    i += 1
    samples.append(Sample(i, "train", 1, "lonely", f"train/lonely/{i}.png", 8, 8))  # a group of one image
    windows[2].append(i)
    return samples, windows


def _cumulative(windows):
    return [sorted(i for w in windows[: k + 1] for i in w) for k in range(len(windows))]


def test_fraction_holds_out_round_half_up_per_class_and_generator() -> None:
    samples, windows = _train_samples()
    by_id = {s.id: s for s in samples}
    sets = _cumulative(windows)
    new_sets, split = carve_validation(samples, sets, 0.25, seed=7)
    held = set(split.held_out)
    groups: dict[tuple, list[int]] = {}
    for k, w in enumerate(windows):
        for i in w:
            groups.setdefault((k, by_id[i].label, by_id[i].generator), []).append(i)
    for (k, label, gen), ids in groups.items():
        n = len(ids)
        want = 0 if n < 2 else min(n - 1, max(1, int(np.floor(0.25 * n + 0.5))))
        assert len(held & set(ids)) == want, (k, label, gen, n)
    # held-out images leave every training set; step k validates on what its training set listed
    for k in range(3):
        assert not held & set(new_sets[k])
        assert set(split.per_step[k]) == held & set(sets[k])
        assert set(new_sets[k]) | set(split.per_step[k]) == set(sets[k])
    assert set(split.per_step[0]) < set(split.per_step[1]) < set(split.per_step[2])  # cumulative: nested
    # continual: the windows' validation sets are disjoint
    _, cont = carve_validation(samples, windows, 0.25, seed=7)
    assert not set(cont.per_step[0]) & set(cont.per_step[1]) and not set(cont.per_step[1]) & set(cont.per_step[2])
    assert cont.held_out == split.held_out  # the choice depends on the group, not on the benchmark type
    # seeded: same seed, same ids; another seed, other ids
    assert carve_validation(samples, sets, 0.25, seed=7)[1].held_out == split.held_out
    assert carve_validation(samples, sets, 0.25, seed=8)[1].held_out != split.held_out


def test_count_is_per_step_by_largest_remainders_and_refuses_too_many() -> None:
    samples, windows = _train_samples()
    _, split = carve_validation(samples, windows, 10, seed=0)
    assert [len(v) for v in split.per_step] == [10, 10, 10]
    with pytest.raises(ValueError, match="can hold out at most"):
        carve_validation(samples, windows, 1000, seed=0)
    for bad in (-1, 1.5, "x", float("nan")):
        with pytest.raises(ValueError, match="train.validation"):
            parse_validation(bad)
    assert parse_validation(0) == 0 and parse_validation(0.1) == 0.1 and parse_validation(5.0) == 5


def test_threshold_from_counts_equals_threshold_on_the_expanded_pixels() -> None:
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(5, 300))
        s = rng.integers(0, 256, n)
        y = (rng.random(n) < s / 255 * 0.8 + 0.1).astype(int)
        if y.min() == y.max():
            continue
        pos, neg = np.bincount(s[y == 1], minlength=256), np.bincount(s[y == 0], minlength=256)
        for rule in ("eer", "youden", "fpr:0.05", "fpr:0.2", "0.5"):
            want = threshold_by_rule(y, s / 255, rule)
            assert threshold_by_rule_from_counts(np.arange(256) / 255, pos, neg, rule) == want
    assert np.isnan(threshold_by_rule_from_counts([0.0, 1.0], [0, 0], [3, 4], "eer"))  # one class of pixel


# ---------------------------------------------------------------- runs


def _folder_dataset(root: Path, overlap_image: Path) -> Path:
    """A folder of random images (no timeline) with one image copied from the benchmark (an overlap)."""
    rng = np.random.default_rng(3)
    for cls in ("real", "OtherGen"):
        d = root / "eval" / cls
        d.mkdir(parents=True)
        for i in range(6):
            arr = rng.integers(0, 256, (72, 80, 3), dtype=np.uint8)
            if cls == "OtherGen":
                arr[::2] //= 3  # a visible artifact
            Image.fromarray(arr).save(d / f"{i}.png")
    shutil.copy(overlap_image, root / "eval" / "real" / "copy.png")
    return root


def _run_args(runs: Path, cache_dir: Path, layer: Path, exp: str = "sel", *extra: str) -> list[str]:
    return [*SMALL_RUN_FLAGS, "--detector", "smallcnn_tune", "--runs-dir", str(runs), "--cache-dir", str(cache_dir),
            "--experiment", exp, "--config", str(layer), *extra]


@pytest.fixture(scope="module")
def selection_setup(tmp_path_factory, cache_dir):
    """A two-window smoke run: validation 25 %, 2 epochs, `best`, two test datasets (the synthetic benchmark with
    another seed and a folder of images); the run config layer and paths."""
    from benchmark.sources import load_source

    base = tmp_path_factory.mktemp("selection")
    bench = load_source("synthetic:smoke", cache_dir, progress=False)
    train_image = bench.abspath(bench.split("train")[0].path)
    folder = _folder_dataset(base / "photos", Path(train_image))
    layer = base / "layer.yaml"
    layer.write_text(yaml.safe_dump({
        "train": {"validation": 0.25, "epochs": 2, "selection": "best"},
        "test_datasets": [{"name": "seed1", "dataset": "synthetic:smoke@1"},
                          {"name": "photos", "dataset": f"folder:{folder}", "degradation": {"profile": "fixed"}}],
    }))
    runs = base / "runs"
    assert main(["run", *_run_args(runs, cache_dir, layer)]) == 0
    return {"run": runs / "sel", "layer": layer, "base": base, "folder": folder}


def test_validation_split_is_recorded_and_never_the_eval_split(selection_setup, cache_dir) -> None:
    run = selection_setup["run"]
    info = json.loads((run / "run.json").read_text())
    v = info["validation"]
    assert v["origin"] == "carved" and v["split"] == "train" and v["spec"] == 0.25 and v["ids_file"]
    rows = list(csv.DictReader((run / "validation_ids.csv").open()))
    assert rows and {r["split"] for r in rows} == {"train"} and len(rows) == v["held_out"]
    held = {int(r["id"]) for r in rows}
    for k in range(2):
        z = np.load(run / f"window_{k}" / "predictions.npz")
        val_ids = set(z["validation_identifiers"].tolist())
        assert val_ids <= held and len(val_ids) == v["per_step"][k]
        assert str(z["validation_split"]) == "train"  # eval rows are of split `eval`: never these
        assert set(np.unique(z["validation_labels"]).tolist()) == {0, 1}
        assert str(z["selection_policy"]) == "best" and z["selection_epoch"] in (1.0, 2.0)
        assert str(z["threshold_source"]) == "validation" and str(z["threshold_rule"]) == "eer"
        metrics = json.loads((run / f"window_{k}" / "metrics.json").read_text())
        sel = metrics["selection"]
        assert sel["policy"] == "best" and len(sel["evaluations"]) == 2  # one point per epoch
        best = max(sel["evaluations"], key=lambda e: e["auroc"])
        assert sel["chosen"]["val_auroc"] == pytest.approx(best["auroc"])
        assert metrics["threshold"]["value"] == pytest.approx(float(z["threshold"]))
        # the threshold is the eer rule on the validation rows, scored with the chosen weights
        assert float(z["threshold"]) == pytest.approx(threshold_by_rule(z["validation_labels"],
                                                                        z["validation_scores"], "eer"))
    # the held-out images are not trained on: each window trains on its set without validation minus its own
    from protocols.config import resolve_config
    from protocols.engine import prepare_benchmark

    plain = prepare_benchmark(resolve_config("smoke", "smallcnn_tune", overrides=[
        {"benchmark": {"generators_per_window": 12}, "cache_dir": str(cache_dir)}]), progress=False)
    for k in range(2):
        train = json.loads((run / f"window_{k}" / "train_metrics.json").read_text())
        assert train["train"]["n_images"] == len(plain.train_sets[k]) - v["per_step"][k]
        assert set(plain.train_sets[k]) >= {int(r["id"]) for r in rows if str(k) in r["validates_steps"].split()}
    # validation metrics reach the loggers
    header = next(iter((run / "logs").rglob("metrics.csv"))).read_text().splitlines()[0]
    assert "val/auroc" in header


def test_selection_never_reads_the_eval_labels(selection_setup, cache_dir, monkeypatch) -> None:
    """Corrupting the eval labels (each image gets another position's label and generator) changes no selected
    checkpoint: the same epochs, the same threshold, the same weights."""
    import protocols.run_setup as run_setup
    from benchmark.eval_plan import EvalPlan

    real = run_setup.make_eval_plan

    def corrupted(*a, **kw) -> EvalPlan:
        p = real(*a, **kw)
        perm = np.random.default_rng(0).permutation(len(p.labels))
        return EvalPlan(p.sample_ids, p.labels[perm], p.generator_ids[perm], p.pairing[perm])

    monkeypatch.setattr(run_setup, "make_eval_plan", corrupted)
    runs = selection_setup["base"] / "corrupted"
    layer = selection_setup["base"] / "no-tests.yaml"
    layer.write_text(yaml.safe_dump({"train": {"validation": 0.25, "epochs": 2, "selection": "best"}}))
    assert main(["run", *_run_args(runs, cache_dir, layer)]) == 0
    ref = selection_setup["run"]
    for k in range(2):
        a = json.loads((ref / f"window_{k}" / "metrics.json").read_text())
        b = json.loads((runs / "sel" / f"window_{k}" / "metrics.json").read_text())
        assert a["selection"] == b["selection"] and a["threshold"] == b["threshold"]
        za, zb = (np.load(r / f"window_{k}" / "predictions.npz") for r in (ref, runs / "sel"))
        assert np.array_equal(za["validation_scores"], zb["validation_scores"])  # the same weights
        assert np.array_equal(za["fused_identifiers"], zb["fused_identifiers"])
        assert np.mean(za["fused_labels"] != zb["fused_labels"]) > 0.3  # the eval labels were corrupted
        assert (ref / f"window_{k}" / "checkpoint.safetensors").read_bytes() == \
            (runs / "sel" / f"window_{k}" / "checkpoint.safetensors").read_bytes()


def test_test_datasets_are_scored_per_window_with_the_validation_threshold(selection_setup) -> None:
    run = selection_setup["run"]
    info = json.loads((run / "run.json").read_text())
    tests = {t["name"]: t for t in info["test_datasets"]}
    assert tests["photos"]["overlap_with_benchmark"].get("train") == 1  # reported, not refused
    assert tests["photos"]["degradation"]["profile"] == "fixed" and tests["seed1"]["degradation"]["profile"] == "aigenbench-v1"
    for k in range(2):
        z0 = np.load(run / f"window_{k}" / "predictions.npz")
        for name, n in (("seed1", 200), ("photos", 13)):
            z = np.load(run / f"window_{k}" / f"test_{name}" / "predictions.npz")
            assert len(z["fused_scores"]) == n and str(z["kind"]) == "test" and int(z["window"]) == k
            assert np.all(np.isfinite(z["fused_scores"]))
            assert float(z["threshold"]) == float(z0["threshold"])  # carried from the window's validation
        metrics = json.loads((run / f"window_{k}" / "metrics.json").read_text())
        assert set(metrics["test_datasets"]) == {"seed1", "photos"}


def test_leaderboard_shows_test_tables_and_the_selection(selection_setup, tmp_path) -> None:
    out = tmp_path / "lb"
    assert main(["leaderboard", str(selection_setup["run"]), "--out", str(out)]) == 0
    md = (out / "leaderboard.md").read_text()
    assert "## Test datasets" in md and "### seed1" in md and "### photos" in md
    assert "best: epochs" in md  # the row says which policy chose its weights
    rows = list(csv.DictReader((out / "test_datasets.csv").open()))
    assert {r["test_dataset"] for r in rows} >= {"seed1", "photos"}


def test_killed_and_resumed_run_writes_identical_test_predictions(selection_setup, cache_dir, tmp_path) -> None:
    """SIGKILL during window 1's second epoch (the selection state rides in the train state), then after its first
    test dataset is written (before `done`); the resumed run's files equal the uninterrupted run's byte for byte."""
    runs = tmp_path / "runs"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "protocols", "run", *_run_args(runs, cache_dir, selection_setup["layer"])]
    for die in ("train_batch:1:13", "test_dataset:1:1"):
        r = subprocess.run(cmd, cwd=ROOT, env=env | {"GENSHIFT_DIE_AT": die}, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == -9, r.stderr[-2000:]
    env.pop("GENSHIFT_DIE_AT", None)
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    ref = selection_setup["run"]
    for k in range(2):
        for rel in ("predictions.npz", "test_seed1/predictions.npz", "test_photos/predictions.npz"):
            assert (runs / "sel" / f"window_{k}" / rel).read_bytes() == (ref / f"window_{k}" / rel).read_bytes(), rel
        a, b = (json.loads((d / f"window_{k}" / "metrics.json").read_text())["selection"] for d in (ref, runs / "sel"))
        assert a == b


def _first_eval_image(cache_dir) -> Path:
    from benchmark.sources import load_source

    m = load_source("synthetic:smoke", cache_dir, progress=False)
    return Path(m.abspath(m.split("eval")[0].path))


def test_predict_writes_maps_with_the_validation_pixel_threshold(cache_dir, tmp_path, capsys) -> None:
    runs = tmp_path / "runs"
    assert main(["run", *SMALL_RUN_FLAGS, "--detector", "smallseg_tune", "--runs-dir", str(runs), "--cache-dir",
                 str(cache_dir), "--experiment", "seg", "--set", "train.validation=0.25",
                 "--set", "benchmark.type=continual"]) == 0
    w = runs / "seg" / "window_1"
    loc = np.load(w / "localization.npz")
    t = float(loc["pixel_threshold"])
    assert str(loc["pixel_threshold_source"]) == "validation" and 0 <= t <= 1
    summary = json.loads((w / "metrics.json").read_text())["localization"]
    assert summary["pixel_threshold"] == pytest.approx(t) and 0 <= summary["pixel_f1_at_validation_threshold"] <= 1
    out = tmp_path / "pred"
    first = _first_eval_image(cache_dir)
    folder = _folder_dataset(tmp_path / "photos", first)
    assert main(["predict", "--checkpoint", str(w), "--dataset", f"folder:{folder}", "--out", str(out),
                 "--no-progress"]) == 0
    assert "chosen on the run's validation maps" in capsys.readouterr().out
    csv_rows = list(csv.DictReader((out / "predictions.csv").open()))
    masks = sorted((out / "masks").rglob("*.png"))
    maps = sorted((out / "maps").rglob("*.png"))
    assert len(masks) == len(maps) == len(csv_rows) == 13
    src = Image.open(first)
    mask = np.asarray(Image.open(out / "masks" / "eval" / "real" / "copy.png"))
    prob = np.asarray(Image.open(out / "maps" / "eval" / "real" / "copy.png"))
    assert mask.shape == prob.shape == (src.height, src.width)  # at the image's own resolution
    assert set(np.unique(mask).tolist()) <= {0, 255}
    # the mask is the map above the validation threshold (up to the map's rounding to 1/255)
    assert np.mean((mask == 255) != (prob / 255.0 > t)) < 0.02


# ---------------------------------------------------------------- the policies, step by step (no training)


class _Weights:
    """A stand-in detector whose only weight is set by the test before each evaluation point."""

    def __init__(self):
        self.w = torch.zeros(2)
        self.count = torch.zeros((), dtype=torch.int64)

    def trainable_state_dict(self) -> dict:
        return {"w": self.w.clone(), "count": self.count.clone()}

    def load_trainable_state_dict(self, state: dict) -> None:
        self.w, self.count = state["w"].clone(), state["count"].clone()


class _Trainer:
    is_global_zero, loggers, should_stop = True, (), False


def _follow(how: str, aurocs: list[float], one_class: bool = False, **tc) -> tuple[dict, _Weights, _Trainer]:
    """Run a policy over evaluation points (one per epoch of 2 batches) whose validation AUROC is `aurocs[i]`;
    the weights at point i are [i, -i]."""
    from protocols.selection import PolicyCallback

    det, trainer = _Weights(), _Trainer()
    current = {"auroc": 0.5}
    y = np.array([0] * 4 + [1] * 4)

    def score():  # reals at 0.1 .. 0.4, fakes all at 0.05 + 0.4 a: AUROC a for a in {0, 0.25, 0.5, 0.75, 1}
        if one_class:
            return np.linspace(0.1, 0.9, 4), np.zeros(4, np.int64)
        return np.r_[0.1, 0.2, 0.3, 0.4, np.full(4, 0.05 + 0.4 * current["auroc"])], y

    points = [2 * (i + 1) for i in range(len(aurocs))]
    cb = PolicyCallback(how, det, score, points, 2, 0, points[-1], tc, 0, 0)
    for i, a in enumerate(aurocs):
        if trainer.should_stop:
            break
        det.w, det.count = torch.tensor([float(i), -float(i)]), torch.tensor(i)
        current["auroc"] = a
        cb.on_train_batch_end(trainer, None, None, None, 2 * i)  # batch 2i+1 (not a point)
        cb.on_train_batch_end(trainer, None, None, None, 2 * i + 1)
    return cb.finish(), det, trainer


def test_best_keeps_the_highest_validation_auroc_ties_to_the_later_point() -> None:
    record, det, _ = _follow("best", [0.25, 0.75, 0.5, 0.75, 0.0])
    assert [e["auroc"] for e in record["evaluations"]] == [0.25, 0.75, 0.5, 0.75, 0.0]
    assert record["chosen"] == {"step": 8, "epoch": 4.0, "val_auroc": 0.75}
    assert det.w.tolist() == [3.0, -3.0] and "reason" not in record


def test_best_on_one_class_keeps_the_last_weights_and_says_why() -> None:
    record, det, _ = _follow("best", [0.5, 0.5, 0.5], one_class=True)
    assert det.w.tolist() == [2.0, -2.0] and record["chosen"]["step"] == 6
    assert "undefined" in record["reason"] and "last weights are kept" in record["reason"]


def test_early_stopping_stops_after_patience_points_without_improvement() -> None:
    record, det, trainer = _follow("early_stopping", [0.5, 0.75, 0.75, 0.5, 1.0, 1.0], patience=2)
    # 0.75 at epoch 2 is the bar; epochs 3 and 4 do not beat it: stop after epoch 4, keep epoch 3's weights
    # (the best point, ties to the later)
    assert trainer.should_stop and record["stopped_early_at_step"] == 8 and len(record["evaluations"]) == 4
    assert record["chosen"]["step"] == 6 and det.w.tolist() == [2.0, -2.0]
    record, _, trainer = _follow("early_stopping", [0.25, 0.5, 0.5, 0.75], patience=1, min_delta=0.3)
    assert record["stopped_early_at_step"] == 4  # 0.5 does not beat 0.25 + 0.3


def test_average_is_the_mean_of_the_last_points_weights() -> None:
    record, det, _ = _follow("average", [0.5, 0.5, 0.5, 0.5, 0.5], average_last=3)
    assert record["averaged_steps"] == [6, 8, 10] and record["averaged_epochs"] == [3.0, 4.0, 5.0]
    assert det.w.tolist() == pytest.approx([3.0, -3.0])  # mean of points 2, 3, 4
    assert int(det.count) == 4  # integer buffers: the last point's
    assert record["chosen"]["val_auroc"] is None


def test_data_check_flags_a_val_image_duplicated_in_eval_or_train(tmp_path) -> None:
    """The validation split never shares bytes with the eval split unnoticed: error against eval, warning against
    train (a source with its own val split; carved validation images are train images, checked as such)."""
    import datetime as dt

    from benchmark.datacheck import check_source
    from benchmark.manifest import Manifest

    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (80, 80, 3), dtype=np.uint8) for _ in range(4)]
    layout = [("train", 0, "", 0), ("train", 1, "G", 1), ("eval", 0, "", 2), ("eval", 1, "G", 3),
              ("val", 0, "", 2), ("val", 1, "G", 1)]  # val 0 = eval 0's bytes, val 1 = train 1's bytes
    samples, ids = [], {}
    for split, label, gen, a in layout:
        i = ids[split] = ids.get(split, -1) + 1
        rel = f"{split}/{i}.png"
        (tmp_path / split).mkdir(exist_ok=True)
        Image.fromarray(arrays[a]).save(tmp_path / rel)
        samples.append(Sample(i, split, label, gen, rel, 80, 80))
    m = Manifest("dups", tmp_path, samples, {"G": dt.date(2020, 1, 1)})
    report = check_source(m, None, min_side=32, workers=1, progress=False)
    found = {(p.kind, p.severity, p.split, p.id) for p in report.problems}
    assert ("duplicate", "error", "val", 0) in found and not report.ok
    assert ("duplicate_train_val", "warning", "val", 1) in found


def test_a_policy_without_validation_is_refused_before_anything_is_made(tmp_path, cache_dir, capsys) -> None:
    runs = tmp_path / "runs"
    assert main(["run", *SMALL_RUN_FLAGS, "--runs-dir", str(runs), "--cache-dir", str(cache_dir),
                 "--set", "train.selection=early_stopping"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genshift: error: train.selection=early_stopping needs a validation split")
    assert "--set train.validation=0.1" in err and not runs.exists()


def test_test_every_last_scores_only_the_last_window() -> None:
    from protocols.test_datasets import due, parse_test_datasets

    assert [due({"test_every": "window"}, k, 3) for k in range(3)] == [True, True, True]
    assert [due({"test_every": "last"}, k, 3) for k in range(3)] == [False, False, True]
    with pytest.raises(ValueError, match="used twice"):
        parse_test_datasets([{"name": "a", "dataset": "synthetic:smoke"}, {"name": "a", "dataset": "synthetic:smoke"}])
    with pytest.raises(ValueError, match="unknown key"):
        parse_test_datasets([{"name": "a", "dataset": "synthetic:smoke", "split": "eval"}])
