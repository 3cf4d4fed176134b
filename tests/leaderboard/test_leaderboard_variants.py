"""Protocol variants (refusal, --group-by, method-side columns), full runs as upper bounds, and FWT from
window_init/predictions.npz."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from leaderboard import continual as C
from leaderboard import variants as V
from leaderboard.bench import fabricate_eval_set, fabricate_run
from leaderboard.initial import initial_path, read_initial
from leaderboard.report import LeaderboardError, write_leaderboard
from leaderboard.runs import read_run


@pytest.fixture(scope="module")
def es():
    return fabricate_eval_set(600, 3, per_window=2)


def _lb(runs, out, **kw):
    return write_leaderboard(runs, out, echo=False, n_replicates=30, **kw)


def test_fields_read_by_config_name_with_defaults(es, tmp_path):
    old = read_run(fabricate_run(tmp_path / "old", es))  # made before any variant field was recorded
    assert old.fields == {
        "manifest_checksum": "fabricated-manifest", "protocol_version": "genshift-1", "eval.split": "eval",
        "degradation.profile": "aigenbench-v1", "degradation.base_seed": "4321", "detector": "fake_probe",
        "benchmark.type": "cumulative", "cl_strategy": "naive", "train.selection": "last",
        "eval.pipeline": "native", "eval.normalize": "backbone"}
    new = read_run(fabricate_run(tmp_path / "new", es, config={
        "degradation": {"profile": "fixed"}, "cl_strategy": {"name": "ewc", "lambda": 100},
        "eval": {"pipeline": "reference", "normalize": None}}))
    assert new.fields["degradation.profile"] == "fixed"
    assert new.fields["cl_strategy"] == "ewc(lambda=100)"
    assert new.fields["eval.normalize"] == "clip"  # null normalize of the reference pipeline
    arrays = dict(new.windows[0]) | {"eval_pipeline": np.array("native")}  # the npz wins over run.json
    assert V.field_value("eval.pipeline", new.info, arrays) == "native"
    assert V.field_value("train.lr", new.info) == V.MISSING
    reference = {"protocol_version": "aigenbench-reference", "benchmark_type": "aigenbench", "config": {},
                 "eval_pipeline": "reference", "eval_normalize": "clip"}  # as leaderboard.runs reads an experiment
    fields = V.run_fields(reference)
    assert (fields["eval.pipeline"], fields["eval.normalize"], fields["benchmark.type"]) == (
        "reference", "clip", "aigenbench")
    assert V.configuration_key(reference, fields, "exp_3") != V.configuration_key(reference, fields, "exp_4")


def test_refuses_differing_profile_then_groups_by_it(es, tmp_path):
    a = fabricate_run(tmp_path / "a", es, seed=1)
    b = fabricate_run(tmp_path / "b", es, seed=2, config={"degradation": {"profile": "fixed"}})
    from protocols.cli import main

    assert main(["leaderboard", str(a), str(b), "--out", str(tmp_path / "refused"), "--quiet"]) == 2
    with pytest.raises(LeaderboardError) as e:
        _lb([a, b], tmp_path / "refused")
    msg = str(e.value)
    assert "degradation.profile" in msg and "aigenbench-v1" in msg and "fixed" in msg and str(b) in msg
    assert "--group-by degradation.profile" in msg
    assert not (tmp_path / "refused" / "leaderboard.csv").exists()
    out = tmp_path / "grouped"
    _lb([a, b], out, group_by=["degradation.profile"])
    csv = pd.read_csv(out / "leaderboard.csv")
    assert sorted(csv["group"]) == ["degradation.profile=aigenbench-v1", "degradation.profile=fixed"]
    assert (csv["rank"] == 1).all()  # ranked within its own table
    md = (out / "leaderboard.md").read_text()
    assert md.count("\n## degradation.profile=") == 2
    html = (out / "leaderboard.html").read_text()
    assert "<table id='leaderboard'>" in html and "<table id='leaderboard-2'>" in html
    assert {"next_per_window_degradation.profile_aigenbench-v1.png",
            "next_per_window_degradation.profile_fixed.png"} <= {p.name for p in out.glob("*.png")}
    with pytest.raises(LeaderboardError, match="no run records"):
        _lb([a, b], out, group_by=["no.such.field"])


def test_method_side_fields_are_columns_of_one_table(es, tmp_path):
    a = fabricate_run(tmp_path / "native", es, seed=1)
    b = fabricate_run(tmp_path / "ref", es, seed=2, config={"eval": {"pipeline": "reference"}})
    out = tmp_path / "lb"
    _lb([a, b], out)
    csv = pd.read_csv(out / "leaderboard.csv")
    assert len(csv) == 2 and set(csv["eval.pipeline"]) == {"native", "reference"}
    assert set(csv["group"]) == {"all"} and set(V.VARIANT_FIELDS) <= set(csv.columns)
    md = (out / "leaderboard.md").read_text()
    assert "| eval.pipeline |" in md and "| eval.normalize |" in md  # they differ: shown as columns
    assert "degradation.profile=aigenbench-v1" in md  # the shared ones are named once


def test_full_run_is_the_upper_bound_with_a_gap_column(es, tmp_path):
    cont = fabricate_run(tmp_path / "cont", es, skill=0.8, seed=1, detector="tiny_tune")
    full = fabricate_run(tmp_path / "full", es, skill=0.8, seed=1, detector="tiny_tune", benchmark_type="full")
    other = fabricate_run(tmp_path / "other", es, skill=0.8, seed=1, detector="else_tune")
    out = tmp_path / "lb"
    _lb([cont, full, other], out)
    csv = pd.read_csv(out / "leaderboard.csv").set_index("experiment")
    full_r = read_run(full)
    assert full_r.is_full and full_r.n_windows_done == 1
    a = full_r.windows[0]
    owner = np.where(a["fused_generator_ids"] == 0, a["pairing"], a["fused_generator_ids"])
    row = [roc_auc_score(a["fused_labels"][np.isin(owner, [2 * j + 1, 2 * j + 2])],
                         a["fused_scores"][np.isin(owner, [2 * j + 1, 2 * j + 2])]) for j in range(3)]
    ub = np.mean(row[1:])
    assert csv.loc["full", "upper_bound_next"] == pytest.approx(ub, abs=1e-12)
    assert np.isnan(csv.loc["full", "rank"]) and csv.loc["full", "windows"] == "1/1 (full)"
    assert csv.loc["cont", "upper_bound"] == "full"
    assert csv.loc["cont", "gap_to_upper_bound"] == pytest.approx(ub - csv.loc["cont", "next"], abs=1e-12)
    assert csv.loc["cont", "gap_to_upper_bound_ci_low"] <= csv.loc["cont", "gap_to_upper_bound"]
    assert np.isnan(csv.loc["other", "gap_to_upper_bound"]) and "no `full` run" in csv.loc["other", "undefined"]
    upper = pd.read_csv(out / "upper_bound.csv").iloc[0]
    for j in range(3):
        assert upper[f"auroc_window_{j}"] == pytest.approx(row[j], abs=1e-12)
    md = (out / "leaderboard.md").read_text()
    assert "### Upper bound" in md and "| full | tiny_tune | 1 |" in md
    assert "| 1 | cont |" in md.replace("| 2 | other", "")  # the full row is not ranked


def test_fwt_from_window_init(es, tmp_path):
    run = fabricate_run(tmp_path / "r", es, skill=1.0, seed=3, initial=True)
    r = read_run(run)
    b = r.evaluation.initial_auroc
    init = read_initial(run)
    owner = np.where(init["fused_generator_ids"] == 0, init["pairing"], init["fused_generator_ids"])
    for j in range(3):
        m = np.isin(owner, [2 * j + 1, 2 * j + 2])
        assert b[j] == pytest.approx(roc_auc_score(init["fused_labels"][m], init["fused_scores"][m]), abs=1e-12)
    rm = r.evaluation.auroc_matrix
    fwt = np.mean([rm[j - 1, j] - b[j] for j in (1, 2)])
    assert r.evaluation.summary.set_index("aggregate").loc["fwt", "value"] == pytest.approx(fwt, abs=1e-12)
    out = tmp_path / "lb"
    _lb([run], out)
    row = pd.read_csv(out / "leaderboard.csv").iloc[0]
    assert row["fwt"] == pytest.approx(fwt, abs=1e-12) and row["fwt_ci_low"] <= fwt <= row["fwt_ci_high"]
    win = pd.read_csv(out / "windows.csv")
    assert (win["window"] == C.INITIAL_WINDOW).any()
    assert C.forward_transfer(np.array([[0.9, 0.6], [0.8, 0.95]]), np.array([0.5, 0.55])) == pytest.approx(0.05)


def test_initial_predictions_writer_round_trip(es, tmp_path):
    from benchmark.eval_plan import EvalPlan
    from protocols.predictions import RunIdentity, RunStamp, ScoredRows, write_initial_predictions

    run = fabricate_run(tmp_path / "r", es, seed=1)
    plan = EvalPlan(es["fused_identifiers"], es["fused_labels"], es["fused_generator_ids"], es["pairing"])
    logits = np.random.default_rng(0).normal(size=len(plan.sample_ids)).astype(np.float32)
    names = es["generator_id_to_name"].tolist()
    windows = [[n for n in row if n] for row in es["windows_timeline"].tolist()]
    stamp = RunStamp(RunIdentity("fabricated-manifest", "cumulative", "fabricated", "fabricated"), plan, names,
                     windows)
    path = write_initial_predictions(run, stamp, ScoredRows(logits))
    assert path == initial_path(run) and int(read_initial(run)["window"]) == C.INITIAL_WINDOW
    fwt = read_run(run).evaluation.summary.set_index("aggregate").loc["fwt"]
    assert not np.isnan(fwt["value"]) and fwt["reason"] is None


def test_fwt_undefined_without_window_init_says_why(es, tmp_path):
    run = fabricate_run(tmp_path / "r", es)
    s = read_run(run).evaluation.summary.set_index("aggregate").loc["fwt"]
    assert np.isnan(s["value"]) and "window_init/predictions.npz does not exist" in s["reason"]
    bad = fabricate_run(tmp_path / "bad", es, initial=True)
    arrays = dict(np.load(initial_path(bad)))
    arrays["window"] = np.int64(0)
    np.savez(initial_path(bad), **arrays)
    with pytest.raises(LeaderboardError, match="expected -1"):
        read_run(bad)
    info = json.loads((run / "run.json").read_text())
    assert V.run_seed(info) == 0
