"""Writing a window's predictions.npz (DESIGN §5) and summarising it for metrics.json."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmark.atomic import atomic_path
from benchmark.eval_plan import EvalPlan
from protocols import faults
from protocols.config import PROTOCOL_VERSION

SCHEMA_VERSION = 3  # 2: run_identity and config_hash (the leaderboard refuses a window of another run); optional
# video-track keys (segment_*, frame_*, fused_compression, fused_video, …). 3: threshold_* (the operating threshold
# chosen on validation), selection_* (the policy that chose the weights), optional validation_* (the window's
# validation rows scored with its final weights); test datasets' files (write_test_predictions).


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
) -> None:
    """Scores are P(fake) = sigmoid(logit) computed in float32; the file appears atomically.

    `run_identity` (deterministic, see protocols.engine.run_identity) and `config_hash` tie the file to its run:
    the leaderboard refuses a window whose identity differs from its run.json's. ``scores`` replaces the sigmoid
    when a row's score is fused from several items (a video's segments or frames: `fused_logits` is then
    logit(score)); ``extra`` holds further arrays (segment- or frame-level scores and the rows they belong to,
    per-row compression and video ids), written as given.
    """
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


# ------------------------------------------------------------------ selection, test datasets


def selection_arrays(record: dict) -> dict[str, np.ndarray]:
    """npz keys naming the policy that chose a window's weights (`protocols.selection`): `selection_policy`,
    `selection_step` and `selection_epoch` of the chosen point (`selection_averaged_epochs`: the points `average`
    averaged) (-1 for LRNet's per-branch choice, whose epochs are
    in train_metrics.json), `selection_val_auroc` (NaN when not evaluated) and `selection_reason` (why `best`
    kept the last weights, else empty)."""
    chosen = record.get("chosen") or {}
    val = chosen.get("val_auroc")
    return {
        "selection_policy": np.array(str(record.get("policy", "last"))),
        "selection_step": np.int64(chosen.get("step", -1)),
        "selection_epoch": np.float64(chosen.get("epoch", -1.0)),
        "selection_val_auroc": np.float64(val if isinstance(val, (int, float)) else np.nan),
        "selection_reason": np.array(str(record.get("reason", ""))),
        # `average`: the epochs of the evaluation points whose weights were averaged (empty otherwise)
        "selection_averaged_epochs": np.asarray(record.get("averaged_epochs", []), dtype=np.float64),
    }


def write_test_predictions(
    path: Path,
    samples: Sequence,
    scores: np.ndarray,
    logits: np.ndarray,
    *,
    window: int,
    name: str,
    spec: str,
    manifest_checksum: str,
    benchmark_manifest_checksum: str,
    benchmark_type: str,
    run_identity: str,
    config_hash: str,
    profile: str,
    base_seed: int,
    threshold: dict[str, np.ndarray],
    overlap: np.ndarray,
    root: Path,
    extra: dict[str, np.ndarray] | None = None,
) -> None:
    """A test dataset's predictions after window `window` (protocols.test_datasets), atomically.

    The usual per-row keys (`fused_*`, `generator_id_to_name` = '' then the source's generator names sorted,
    `pairing` = -1: a test dataset is not paired), `fused_paths`, the run's identity and `window`, the test source's
    `manifest_checksum` (the run's is `benchmark_manifest_checksum`), `kind` = "test", `test_dataset` and
    `test_dataset_spec`, the degradation applied, the window's `threshold*` keys (chosen on its validation split)
    and `overlap_with_benchmark` (per row: the benchmark splits holding the same bytes, '' for none).
    """
    from protocols.sequence_inputs import relative_path

    gen_names = [""] + sorted({s.generator for s in samples if s.generator})
    gid = {g: i for i, g in enumerate(gen_names)}
    n = len(samples)
    scores = np.asarray(scores, dtype=np.float32)
    logits = np.asarray(logits, dtype=np.float32)
    if scores.shape != (n,) or logits.shape != (n,) or np.asarray(overlap).shape != (n,):
        raise ValueError(f"test predictions {name}: {scores.shape} scores, {logits.shape} logits, "
                         f"{np.asarray(overlap).shape} overlap flags for {n} rows")
    arrays = {
        "fused_scores": scores,
        "fused_logits": logits,
        "fused_labels": np.asarray([s.label for s in samples], dtype=np.int64),
        "fused_generator_ids": np.asarray([gid[s.generator] for s in samples], dtype=np.int64),
        "fused_identifiers": np.asarray([s.id for s in samples], dtype=np.int64),
        "fused_paths": np.asarray([relative_path(Path(root), s.path) for s in samples], dtype=str),
        "pairing": np.full(n, -1, dtype=np.int64),
        "generator_id_to_name": np.array(gen_names, dtype=str),
        "window": np.int64(window),
        "schema_version": np.int64(SCHEMA_VERSION),
        "manifest_checksum": np.array(manifest_checksum),
        "benchmark_manifest_checksum": np.array(benchmark_manifest_checksum),
        "protocol_version": np.array(PROTOCOL_VERSION),
        "benchmark_type": np.array(benchmark_type),
        "run_identity": np.array(run_identity),
        "config_hash": np.array(config_hash),
        "kind": np.array("test"),
        "test_dataset": np.array(name),
        "test_dataset_spec": np.array(spec),
        "degradation_profile": np.array(profile),
        "degradation_base_seed": np.int64(base_seed),
        "overlap_with_benchmark": np.asarray(overlap, dtype=str),
        **{k: np.asarray(v) for k, v in threshold.items()},
    }
    extra = dict(extra or {})
    if "fused_paths" in extra:  # the video track's per-row arrays carry the same paths
        arrays.pop("fused_paths")
    clash = sorted(set(extra) & set(arrays))
    if clash:
        raise ValueError(f"test predictions: extra arrays {clash} would replace the standard keys")
    arrays.update(extra)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
