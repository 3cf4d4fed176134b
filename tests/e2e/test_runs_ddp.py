"""DDP through Lightning on CPU: two gloo processes give the predictions of one process.

Evaluation deals whole batches to ranks and gathers every (position, logit) once, so the same weights give
bit-identical predictions. Training splits every global batch across the ranks and scales the loss so the
averaged gradient is the global-batch mean; only the floating-point order of that reduction differs, hence a
tolerance on the logits after training (measured: max |Δ| 3.7e-9 on logits of magnitude 2e-2).
The probe detector is used because torch has no SyncBatchNorm on CPU (a tuned BatchNorm would see half
batches per rank); the probe's feature cache is off (it is built by one process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, SMALL_RUN_FLAGS


def load(run: Path, k: int) -> dict:
    with np.load(run / f"window_{k}" / "predictions.npz", allow_pickle=False) as z:
        return {key: z[key] for key in z.files}


@pytest.mark.slow
@pytest.mark.parametrize("lr", ["0.01", "1e-30"])  # 1e-30: updates below float32 resolution
def test_two_gloo_processes_give_the_predictions_of_one(tmp_path, cache_dir, small_reference, lr):
    extra = ("--set", f"train.lr={lr}", "--set", "cache.probe_features=false")
    single = small_reference("smallcnn_probe", 0, *extra)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, "-m", "protocols", "run", *SMALL_RUN_FLAGS, "--detector", "smallcnn_probe",
         "--runs-dir", str(tmp_path), "--cache-dir", str(cache_dir), "--experiment", "ddp", *extra,
         "--set", "devices=2", "--set", "accelerator=cpu", "--set", "strategy=ddp"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert info["attempts"][-1]["processes"] == 2
    for k in range(2):
        one, two = load(single, k), load(tmp_path / "ddp", k)
        assert len(two["fused_logits"]) == len(one["fused_logits"]) == 200  # no padded duplicates
        for key in one:
            if key not in ("fused_logits", "fused_scores"):
                assert np.array_equal(one[key], two[key], equal_nan=one[key].dtype.kind == "f"), key  # NaN: undefined
        if lr == "1e-30":  # weights unchanged by training (lr 0 is refused): evaluation alone must be bit-identical
            assert np.array_equal(one["fused_logits"], two["fused_logits"])
        else:
            np.testing.assert_allclose(two["fused_logits"], one["fused_logits"], rtol=1e-5, atol=1e-7)
