"""AI-GenBench predictions files: mapping to genshift arrays gives the reference's own per-window AUROC."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from leaderboard import continual as C
from leaderboard.groups import named_group
from leaderboard.metrics import roc_auc
from leaderboard.reference import GROUP_MAP, load_reference_window
from leaderboard.runs import read_run

REF = Path("/tmp/ref/training_and_evaluation")
NAMES = ["", "A", "B", "C", "D", "E", "F"]


def _write_reference_file(path: Path, timeline, seed: int, unpaired: int = 0) -> None:
    """A file in the exact layout of DeepFakePredictionsDump.merge_multiprocess_predictions (binary task)."""
    rng = np.random.default_rng(seed)
    n_gen = len(NAMES) - 1
    fake_gen = np.repeat(np.arange(1, n_gen + 1), 30)
    n_img = 2 * fake_gen.size + unpaired
    gen = np.r_[fake_gen, np.zeros(fake_gen.size + unpaired, dtype=np.int64)]
    ids = rng.permutation(np.arange(1000, 1000 + n_img))  # dataset "ID" values, not positions
    perm = rng.permutation(n_img)
    gen, ids = gen[perm], ids[perm]
    n_crops = rng.choice([1, 1, 1, 2, 3], size=n_img)  # some images scored on several crops
    crop_ids = np.repeat(ids, n_crops)
    crop_gen = np.repeat(gen, n_crops)
    base = np.where(crop_gen == 0, 0.0, 0.3 + 0.1 * crop_gen)
    crop_scores = (1 / (1 + np.exp(-(rng.normal(size=crop_ids.size) + base)))).astype(np.float32)
    crop_scores[::17] = np.float32(0.5)  # ties
    real_pos = np.flatnonzero(gen == 0)
    splitting = dict(zip(ids[real_pos[: fake_gen.size]].tolist(), rng.permutation(fake_gen).tolist(), strict=True))
    pairing = np.array([splitting.get(int(i), -1) for i in ids])
    fused = np.array([crop_scores[crop_ids == i].mean() for i in ids], dtype=np.float32)
    arrays = {
        "fused_scores": fused, "fused_labels": (gen != 0).astype(np.int64), "fused_generator_ids": gen,
        "fused_identifiers": ids, "fused_losses": np.zeros(n_img, np.float32),
        "crop_scores": crop_scores, "crop_labels": (crop_gen != 0).astype(np.int64),
        "crop_generator_ids": crop_gen, "crop_identifiers": crop_ids,
        "crop_losses": np.zeros(crop_ids.size, np.float32), "crop_to_image_index": np.repeat(np.arange(n_img), n_crops),
        "identifier": ids, "generator_id_to_name": np.array(NAMES), "pairing": pairing,
    }
    if len({len(w) for w in timeline}) == 1:
        arrays["windows_timeline"] = np.array(timeline)
    else:  # what np.array(ragged list) gave with numpy < 1.24: an object array of lists
        tl = np.empty(len(timeline), dtype=object)
        tl[:] = [list(w) for w in timeline]
        arrays["windows_timeline"] = tl
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def _reference_evaluate():
    if not REF.is_dir():
        return None
    sys.path.insert(0, str(REF))
    try:
        from evaluation_scripts.evaluate_predictions_utils import evaluate_predictions
    except Exception:  # noqa: BLE001 - use the hand-derived check below instead
        return None
    finally:
        sys.path.remove(str(REF))
    return evaluate_predictions


TIMELINE = [["A", "B"], ["C", "D"], ["E", "F"]]


def test_per_window_auroc_equals_reference_evaluation(tmp_path):
    evaluate = _reference_evaluate()
    if evaluate is None:
        pytest.skip("reference evaluation functions do not import here")
    for k in range(3):
        path = tmp_path / f"window_{k}" / "predictions_validate_all.npz"
        _write_reference_file(path, TIMELINE, seed=k)
        arrays = load_reference_window(path, k)
        for ref_group, ours in GROUP_MAP.items():
            if ref_group == "past" and k == 0:
                continue  # empty in the reference (it would crash)
            expected = evaluate(path, ref_group, k, threshold=0.5, use_pairing=True)["roc_auc"]
            name = ours
            if k == 2 and ours == "next":
                name = "current"  # the reference scores the last window on itself
            if k == 2 and ours == "seen_next":
                name = "seen"  # the reference's growing_whole falls back to growing at the last window
            g = named_group(arrays, name, k)
            got = roc_auc(arrays["fused_labels"][g.mask], arrays["fused_scores"][g.mask])
            assert got == pytest.approx(expected, abs=1e-12), (k, ref_group)


def test_hand_derived_fusion_and_pairing(tmp_path):
    path = tmp_path / "window_0" / "predictions_validate_all.npz"
    _write_reference_file(path, TIMELINE, seed=4, unpaired=3)
    raw = np.load(path)
    arrays = load_reference_window(path, 0)
    assert int(arrays["n_unpaired_reals_dropped"]) == 3
    keep = ~((raw["fused_generator_ids"] == 0) & (raw["pairing"] == -1))
    np.testing.assert_array_equal(arrays["fused_scores"], raw["fused_scores"][keep])  # crop mean per image
    np.testing.assert_array_equal(arrays["pairing"], raw["pairing"][keep])


def test_unequal_windows_object_timeline_and_leaderboard_reads_experiment(tmp_path):
    exp = tmp_path / "experiments_data" / "experiment_7"
    timeline = [["A", "B", "C"], ["D", "E"], ["F"]]
    for k in range(3):
        _write_reference_file(exp / f"window_{k}" / "predictions_validate_all.npz", timeline, seed=10 + k)
    with pytest.raises(ValueError):
        np.load(exp / "window_0" / "predictions_validate_all.npz")["windows_timeline"]  # needs pickle
    rec = read_run(exp)
    assert rec.kind == "aigenbench-reference" and rec.n_windows_done == 3
    assert rec.windows[0]["windows_timeline"].tolist() == [["A", "B", "C"], ["D", "E", ""], ["F", "", ""]]
    assert np.isfinite(C.matrix_from_table(rec.evaluation.table)).all()
