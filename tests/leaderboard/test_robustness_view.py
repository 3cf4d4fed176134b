"""Robustness in `genshift leaderboard` and `genshift inspect` (files only), and the monotone-within-noise check."""

from __future__ import annotations

import argparse
import base64
import json

import numpy as np
import pandas as pd
import pytest

from leaderboard import cli
from leaderboard import robustness_view as RV
from leaderboard.bench import fabricate_eval_set, fabricate_run
from leaderboard.metrics import roc_auc
from leaderboard.report import LeaderboardError, write_leaderboard

PNG = b"\x89PNG\r\n\x1a\n" + b"fake-grid-bytes"
# window -> AUROC per (degradation, level); jpeg levels written out of order on purpose
CELLS = {
    0: {("none", 0): 0.80, ("jpeg", 50): 0.60, ("jpeg", 100): 0.78, ("jpeg", 90): 0.70, ("blur", 0): 0.80,
        ("blur", 2): 0.65, ("mandatory", 1): 0.70},
    1: {("none", 0): 0.90, ("jpeg", 50): 0.72, ("jpeg", 100): 0.88, ("jpeg", 90): 0.85, ("blur", 0): 0.90,
        ("blur", 2): 0.55, ("mandatory", 1): 0.75},
}


def _write_robustness(run, cells=CELLS, n=1200, checksum=None, monotone=None) -> None:
    rows = [{"window": k, "degradation": d, "level": lv, "auroc": a, "n": n}
            for k, c in cells.items() for (d, lv), a in c.items()]
    pd.DataFrame(rows).to_csv(run / "robustness.csv", index=False)
    monotone = monotone or {(0, "jpeg"): (True, True), (1, "jpeg"): (True, False), (0, "blur"): (True, True),
                            (1, "blur"): (False, False)}  # (monotone, strict_monotone)
    summary = [{"window": k, "degradation": d, "monotone": monotone.get((k, d), ("", ""))[0],
                "strict_monotone": monotone.get((k, d), ("", ""))[1]}
               for k in cells for d in ("none", "jpeg", "blur", "mandatory")]
    pd.DataFrame(summary).to_csv(run / "robustness_summary.csv", index=False)
    info = json.loads((run / "run.json").read_text())
    (run / "robustness.json").write_text(json.dumps({"manifest_checksum": checksum or info["manifest_checksum"]}))
    (run / "robustness.png").write_bytes(PNG)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust-lb")
    es = fabricate_eval_set(600, 3, per_window=2)
    robust = fabricate_run(root / "robust", es, skill=1.5, seed=2, detector="RN50_tune")
    plain = fabricate_run(root / "plain", es, skill=0.5, seed=1, detector="RN50_probe")
    _write_robustness(robust)
    return robust, plain


def _parse(argv):
    parser = argparse.ArgumentParser(prog="genshift")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_weighted_auroc_matches_repetition_and_bootstrap_is_paired() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) + 0.3 * y, 1)  # many ties
    assert RV.weighted_auroc(y, s, np.ones((1, 300)))[0] == pytest.approx(roc_auc(y, s), abs=1e-12)
    w = rng.integers(0, 4, 300)
    w[0], w[1] = 1, 1
    y[0], y[1] = 0, 1
    assert RV.weighted_auroc(y, s, w[None])[0] == pytest.approx(roc_auc(np.repeat(y, w), np.repeat(s, w)), abs=1e-12)
    boot = RV.bootstrap_aurocs(y, [s, s], n_replicates=50, seed=3)
    assert boot.shape == (50, 2) and np.array_equal(boot[:, 0], boot[:, 1])  # same draws for every level
    with pytest.raises(ValueError, match="0 fakes"):
        RV.bootstrap_aurocs(np.zeros(5), [s[:5]])


def test_monotone_check_separates_real_rises_from_noise() -> None:
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(300), np.zeros(300)].astype(int)
    base = rng.normal(size=600)
    falling = [base + sep * y for sep in (2.0, 1.5, 1.0, 0.5)]  # separation shrinks level after level
    ok = RV.monotone_check(y, falling, n_replicates=200)
    assert ok["monotone"] and ok["strict_monotone"] and ok["falls"] and ok["max_rise"] < 0 and ok["max_rise_low"] < 0
    assert 0 < ok["auroc_se"] < 0.05
    assert ok["total_drop"] == pytest.approx(roc_auc(y, falling[0]) - roc_auc(y, falling[-1]))
    bad = RV.monotone_check(y, falling[::-1], n_replicates=200)
    assert not bad["monotone"] and not bad["strict_monotone"] and not bad["falls"] and bad["max_rise_low"] > 0.01
    jitter = [base + 1.0 * y, base + 1.0 * y + rng.normal(0, 0.02, 600)]  # a tiny rise or fall: noise
    flat = RV.monotone_check(y, jitter, n_replicates=200)
    assert flat["monotone"] and not flat["falls"]
    # a small but real rise (same images, slightly better separation): strict flags it, the tolerance does not
    small = RV.monotone_check(y, [base + 1.0 * y, base + 1.03 * y], n_replicates=200)
    assert small["monotone"] and not small["strict_monotone"] and 0 < small["max_rise_low"] <= RV.MONOTONE_TOLERANCE
    assert not RV.monotone_check(y, [base + 1.0 * y, base + 1.03 * y], n_replicates=200, tolerance=0.0)["monotone"]
    assert RV.severity_order("jpeg", [50, 100, 90]) == [100, 90, 50]
    assert RV.severity_order("blur", [3, 0, 1]) == [0, 1, 3]


def test_leaderboard_writes_robustness_table_md_and_html(runs, tmp_path) -> None:
    robust, plain = runs
    out = tmp_path / "lb"
    args = _parse(["leaderboard", str(robust), str(plain), "--out", str(out), "--replicates", "20", "--quiet"])
    assert args.handler(args) == 0
    t = pd.read_csv(out / RV.TABLE_FILE)
    assert set(t["experiment"]) == {"robust"}  # the run without robustness files has no rows
    assert [(d, lv) for d, lv in zip(t["degradation"], t["level"], strict=True)] == [
        ("none", 0), ("jpeg", 100), ("jpeg", 90), ("jpeg", 50), ("blur", 0), ("blur", 2), ("mandatory", 1)]
    row = t.set_index(["degradation", "level"]).loc[("jpeg", 50)]
    assert row["auroc_mean"] == pytest.approx((0.60 + 0.72) / 2)
    assert row["auroc_worst"] == pytest.approx(0.60) and row["worst_window"] == 0
    assert row["clean_mean"] == pytest.approx(0.85)
    assert row["relative_drop"] == pytest.approx((0.85 - 0.66) / 0.85)
    assert row["windows"] == 2 and row["window_list"] == "0,1" and row["n"] == 1200
    assert (row["monotone_windows"], row["strict_monotone_windows"], row["graded_windows"]) == (2, 1, 2)
    blur2 = t.set_index(["degradation", "level"]).loc[("blur", 2)]
    assert blur2["worst_window"] == 1 and (blur2["monotone_windows"], blur2["graded_windows"]) == (1, 2)
    clean = t.set_index(["degradation", "level"]).loc[("none", 0)]
    assert clean["relative_drop"] == 0 and np.isnan(clean["monotone_windows"])
    md = (out / "leaderboard.md").read_text()
    assert "## Robustness" in md and "| robust | jpeg | 50 | 2 | 1,200 | 0.6600 | 0.6000 (w0) | 22.4 % | 2/2 (strict 1) |" in md
    assert "![robustness grid: robust](robustness_robust.png)" in md
    assert (out / "robustness_robust.png").read_bytes() == PNG
    page = (out / "leaderboard.html").read_text()
    assert "<table id='robustness-table'>" in page and base64.b64encode(PNG).decode() in page
    assert page.index("id='robustness'") < page.index("<h2>Plots</h2>")


def test_leaderboard_in_the_run_dir_keeps_the_runs_own_files(runs) -> None:
    robust, _ = runs
    before = (robust / "robustness.csv").read_text()
    write_leaderboard([robust], robust, echo=False, n_replicates=10)
    assert (robust / "robustness.csv").read_text() == before and (robust / RV.TABLE_FILE).is_file()
    assert "](robustness.png)" in (robust / "leaderboard.md").read_text()


def test_leaderboard_refuses_bad_robustness_files(runs, tmp_path) -> None:
    _, plain = runs
    es = fabricate_eval_set(600, 3, per_window=2)
    other = fabricate_run(tmp_path / "other", es, skill=1.0, seed=4)
    _write_robustness(other, checksum="made-elsewhere")
    with pytest.raises(LeaderboardError, match="made on manifest made-elsewhere"):
        write_leaderboard([other, plain], tmp_path / "o1", echo=False, n_replicates=10)
    pd.DataFrame({"window": [0], "level": [0], "auroc": [0.5]}).to_csv(other / "robustness.csv", index=False)
    with pytest.raises(LeaderboardError, match=r"robustness.csv: not a robustness.csv, columns \['degradation', 'n'\]"):
        write_leaderboard([other], tmp_path / "o2", echo=False, n_replicates=10)


def test_inspect_prints_the_windows_robustness_rows(runs, tmp_path, capsys) -> None:
    robust, plain = runs
    args = _parse(["inspect", str(robust / "window_1" / "predictions.npz"), "--top", "2"])
    assert args.handler(args) == 0
    text = capsys.readouterr().out
    part = text[text.index("robustness of window 1"):]
    lines = [ln.split() for ln in part.splitlines()[2:9]]
    assert lines[0] == ["none", "-", "0.9000", "0.0000", "0.0000"]
    assert lines[3] == ["jpeg", "50", "0.7200", "-0.1800", "0.2000"]  # 0.18 / 0.90
    assert lines[5] == ["blur", "2", "0.5500", "-0.3500", "0.3889"]
    assert "robustness summary of window 1" in part
    args = _parse(["inspect", str(plain / "window_2" / "predictions.npz"), "--robustness", str(robust / "robustness.csv")])
    assert args.handler(args) == 0
    assert "has no rows for window 2 (scored windows: [0, 1])" in capsys.readouterr().out
    args = _parse(["inspect", str(plain / "window_0" / "predictions.npz")])
    assert args.handler(args) == 0
    assert "robustness: none for this run" in capsys.readouterr().out
    args = _parse(["inspect", str(plain / "window_0" / "predictions.npz"), "--robustness", str(tmp_path / "no.csv")])
    with pytest.raises(LeaderboardError, match="no.csv: robustness csv not found"):
        args.handler(args)


def test_robustness_view_imports_no_torch_or_lightning() -> None:
    import subprocess
    import sys

    code = ("import sys, leaderboard.robustness_view, leaderboard.report, leaderboard.inspect; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'pytorch_lightning', "
            "'protocols')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
