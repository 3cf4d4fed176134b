"""The variant fields: written by one function (protocols.predictions.variant_fields) into run.json and every
npz, read back by leaderboard.variants under the same names."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.eval_plan import EvalPlan
from leaderboard.variants import VARIANT_FIELDS, field_value, run_fields
from protocols.config import resolve_config
from protocols.predictions import (
    SCHEMA_VERSION,
    RunIdentity,
    RunStamp,
    ScoredRows,
    variant_arrays,
    variant_fields,
    write_predictions,
)


def _plan(n: int = 4) -> EvalPlan:
    return EvalPlan(sample_ids=np.arange(n), labels=np.array([0, 1] * (n // 2)),
                    generator_ids=np.array([0, 1] * (n // 2)), pairing=np.array([1, -1] * (n // 2)))


def test_written_fields_are_the_fields_the_leaderboard_reads():
    cfg = resolve_config("smoke", overrides=[{"degradation": {"profile": "fixed+reencode90", "base_seed": 7}}])
    fields = variant_fields(cfg, "c" * 64, "replay:0.5")
    assert tuple(fields) == VARIANT_FIELDS
    assert fields["degradation.profile"] == "fixed+reencode90" and fields["degradation.base_seed"] == 7
    assert fields["benchmark.type"] == "replay:0.5" and fields["manifest_checksum"] == "c" * 64
    # an unset eval.normalize is the pipeline's own; a strategy with parameters is written as text
    assert fields["cl_strategy"] == "naive" and fields["eval.normalize"] == "backbone"
    cfg2 = dict(cfg) | {"cl_strategy": {"name": "ewc", "lambda": 0.4}, "eval": dict(cfg["eval"]) | {
        "pipeline": "reference"}}
    f2 = variant_fields(cfg2, "c" * 64)
    assert f2["cl_strategy"] == "ewc(gamma=1.0, lambda=0.4)" and f2["eval.normalize"] == "clip"  # defaults filled
    arrays = variant_arrays(f2)
    assert arrays["degradation_base_seed"].dtype == np.int64 and str(arrays["eval_pipeline"]) == "reference"
    # The npz wins over run.json's config: what the leaderboard reads is what was written.
    info = {"config": {"degradation": {"profile": "aigenbench-v1"}}}
    assert run_fields(info, arrays) == {k: str(v) for k, v in f2.items()}
    assert field_value("degradation.profile", {"variant": fields} | info) == "fixed+reencode90"


def test_write_predictions_records_fields_and_refuses_contradictions(tmp_path):
    cfg = resolve_config("smoke")
    fields = variant_fields(cfg, "a" * 64, "cumulative")
    def stamp(checksum, rows=None):
        return RunStamp(RunIdentity(checksum, "cumulative", "r", "h"), _plan(), ["", "G"], [["G"]], fields=fields,
                        rows=rows)

    rows = {"fused_source_format": np.array(["jpeg", "png", "png", "webp"]),
            "fused_jpeg_quality": np.array([90, -1, -1, -1])}
    zeros = ScoredRows(np.zeros(4, np.float32))
    write_predictions(tmp_path / "p.npz", stamp("a" * 64, rows), 0, zeros)
    with np.load(tmp_path / "p.npz") as z:
        assert int(z["schema_version"]) == SCHEMA_VERSION and str(z["degradation_profile"]) == "aigenbench-v1"
        assert z["fused_source_format"].tolist() == ["jpeg", "png", "png", "webp"]
    with pytest.raises(ValueError, match="manifest_checksum"):
        write_predictions(tmp_path / "q.npz", stamp("b" * 64), 0, zeros)
    with pytest.raises(ValueError, match="per-row array"):
        write_predictions(tmp_path / "q.npz", stamp("a" * 64, {"fused_jpeg_quality": np.zeros(3)}), 0, zeros)
    assert not (tmp_path / "q.npz").exists()


def test_a_protocol_version_change_is_reported_with_the_fields_that_moved_it(tmp_path):
    from leaderboard.bench import fabricate_eval_set, fabricate_run
    from leaderboard.report import LeaderboardError, write_leaderboard

    es = fabricate_eval_set(200, 2, per_window=2)
    a = fabricate_run(tmp_path / "a", es, seed=1)
    b = fabricate_run(tmp_path / "b", es, seed=2, protocol_version="genshift-2",
                      config={"eval": {"pipeline": "reference"}})
    with pytest.raises(LeaderboardError) as e:
        write_leaderboard([a, b], tmp_path / "out", echo=False, n_replicates=10)
    msg = str(e.value)
    assert "runs differ in protocol_version (evaluation-defining)" in msg
    assert "with the protocol version, runs also differ in eval.pipeline (method-side)" in msg
    assert "reference" in msg and "native" in msg and "detector" not in msg.split("also differ")[1]
