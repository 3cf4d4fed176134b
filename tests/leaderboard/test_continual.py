"""Groups and continual metrics on hand-made runs whose AUROC matrix R is known exactly."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from common.predictions_file import SCHEMA_VERSION
from leaderboard import continual as C
from leaderboard import groups as G

# Timeline of the tiny run: window 0 = {A, B}, window 1 = {C}, window 2 = {D}; ids A=1 .. D=4.
NAMES = np.array(["", "A", "B", "C", "D"])
TIMELINE = np.array([["A", "B"], ["C", ""], ["D", ""]])
WINDOW_OF_GEN = {1: 0, 2: 0, 3: 1, 4: 2}
N_REAL = 8  # reals paired to each generator; one fake per generator, scored 0.5

# R[k, j]: multiples of 1/16. R[0, 1] > R[1, 1] checks that forgetting ignores k < j.
R_TRUE = np.array(
    [
        [0.75, 0.9375, 0.25],
        [0.625, 0.875, 0.375],
        [0.5, 0.8125, 1.0],
    ]
)


def _real_scores(auroc: float) -> np.ndarray:
    """N_REAL real scores such that one fake at 0.5 has exactly this AUROC (ties count 1/2)."""
    halves = round(auroc * 2 * N_REAL)  # AUROC = (below + tied/2) / N_REAL
    below, tied = divmod(halves, 2)
    return np.array([0.2] * below + [0.5] * tied + [0.8] * (N_REAL - below - tied))


def make_window(k: int, r_row: np.ndarray, drop_fakes_of: tuple[int, ...] = (), seed: int = 0) -> dict:
    """Arrays of the model after window k: generator g's cell has AUROC r_row[window of g]."""
    scores, gens, pairing = [], [], []
    for g, w in WINDOW_OF_GEN.items():
        if g not in drop_fakes_of:
            scores.append([0.5])
            gens.append([g])
            pairing.append([-1])
        scores.append(_real_scores(r_row[w]))
        gens.append([0] * N_REAL)
        pairing.append([g] * N_REAL)
    s, gen, pair = (np.concatenate(x) for x in (scores, gens, pairing))
    perm = np.random.default_rng(seed + k).permutation(len(s))  # order must not matter
    s, gen, pair = s[perm].astype(np.float32), gen[perm].astype(np.int64), pair[perm].astype(np.int64)
    return {
        "fused_scores": s,
        "fused_logits": np.log(s / (1 - s)).astype(np.float32),
        "fused_labels": (gen != 0).astype(np.int64),
        "fused_generator_ids": gen,
        "fused_identifiers": np.arange(len(s))[perm],
        "pairing": pair,
        "generator_id_to_name": NAMES,
        "windows_timeline": TIMELINE,
        "window": np.array(k),
        "schema_version": np.array(1),
    }


def make_run(r: np.ndarray = R_TRUE, **kw) -> list[dict]:
    return [make_window(k, r[k], **kw) for k in range(r.shape[0])]


def _value(table: pd.DataFrame, k: int, group: str, metric: str = "auroc") -> tuple[float, object]:
    row = table[(table.window == k) & (table.group == group) & (table.metric == metric)]
    assert len(row) == 1, (k, group, metric)
    return float(row.value.iloc[0]), row.reason.iloc[0]


# ----------------------------------------------------------------------------------------- groups


def test_window_generator_ids_and_padding():
    assert [w.tolist() for w in G.window_generator_ids(NAMES, TIMELINE)] == [[1, 2], [3], [4]]


@pytest.mark.parametrize(
    "names, timeline, match",
    [
        (NAMES, np.array([["A", "Z"], ["C", ""], ["D", ""]]), "absent from generator_id_to_name"),
        (NAMES, np.array([["A", "B"], ["A", ""], ["D", ""]]), "appears in windows 0 and 1"),
        (NAMES, np.array([["A", "B"], ["", ""], ["D", ""]]), "row 1 has no generator"),
        (np.array(["real", "A"]), np.array([["A"]]), "must be ''"),
        (NAMES, np.array(["A", "B"]), "2-D unicode"),
    ],
)
def test_bad_timeline_raises(names, timeline, match):
    with pytest.raises(ValueError, match=match):
        G.window_generator_ids(names, timeline)


def test_group_mask_matches_reference_loop():
    rng = np.random.default_rng(7)
    n, n_gen = 3000, 12
    gen = rng.integers(0, n_gen + 1, n)
    pairing = np.where(gen == 0, rng.integers(1, n_gen + 1, n), -1)
    for _ in range(20):
        ids = rng.choice(np.arange(1, n_gen + 1), size=int(rng.integers(1, n_gen)), replace=False)
        expected = np.zeros(n, dtype=bool)
        for i in range(n):  # the reference's per-sample loop
            expected[i] = (gen[i] in ids) or (gen[i] == 0 and pairing[i] in ids)
        np.testing.assert_array_equal(G.group_mask(gen, pairing, ids), expected)
    with pytest.raises(ValueError, match="must not contain 0"):
        G.group_mask(gen, pairing, np.array([0, 1]))


def test_named_group_windows_table():
    k_of = {k: {n: G.named_group_windows(n, k, 3) for n in G.NAMED_GROUPS} for k in range(3)}
    assert k_of[0]["next"] == ([1], None)
    assert k_of[0]["past"][0] is None and "no past window" in k_of[0]["past"][1]
    assert k_of[1]["past"] == ([0], None)
    assert k_of[1]["seen"] == ([0, 1], None)
    assert k_of[1]["seen_next"] == ([0, 1, 2], None)
    assert k_of[1]["future"] == ([2], None)
    assert k_of[1]["current"] == ([1], None)
    for name in ("next", "seen_next", "future"):
        members, reason = k_of[2][name]
        assert members is None and "last window" in reason
    assert k_of[2]["all"] == ([0, 1, 2], None)
    with pytest.raises(ValueError, match="out of range"):
        G.named_group_windows("seen", 3, 3)
    with pytest.raises(ValueError, match="unknown group"):
        G.named_group_windows("nxt", 0, 3)


def test_named_group_masks_on_arrays():
    arrays = make_window(0, R_TRUE[0])
    gen, pair = arrays["fused_generator_ids"], arrays["pairing"]
    seen = G.named_group(arrays, "seen", 1)
    assert seen.generator_ids.tolist() == [1, 2, 3]
    np.testing.assert_array_equal(
        seen.mask, np.isin(gen, [1, 2, 3]) | ((gen == 0) & np.isin(pair, [1, 2, 3]))
    )
    assert seen.mask.sum() == 3 * (1 + N_REAL)
    nxt = G.named_group(arrays, "next", 2)
    assert nxt.mask is None and "no next window" in nxt.reason
    gen_c = G.generator_group(arrays, "C")
    assert gen_c.name == "generator:C" and gen_c.mask.sum() == 1 + N_REAL
    with pytest.raises(ValueError, match="unknown generator"):
        G.generator_group(arrays, "Z")
    names = [g.name for g in G.all_groups(arrays, 0)]
    assert names == [
        *G.NAMED_GROUPS,
        "window:0",
        "window:1",
        "window:2",
        "generator:A",
        "generator:B",
        "generator:C",
        "generator:D",
    ]


@pytest.mark.parametrize(
    "key, change, match",
    [
        ("fused_labels", lambda a: np.where(np.arange(len(a)) == 0, 1 - a, a), "fused_labels disagree"),
        ("pairing", lambda a: np.full_like(a, -1), "real sample\\(s\\) lack a valid paired generator"),
        ("pairing", lambda a: np.full_like(a, 2), "fake sample\\(s\\) have pairing != -1"),
        ("fused_scores", lambda a: a[:-1], "fused_scores has shape"),
        ("fused_generator_ids", lambda a: np.where(a == 4, 9, a), "outside 0..4"),
        ("fused_scores", lambda a: np.where(np.arange(len(a)) == 3, np.nan, a), "finite probabilities"),
        ("fused_scores", lambda a: a * 3, "finite probabilities"),
    ],
)
def test_validate_eval_arrays_rejects_inconsistent_arrays(key, change, match):
    arrays = make_window(0, R_TRUE[0])
    arrays[key] = change(arrays[key])
    with pytest.raises(ValueError, match=match):
        G.validate_eval_arrays(arrays, "some/file.npz")


def test_fakes_outside_timeline_rejected():
    arrays = make_window(0, R_TRUE[0])
    arrays["windows_timeline"] = np.array([["A", "B"], ["C", ""]])
    with pytest.raises(ValueError, match="generator ids \\[4\\] belong to no window"):
        G.validate_eval_arrays(arrays, "x")


# ------------------------------------------------------------------------------------- continual


def test_cells_have_chosen_auroc():
    # the construction itself, checked with scikit-learn
    for k in range(3):
        arrays = make_window(k, R_TRUE[k])
        for j in range(3):
            m = G.window_group(arrays, j).mask
            assert roc_auc_score(arrays["fused_labels"][m], arrays["fused_scores"][m]) == R_TRUE[k, j]


def test_auroc_matrix_and_aggregates_exact():
    result = C.evaluate_run(make_run())
    np.testing.assert_array_equal(result.auroc_matrix, R_TRUE)
    summary = result.summary.set_index("aggregate")
    assert list(summary.index) == list(C.AGGREGATES)
    assert summary.value["next"] == (0.9375 + 0.375) / 2  # R[0,1], R[1,2]; the last window excluded
    assert summary.value["next_reference_variant_last_on_itself"] == pytest.approx((0.9375 + 0.375 + 1.0) / 3)
    assert summary.value["bwt"] == ((0.5 - 0.75) + (0.8125 - 0.875)) / 2
    # j=0: max(R[0,0], R[1,0]) - R[2,0] = 0.25; j=1: max over k>=1 only: R[1,1] - R[2,1] = 0.0625
    assert summary.value["forgetting"] == (0.25 + 0.0625) / 2
    # every fake scores 0.5, so a pooled cell's AUROC is the mean over its generators (8 reals each)
    seen = [(2 * 0.75) / 2, (2 * 0.625 + 0.875) / 3, (2 * 0.5 + 0.8125 + 1.0) / 4]
    assert summary.value["seen_average"] == pytest.approx(np.mean(seen), abs=1e-15)
    future = [(0.9375 + 0.25) / 2, 0.375]
    assert summary.value["future_average"] == pytest.approx(np.mean(future), abs=1e-15)
    assert summary.drop("fwt").reason.isna().all()
    assert math.isnan(summary.value["fwt"]) and "window_init/predictions.npz" in summary.reason["fwt"]


def test_next_excludes_last_window_functions():
    r = np.array([[0.9, 0.1], [0.2, 1.0]])
    assert C.next_score(r) == 0.1
    assert C.next_reference_variant_last_on_itself(r) == pytest.approx((0.1 + 1.0) / 2)
    assert math.isnan(C.next_score(np.array([[0.7]])))
    with pytest.raises(ValueError, match="K x K"):
        C.next_score(np.ones((2, 3)))


def test_forgetting_and_bwt_against_loops():
    rng = np.random.default_rng(11)
    for n in range(2, 8):
        r = rng.random((n, n))
        bwt = np.mean([r[n - 1, j] - r[j, j] for j in range(n - 1)])
        fgt = np.mean([max(r[k, j] for k in range(j, n - 1)) - r[n - 1, j] for j in range(n - 1)])
        assert C.backward_transfer(r) == pytest.approx(bwt, abs=1e-15)
        assert C.forgetting(r) == pytest.approx(fgt, abs=1e-15)


def test_tidy_table_per_window_groups():
    table = C.run_table(make_run())
    assert list(table.columns) == list(C.TABLE_COLUMNS)
    assert table.duplicated(["window", "group", "metric"]).sum() == 0
    for k in range(3):
        assert _value(table, k, "current") == (R_TRUE[k, k], None)
        for g, w in WINDOW_OF_GEN.items():
            assert _value(table, k, f"generator:{NAMES[g]}")[0] == R_TRUE[k, w]
        assert _value(table, k, "all")[0] == pytest.approx(
            (2 * R_TRUE[k, 0] + R_TRUE[k, 1] + R_TRUE[k, 2]) / 4
        )
    assert _value(table, 0, "next") == (R_TRUE[0, 1], None)
    assert _value(table, 1, "seen_next")[0] == _value(table, 1, "all")[0]
    assert _value(table, 2, "past")[0] == pytest.approx((2 * 0.5 + 0.8125) / 3)
    for k, group, text in [
        (2, "next", "no next window"),
        (0, "past", "no past window"),
        (2, "seen_next", "no window k+1"),
        (2, "future", "no future window"),
    ]:
        for metric in ("auroc", "eer", "n"):
            value, reason = _value(table, k, group, metric)
            assert math.isnan(value) and text in reason
    assert _value(table, 1, "window:2", "n") == (1 + N_REAL, None)
    assert _value(table, 1, "window:0", "n_fake") == (2, None)


def test_nan_cells_propagate_with_reason():
    # generator C (window 1) has no eval fakes: column 1 of R is undefined (single class)
    result = C.evaluate_run(make_run(drop_fakes_of=(3,)))
    assert np.isnan(result.auroc_matrix[:, 1]).all()
    assert not np.isnan(np.delete(result.auroc_matrix, 1, axis=1)).any()
    summary = result.summary.set_index("aggregate")
    for name in ("next", "next_reference_variant_last_on_itself", "bwt", "forgetting"):
        assert math.isnan(summary.value[name])
        assert "R[0,1]" in summary.reason[name] or "R[1,1]" in summary.reason[name]
        assert "0 fakes" in summary.reason[name]
    # pooled groups still have fakes of other windows: defined
    assert not math.isnan(summary.value["seen_average"])
    value, reason = _value(result.table, 0, "next")
    assert math.isnan(value) and "0 fakes" in reason


def test_single_window_run():
    run = [make_window(0, np.array([0.75, 0.5, 0.25]))]
    run[0]["windows_timeline"] = np.array([["A", "B", "C", "D"]])
    result = C.evaluate_run(run)
    assert result.auroc_matrix.shape == (1, 1)
    summary = result.summary.set_index("aggregate")
    assert math.isnan(summary.value["next"]) and "at least 2 windows" in summary.reason["next"]
    assert summary.value["next_reference_variant_last_on_itself"] == result.auroc_matrix[0, 0]


def test_incomplete_run_has_table_but_no_aggregates():
    result = C.evaluate_run(make_run()[:2])
    np.testing.assert_array_equal(result.auroc_matrix, R_TRUE[:2])
    assert result.summary.value.isna().all()
    assert result.summary.reason.str.contains("2 of 3 windows").all()


def test_run_consistency_checks():
    run = make_run()
    run[1]["window"] = np.array(5)
    with pytest.raises(ValueError, match="window 1: stored window scalar is 5"):
        C.check_run(run)
    run = make_run()
    run[2]["windows_timeline"] = np.array([["A", "C"], ["B", ""], ["D", ""]])
    with pytest.raises(ValueError, match="window 2: windows_timeline differs"):
        C.check_run(run)
    run = make_run()
    run[1] = make_window(1, R_TRUE[1], drop_fakes_of=(4,))
    with pytest.raises(ValueError, match="window 1: eval set composition"):
        C.check_run(run)
    with pytest.raises(ValueError, match="at least one window"):
        C.check_run([])


# ------------------------------------------------------------------------------------------ npz I/O


def test_load_window_npz_roundtrip(tmp_path):
    arrays = make_window(1, R_TRUE[1])
    path = tmp_path / "predictions.npz"
    np.savez(path, **arrays)
    loaded = C.load_window_npz(path)
    # a schema-1 file comes back in the current shape: its version raised, the strategy it predates filled in
    assert set(loaded) == set(arrays) | {"cl_strategy", "cl_strategy_params"}
    assert int(loaded["schema_version"]) == SCHEMA_VERSION and str(loaded["cl_strategy"]) == "naive"
    for key, value in arrays.items():
        if key != "schema_version":
            np.testing.assert_array_equal(loaded[key], value)
    paths = []
    for k in range(3):
        p = tmp_path / f"w{k}.npz"
        np.savez(p, **make_window(k, R_TRUE[k]))
        paths.append(p)
    np.testing.assert_array_equal(C.evaluate_run(C.load_run(paths)).auroc_matrix, R_TRUE)


def test_load_window_npz_errors(tmp_path):
    arrays = make_window(0, R_TRUE[0])
    missing = tmp_path / "missing_keys.npz"
    np.savez(missing, **{k: v for k, v in arrays.items() if k not in ("pairing", "fused_labels")})
    with pytest.raises(
        ValueError, match=r"missing_keys\.npz: missing required keys \['fused_labels', 'pairing'\]"
    ):
        C.load_window_npz(missing)

    pickled = tmp_path / "object.npz"
    np.savez(pickled, **{**arrays, "generator_id_to_name": np.array(["", "A", "B", "C", "D"], dtype=object)})
    with pytest.raises(
        ValueError, match=r"object\.npz: key 'generator_id_to_name' holds Python objects \(a pickle\)"
    ):
        C.load_window_npz(pickled)

    good = tmp_path / "good.npz"
    np.savez(good, **arrays)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"truncated\.npz"):
        C.load_window_npz(truncated)

    with pytest.raises(FileNotFoundError, match="nope.npz"):
        C.load_window_npz(tmp_path / "nope.npz")

    bad = tmp_path / "bad_labels.npz"
    np.savez(bad, **{**arrays, "fused_labels": np.zeros_like(arrays["fused_labels"])})
    with pytest.raises(ValueError, match=r"bad_labels\.npz: fused_labels disagree"):
        C.load_window_npz(bad)


def test_leaderboard_imports_no_torch_or_lightning():
    code = (
        "import sys, leaderboard.metrics, leaderboard.groups, leaderboard.continual; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'pytorch_lightning')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
