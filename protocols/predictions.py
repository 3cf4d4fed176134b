"""Writing a window's predictions.npz (DESIGN §5) and summarising it for metrics.json."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.atomic import atomic_path
from benchmark.eval_plan import EvalPlan
from protocols import faults
from protocols.config import PROTOCOL_VERSION

# 2: + cl_strategy, cl_strategy_params (the continual-learning strategy); readers accept version-1 files (naive).
SCHEMA_VERSION = 2


def _padded_windows(windows: Sequence[Sequence[str]]) -> np.ndarray:
    width = max(len(w) for w in windows)
    return np.array([list(w) + [""] * (width - len(w)) for w in windows], dtype=str)


def write_predictions(
    path: Path,
    logits: np.ndarray,
    plan: EvalPlan,
    gen_names: Sequence[str],
    windows: Sequence[Sequence[str]],
    window: int,
    manifest_checksum: str,
    benchmark_type: str,
    cl_strategy: Mapping[str, Any] | None = None,
) -> None:
    """Scores are P(fake) = sigmoid(logit) computed in float32; the file appears atomically.

    ``cl_strategy``: the resolved strategy ``{"name": ..., **params}`` (None: naive fine-tuning)."""
    cl = dict(cl_strategy or {"name": "naive"})
    logits = np.asarray(logits, dtype=np.float32)
    scores = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
    arrays = {
        "fused_scores": scores,
        "fused_logits": logits,
        "fused_labels": plan.labels.astype(np.int64),
        "fused_generator_ids": plan.generator_ids.astype(np.int64),
        "fused_identifiers": plan.sample_ids.astype(np.int64),
        "pairing": plan.pairing.astype(np.int64),
        "generator_id_to_name": np.array(list(gen_names), dtype=str),
        "windows_timeline": _padded_windows(windows),
        "window": np.int64(window),
        "schema_version": np.int64(SCHEMA_VERSION),
        "manifest_checksum": np.array(manifest_checksum),
        "protocol_version": np.array(PROTOCOL_VERSION),
        "benchmark_type": np.array(benchmark_type),
        "cl_strategy": np.array(str(cl.pop("name"))),
        "cl_strategy_params": np.array(json.dumps(cl, sort_keys=True)),
    }
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        faults.die_if("predictions_tmp", window)


def window_summary(path: Path, groups: Sequence[str] = ("next", "current", "seen", "past", "all")) -> dict:
    """AUROC (and a reason when undefined) of the main groups for this window's predictions."""
    from leaderboard.continual import load_window_npz, window_table

    arrays = load_window_npz(path)
    table = window_table(arrays, int(arrays["window"]))
    auroc = table[(table["metric"] == "auroc") & table["group"].isin(list(groups))].set_index("group")
    return {
        "auroc": {g: float(auroc.loc[g, "value"]) for g in groups},
        "undefined": {g: auroc.loc[g, "reason"] for g in groups if auroc.loc[g, "reason"] is not None},
    }
