"""The predictions format's owner: round trip, the checks of the write, the version check and the migration of
older files (a schema-1 file as the leaderboard's fabricated runs wrote it still reads)."""

from __future__ import annotations

import numpy as np
import pytest

from common import predictions_file as PF
from leaderboard.bench import fabricate_eval_set, fabricate_run
from leaderboard.continual import load_window_npz
from leaderboard.runs import read_run


def _arrays(n: int = 8) -> dict[str, np.ndarray]:
    es = fabricate_eval_set(n, 2, per_window=2, seed=3)
    scores = np.linspace(0.1, 0.9, n).astype(np.float32)
    return es | {"fused_scores": scores, "fused_logits": np.log(scores / (1 - scores)).astype(np.float32),
                 "window": np.int64(0), "manifest_checksum": np.array("m"), "protocol_version": np.array("genshift-1"),
                 "benchmark_type": np.array("cumulative")}


def test_round_trip_keeps_every_array_and_stamps_the_version(tmp_path):
    arrays = _arrays()
    path = PF.write(tmp_path / PF.FILE_NAME, arrays)
    back = PF.read(path)
    assert set(back) == set(arrays) | {PF.VERSION_KEY} and int(back[PF.VERSION_KEY]) == PF.SCHEMA_VERSION
    for key, value in arrays.items():
        np.testing.assert_array_equal(back[key], value)
        assert back[key].dtype == value.dtype
    assert sorted(PF.keys(path)) == sorted(back)


@pytest.mark.parametrize(("change", "message"), [
    (lambda a: a.pop("pairing"), r"lack the keys \['pairing'\]"),
    (lambda a: a.update(fused_labels=a["fused_labels"].astype(np.float32)), "'fused_labels' must be an array of kind 'i'"),
    (lambda a: a.update(window=np.array([0])), "'window' must be a scalar"),
    (lambda a: a.update(pairing=a["pairing"][:-1]), "'pairing' has shape"),
    (lambda a: a.update(schema_version=np.int64(2)), "set by the format's owner"),
    (lambda a: a.update(note=np.array([{"x": 1}], dtype=object)), "holds Python objects"),
])
def test_write_refuses_wrong_keys_and_dtypes_before_any_byte(tmp_path, change, message):
    arrays = _arrays()
    change(arrays)
    with pytest.raises(PF.PredictionsFormatError, match=message):
        PF.write(tmp_path / PF.FILE_NAME, arrays)
    assert list(tmp_path.iterdir()) == []


def test_a_newer_version_is_refused_in_one_line_naming_file_and_versions(tmp_path):
    path = tmp_path / PF.FILE_NAME
    np.savez(path, **_arrays(), schema_version=np.int64(99))
    with pytest.raises(ValueError) as err:
        PF.read(path)
    text = str(err.value)
    assert "\n" not in text and str(path) in text and "99" in text and f"({PF.SCHEMA_VERSION})" in text
    with pytest.raises(ValueError, match="schema_version 99 is newer"):
        load_window_npz(path)  # the leaderboard's window reader goes through the owner


def test_a_schema_1_file_as_fabricated_runs_wrote_it_reads_and_migrates(tmp_path):
    """The file leaderboard/bench.py wrote before it went through the owner: np.savez, schema_version 1, no
    strategy; it is read in the current shape (naive strategy filled in) and a run of them still ranks."""
    es = fabricate_eval_set(40, 2, per_window=2, seed=0)
    run = fabricate_run(tmp_path / "run", es)
    for k in range(2):
        path = run / f"window_{k}" / "predictions.npz"
        old = {key: value for key, value in np.load(path).items() if key != "schema_version"}
        np.savez(path, **old, schema_version=np.int64(1))  # byte-for-byte the old writer's keys
    back = PF.read(run / "window_0" / "predictions.npz")
    assert int(back["schema_version"]) == PF.SCHEMA_VERSION
    assert str(back["cl_strategy"]) == "naive" and str(back["cl_strategy_params"]) == "{}"
    assert read_run(run).evaluation.auroc_matrix.shape == (2, 2)


def test_migration_runs_every_step_and_leaves_current_files_alone():
    assert sorted(PF.MIGRATIONS) == list(range(1, PF.SCHEMA_VERSION))
    current = {"schema_version": np.int64(PF.SCHEMA_VERSION)}
    assert PF.migrate(current, PF.SCHEMA_VERSION) == current
    v3 = PF.migrate({"schema_version": np.int64(3), "cl_strategy": np.array("ewc")}, 3)
    assert str(v3["cl_strategy"]) == "ewc" and "cl_strategy_params" not in v3  # v3 files record their own


def test_fabricated_runs_write_the_current_version_through_the_owner(tmp_path):
    run = fabricate_run(tmp_path / "run", fabricate_eval_set(40, 2, per_window=2), initial=True)
    for sub in ("window_0", "window_1", "window_init"):
        with np.load(run / sub / "predictions.npz") as z:
            assert int(z["schema_version"]) == PF.SCHEMA_VERSION
