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

# Version history (readers accept every older version):
# 1: the AI-GenBench-compatible keys plus manifest_checksum, protocol_version, benchmark_type.
# 2: run_identity and config_hash (the leaderboard refuses a window of another run); optional video-track keys
#    (segment_*, frame_*, fused_compression, fused_video, ...).
# 3: cl_strategy and cl_strategy_params (the continual-learning strategy; older files are naive fine-tuning).
SCHEMA_VERSION = 3


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
    run_identity: str,
    config_hash: str,
    scores: np.ndarray | None = None,
    extra: dict[str, np.ndarray] | None = None,
    cl_strategy: Mapping[str, Any] | None = None,
) -> None:
    """Scores are P(fake) = sigmoid(logit) computed in float32; the file appears atomically.

    `run_identity` (deterministic, see protocols.engine.run_identity) and `config_hash` tie the file to its run:
    the leaderboard refuses a window whose identity differs from its run.json's. ``scores`` replaces the sigmoid
    when a row's score is fused from several items (a video's segments or frames: `fused_logits` is then
    logit(score)); ``extra`` holds further arrays (segment- or frame-level scores and the rows they belong to,
    per-row compression and video ids), written as given. ``cl_strategy``: the resolved continual-learning
    strategy ``{"name": ..., **params}`` (None: naive fine-tuning).
    """
    cl = dict(cl_strategy or {"name": "naive"})
    logits = np.asarray(logits, dtype=np.float32)
    if scores is None:
        scores = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape != logits.shape or scores.shape != plan.labels.shape:
        raise ValueError(f"predictions: {scores.shape} scores and {logits.shape} logits for {plan.labels.shape} rows")
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
        "run_identity": np.array(run_identity),
        "config_hash": np.array(config_hash),
        "cl_strategy": np.array(str(cl.pop("name"))),
        "cl_strategy_params": np.array(json.dumps(cl, sort_keys=True)),
    }
    clash = sorted(set(extra or {}) & set(arrays))
    if clash:
        raise ValueError(f"predictions: extra arrays {clash} would replace the standard keys")
    arrays.update(extra or {})
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


# ------------------------------------------------------------------ the untrained model (forward transfer)


def write_initial_predictions(
    run_dir: Path,
    logits: np.ndarray,
    plan: EvalPlan,
    gen_names: Sequence[str],
    windows: Sequence[Sequence[str]],
    manifest_checksum: str,
    benchmark_type: str,
    **kwargs,
) -> Path:
    """Write the model's predictions before any training to `window_init/predictions.npz` (window -1).

    The leaderboard's FWT needs them (b_j, `leaderboard.initial`); call once, after the model is built and
    before window 0 trains, with the eval split's logits. Same keys and atomic write as a window's file.
    """
    from leaderboard.continual import INITIAL_WINDOW
    from leaderboard.initial import initial_path

    path = initial_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_predictions(path, logits, plan, gen_names, windows, INITIAL_WINDOW, manifest_checksum, benchmark_type,
                      **kwargs)
    return path
