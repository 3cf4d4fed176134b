"""Leaderboard files over several fabricated runs, refusal of incomparable runs, `inspect`, CLI handlers."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest

from leaderboard import cli
from leaderboard import inspect as I
from leaderboard.bench import fabricate_eval_set, fabricate_run
from leaderboard.report import LeaderboardError, write_leaderboard


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    es = fabricate_eval_set(1200, 3, per_window=2)
    made = [
        fabricate_run(root / "weak", es, skill=0.3, seed=1, detector="RN50_probe"),
        fabricate_run(root / "strong", es, skill=1.5, seed=2, detector="RN50_tune"),
        fabricate_run(root / "partial", es, skill=1.0, seed=3, detector="tiny_tune", n_done=2),
    ]
    return root, es, made


def _parse(argv):
    parser = argparse.ArgumentParser(prog="genshift")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_leaderboard_files(runs, tmp_path):
    root, _, made = runs
    out = tmp_path / "lb"
    args = _parse(["leaderboard", *map(str, made), "--out", str(out), "--replicates", "200", "--quiet"])
    assert args.handler(args) == 0
    csv = pd.read_csv(out / "leaderboard.csv")
    assert csv["experiment"].tolist() == ["strong", "weak", "partial"]  # sorted by NEXT, undefined last
    for col in ("detector", "mode", "seeds", "n_seeds", "next", "next_ci_low", "next_ci_high", "seen_average", "bwt",
                "forgetting", "params", "flops", "next_vs_top", "next_vs_top_ci_low"):
        assert col in csv.columns
    top = csv.iloc[0]
    assert top["next_ci_low"] <= top["next"] <= top["next_ci_high"]
    assert top["next_vs_top"] == 0 and top["next_vs_top_ci_low"] == 0 and top["next_vs_top_ci_high"] == 0
    assert csv.iloc[1]["next_vs_top_ci_high"] < 0  # clearly worse on the same resamples
    assert np.isnan(csv.iloc[2]["next"])
    long = pd.read_csv(out / "windows.csv")
    assert list(long.columns) == ["experiment", "window", "group", "metric", "value"]
    r01 = long.query("experiment == 'strong' and window == 0 and group == 'window:1' and metric == 'auroc'")
    assert len(r01) == 1
    md = (out / "leaderboard.md").read_text()
    assert "| NEXT |" in md and "| strong |" in md.replace("| 1 | strong", "| strong")
    tex = (out / "leaderboard.tex").read_text()
    assert r"\begin{tabular}" in tex and "strong" in tex
    html = (out / "leaderboard.html").read_text()
    assert "<table id='leaderboard'>" in html and html.count("<img") == 1 + 4 * 3
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "next_per_window.png" in pngs and "heatmap_strong.png" in pngs and "generators_partial.png" in pngs
    for p in out.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_refuses_different_manifests_naming_both(runs, tmp_path):
    root, es, made = runs
    other = fabricate_run(tmp_path / "elsewhere", es, manifest_checksum="other-manifest", n_done=1)
    with pytest.raises(LeaderboardError) as e:
        write_leaderboard([made[0], other], tmp_path / "out", echo=False, n_replicates=10)
    msg = str(e.value)
    assert "manifest_checksum" in msg and str(made[0]) in msg and str(other) in msg and "other-manifest" in msg
    assert not (tmp_path / "out" / "leaderboard.md").exists()
    newer = fabricate_run(tmp_path / "newer", es, protocol_version="genshift-2", n_done=1)
    with pytest.raises(LeaderboardError, match="protocol_version"):
        write_leaderboard([made[0], newer], tmp_path / "out", echo=False, n_replicates=10)


def test_inspect_cli_and_dataframe(runs, tmp_path, capsys):
    _, es, made = runs
    path = made[1] / "window_1" / "predictions.npz"
    args = _parse(["inspect", str(path), "--top", "3", "--csv", str(tmp_path / "rows.csv"),
                   "--roc", str(tmp_path / "roc.npz"), "--group", "next"])
    assert args.handler(args) == 0
    text = capsys.readouterr().out
    for part in ("schema:", "fused_scores", "groups:", "generators:", "hardest false negatives",
                 "hardest false positives", "generator:gen00"):
        assert part in text
    rows = pd.read_csv(tmp_path / "rows.csv")
    assert len(rows) == 1200 and set(I.SAMPLE_COLUMNS) <= set(rows.columns)
    df = I.sample_frame(path)
    fn, fp = I.hardest(I.load_predictions(path), 3)
    assert fn["score"].tolist() == sorted(df[df.label == 1]["score"])[:3]
    assert fp["score"].tolist() == sorted(df[df.label == 0]["score"], reverse=True)[:3]
    roc = np.load(tmp_path / "roc.npz")
    from sklearn.metrics import auc, roc_curve

    groups = I.group_frame(I.load_predictions(path), 1).set_index("group")
    assert auc(roc["fpr"], roc["tpr"]) == pytest.approx(groups.loc["next", "auroc"], abs=1e-12)
    arrays = I.load_predictions(path)
    mask = np.isin(arrays["fused_generator_ids"], [5, 6]) | ((arrays["fused_generator_ids"] == 0) & np.isin(arrays["pairing"], [5, 6]))
    fpr, tpr, _ = roc_curve(arrays["fused_labels"][mask], arrays["fused_scores"][mask], drop_intermediate=False)
    np.testing.assert_allclose(roc["fpr"], fpr)
    np.testing.assert_allclose(roc["tpr"], tpr)
    assert groups.loc["next", "n"] == mask.sum()
