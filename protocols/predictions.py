"""Building a window's predictions.npz (the format and its version history are owned by
`common.predictions_file`) and summarising it for metrics.json; the variant fields every npz and run.json record
(`variant_fields`).

A file is written from two records: `RunStamp`, what every predictions file of a run records besides its scores
(the eval plan, names, identity, pipeline, strategy, variant fields), and `ScoredRows`, the scores themselves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.eval_plan import EvalPlan
from common import predictions_file as PF
from common.predictions_file import CROP_KEYS, PIPELINE_KEYS, PROTOCOL_VERSION, SCHEMA_VERSION  # noqa: F401
from protocols import faults
from protocols.config_model import ConfigLike, run_config

NO_QUALITY = -1  # fused_jpeg_quality of a row that is not a JPEG (or whose tables could not be read)


@dataclass(frozen=True)
class RunIdentity:
    """What ties a predictions file to its run: the leaderboard refuses a window whose identity differs from its
    run.json's. `run_identity` is deterministic (protocols.engine.run_identity)."""

    manifest_checksum: str
    benchmark_type: str
    run_identity: str
    config_hash: str


@dataclass(frozen=True)
class RunStamp:
    """What every predictions file of a run records besides its scores (each window's and the untrained model's).

    ``fields`` (`variant_fields`) become the variant keys; they must agree with the identity's manifest checksum
    and benchmark type. ``rows`` holds per-row arrays in eval order (`source_format_arrays`). ``pipeline``: the
    run's input pipeline (protocols.pipeline.InputPipeline.to_dict()), stored as PIPELINE_KEYS. ``cl_strategy``:
    the resolved continual-learning strategy ``{"name": ..., **params}`` (None: naive fine-tuning)."""

    identity: RunIdentity
    plan: EvalPlan
    gen_names: Sequence[str]
    windows: Sequence[Sequence[str]]
    pipeline: Mapping[str, Any] | None = None
    cl_strategy: Mapping[str, Any] | None = None
    fields: Mapping[str, object] | None = None
    rows: Mapping[str, np.ndarray] | None = None


@dataclass(frozen=True)
class ScoredRows:
    """A model's outputs on the rows of one file.

    `logits` are per row, or per crop with `crop_positions` (the eval position of each crop, sorted): then the row
    scores are the mean of the crops' sigmoid scores and the crop-level arrays (CROP_KEYS) are stored. ``scores``
    replaces the sigmoid when a row's score is fused from several items (a video's segments or frames:
    `fused_logits` is then logit(score)); ``extra`` holds further arrays (segment- or frame-level scores and the
    rows they belong to, per-row compression and video ids, validation rows), written as given."""

    logits: np.ndarray
    scores: np.ndarray | None = None
    crop_positions: np.ndarray | None = None
    extra: Mapping[str, np.ndarray] | None = None


def variant_fields(cfg: ConfigLike, manifest_checksum: str, benchmark_type: str | None = None) -> dict[str, object]:
    """Every field that shapes a number, by its config name (leaderboard.variants.VARIANT_FIELDS): the
    evaluation-defining ones (manifest, evaluation split, degradation profile and base seed, protocol version) and
    the method-side ones (detector, benchmark type, continual strategy, selection, eval input pipeline and
    normalisation). The engine writes them into run.json (`variant`) and every predictions.npz (`variant_arrays`).

    Read from the typed config (a mapping is completed with base.yaml's defaults first): `eval.split` is always
    eval (runs score the eval split), an unset `eval.normalize` is the pipeline's own (clip for the reference
    pipeline, else backbone). A mapping value (a strategy with parameters) is written as text, e.g.
    `ewc(gamma=1.0, lambda=0.4)`.
    """
    from leaderboard.variants import field_text

    rc = run_config(cfg)
    pipeline = field_text(rc.eval.pipeline)
    fields: dict[str, object] = {
        "manifest_checksum": str(manifest_checksum),
        "protocol_version": PROTOCOL_VERSION,
        "eval.split": "eval",
        "degradation.profile": field_text(rc.degradation.spec),
        "degradation.base_seed": rc.degradation.base_seed,
        "detector": field_text(rc.detector),
        "benchmark.type": str(benchmark_type if benchmark_type is not None else rc.benchmark.type),
        "cl_strategy": field_text({"name": rc.cl_strategy.name, **rc.cl_strategy.params}),
        "train.selection": field_text(rc.train.selection),
        "eval.pipeline": pipeline,
        "eval.normalize": field_text(rc.eval.normalize or ("clip" if pipeline == "reference" else "backbone")),
    }
    return fields


def variant_arrays(fields: Mapping[str, object]) -> dict[str, np.ndarray]:
    """The npz keys of `variant_fields`: the config name with dots as underscores (`eval_pipeline`)."""
    return {name.replace(".", "_"): (np.int64(v) if isinstance(v, int) else np.array(str(v)))
            for name, v in fields.items()}


def source_format_arrays(manifest, sample_ids: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-row `fused_source_format` and `fused_jpeg_quality` of image samples in eval order; {} when the
    manifest records no format (sequence datasets)."""
    by_id = {s.id: s for s in manifest.split("eval")}
    rows = [by_id[int(i)] for i in sample_ids]
    if not any(s.format for s in rows):
        return {}
    return {
        "fused_source_format": np.array([s.format for s in rows], dtype=str),
        "fused_jpeg_quality": np.array([NO_QUALITY if s.jpeg_quality is None else int(s.jpeg_quality)
                                        for s in rows], dtype=np.int64),
    }


def _padded_windows(windows: Sequence[Sequence[str]]) -> np.ndarray:
    width = max(len(w) for w in windows)
    return np.array([list(w) + [""] * (width - len(w)) for w in windows], dtype=str)


def sigmoid32(logits: np.ndarray) -> np.ndarray:
    """P(fake) = sigmoid(logit), computed in float64 and stored as float32."""
    return (1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))).astype(np.float32)


def fuse_crops(crop_logits: np.ndarray, crop_positions: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Image scores from crop scores, as the reference fuses them: the mean of the crops' sigmoid scores.

    Returns fused_scores (float32 mean of crop_scores, computed in float64), fused_logits (the logit of that mean,
    or the crop's own logit for an image with one crop) and crop_scores. Positions must cover 0..n-1, sorted.
    """
    crop_logits = np.asarray(crop_logits, dtype=np.float32)
    pos = np.asarray(crop_positions, dtype=np.int64)
    if pos.shape != crop_logits.shape or (pos.size and np.any(np.diff(pos) < 0)):
        raise ValueError("fuse_crops: one sorted position per crop logit expected")
    counts = np.bincount(pos, minlength=n)
    if len(counts) != n or np.any(counts == 0):
        raise ValueError(f"fuse_crops: crops cover {int((counts > 0).sum())} of {n} images")
    crop_scores = sigmoid32(crop_logits)
    mean = np.bincount(pos, weights=crop_scores.astype(np.float64), minlength=n) / counts
    with np.errstate(divide="ignore"):
        fused_logits = np.log(mean) - np.log1p(-mean)
    single = counts == 1
    first = np.r_[0, np.cumsum(counts)[:-1]]
    fused_logits[single] = crop_logits[first[single]]
    return {"fused_scores": mean.astype(np.float32), "fused_logits": fused_logits.astype(np.float32),
            "crop_scores": crop_scores}


def write_predictions(path: Path, run: RunStamp, window: int, scored: ScoredRows) -> None:
    """Write window `window`'s predictions file atomically (through `common.predictions_file`). Scores are
    P(fake) = sigmoid(logit) computed in float64, stored in float32."""
    plan, ident = run.plan, run.identity
    n = len(plan.sample_ids)
    logits, scores = scored.logits, scored.scores
    crops: dict[str, np.ndarray] = {}
    if scored.crop_positions is not None:
        if scores is not None:
            raise ValueError("predictions: crop_positions and scores are exclusive (crops are fused here)")
        pos = np.asarray(scored.crop_positions, dtype=np.int64)
        crop_logits = np.asarray(logits, dtype=np.float32)
        fused = fuse_crops(crop_logits, pos, n)
        scores, logits = fused["fused_scores"], fused["fused_logits"]
        crops = {"crop_scores": fused["crop_scores"], "crop_logits": crop_logits,
                 "crop_to_image_index": pos, "crop_identifiers": plan.sample_ids.astype(np.int64)[pos],
                 "crop_labels": plan.labels.astype(np.int64)[pos],
                 "crop_generator_ids": plan.generator_ids.astype(np.int64)[pos]}
    cl = dict(run.cl_strategy or {"name": "naive"})
    logits = np.asarray(logits, dtype=np.float32)
    if scores is None:
        scores = sigmoid32(logits)
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape != logits.shape or scores.shape != plan.labels.shape:
        raise ValueError(f"predictions: {scores.shape} scores and {logits.shape} logits for {plan.labels.shape} rows")
    pipeline_arrays = {}
    if run.pipeline is not None:
        pipeline = run.pipeline
        pipeline_arrays = {"eval_pipeline": np.array(str(pipeline["pipeline"])),
                           "eval_input": np.array(str(pipeline["input"])),
                           "eval_normalize": np.array(str(pipeline["normalize"])),
                           "input_size": np.int64(pipeline["size"])}
    arrays = {
        "fused_scores": scores,
        "fused_logits": logits,
        "fused_labels": plan.labels.astype(np.int64),
        "fused_generator_ids": plan.generator_ids.astype(np.int64),
        "fused_identifiers": plan.sample_ids.astype(np.int64),
        "pairing": plan.pairing.astype(np.int64),
        "generator_id_to_name": np.array(list(run.gen_names), dtype=str),
        "windows_timeline": _padded_windows(run.windows),
        "window": np.int64(window),
        "manifest_checksum": np.array(ident.manifest_checksum),
        "protocol_version": np.array(PROTOCOL_VERSION),
        "benchmark_type": np.array(ident.benchmark_type),
        "run_identity": np.array(ident.run_identity),
        "config_hash": np.array(ident.config_hash),
        "cl_strategy": np.array(str(cl.pop("name"))),
        "cl_strategy_params": np.array(json.dumps(cl, sort_keys=True)),
        **pipeline_arrays,
        **crops,
    }
    if run.fields is not None:
        variant = variant_arrays(run.fields)
        variant.pop("cl_strategy", None)  # written above as the name, its parameters in cl_strategy_params
        for key in pipeline_arrays:  # the resolved pipeline, written above, is the exact record
            variant.pop(key, None)
        for key in ("manifest_checksum", "benchmark_type", "protocol_version"):
            if key in variant and str(variant[key]) != str(arrays[key]):
                raise ValueError(f"predictions: variant field {key} = {str(variant[key])!r} contradicts "
                                 f"{str(arrays[key])!r}")
        arrays.update(variant)
    for name, values in (run.rows or {}).items():
        if np.asarray(values).shape != plan.labels.shape:
            raise ValueError(f"predictions: per-row array {name} has shape {np.asarray(values).shape}, "
                             f"expected {plan.labels.shape}")
        arrays[name] = np.asarray(values)
    extra = scored.extra or {}
    clash = sorted(set(extra) & set(arrays))
    if clash:
        raise ValueError(f"predictions: extra arrays {clash} would replace the standard keys")
    arrays.update(extra)
    PF.write(path, arrays, before_commit=lambda: faults.die_if("predictions_tmp", window))


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


def write_initial_predictions(run_dir: Path, run: RunStamp, scored: ScoredRows) -> Path:
    """Write the model's predictions before any training to `window_init/predictions.npz` (window -1).

    The leaderboard's FWT needs them (b_j, `leaderboard.initial`); call once, after the model is built and
    before window 0 trains, with the eval split's logits. Same keys and atomic write as a window's file.
    """
    from leaderboard.continual import INITIAL_WINDOW
    from leaderboard.initial import initial_path

    path = initial_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_predictions(path, run, INITIAL_WINDOW, scored)
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


@dataclass(frozen=True)
class TestDatasetRows:
    """The rows of one test dataset as scored after a window: its name and spec, its own manifest checksum (the
    run's is in the RunIdentity), the root its paths are relative to, the samples in row order, the degradation
    applied (`profile`, `base_seed`) and, per row, the benchmark splits holding the same bytes ('' for none)."""

    name: str
    spec: str
    manifest_checksum: str
    root: Path
    samples: Sequence
    overlap: np.ndarray
    profile: str
    base_seed: int


def write_test_predictions(path: Path, run: RunIdentity, dataset: TestDatasetRows, window: int, scored: ScoredRows,
                           threshold: Mapping[str, np.ndarray]) -> None:
    """A test dataset's predictions after window `window` (protocols.test_datasets), atomically.

    The usual per-row keys (`fused_*`, `generator_id_to_name` = '' then the source's generator names sorted,
    `pairing` = -1: a test dataset is not paired), `fused_paths`, the run's identity and `window`, the test source's
    `manifest_checksum` (the run's is `benchmark_manifest_checksum`), `kind` = "test", `test_dataset` and
    `test_dataset_spec`, the degradation applied, the window's `threshold*` keys (chosen on its validation split)
    and `overlap_with_benchmark`. `scored` holds one score and logit per row (no crops).
    """
    from protocols.sequence_inputs import relative_path

    samples = dataset.samples
    gen_names = [""] + sorted({s.generator for s in samples if s.generator})
    gid = {g: i for i, g in enumerate(gen_names)}
    n = len(samples)
    scores = np.asarray(scored.scores, dtype=np.float32)
    logits = np.asarray(scored.logits, dtype=np.float32)
    overlap = np.asarray(dataset.overlap)
    if scores.shape != (n,) or logits.shape != (n,) or overlap.shape != (n,):
        raise ValueError(f"test predictions {dataset.name}: {scores.shape} scores, {logits.shape} logits, "
                         f"{overlap.shape} overlap flags for {n} rows")
    arrays = {
        "fused_scores": scores,
        "fused_logits": logits,
        "fused_labels": np.asarray([s.label for s in samples], dtype=np.int64),
        "fused_generator_ids": np.asarray([gid[s.generator] for s in samples], dtype=np.int64),
        "fused_identifiers": np.asarray([s.id for s in samples], dtype=np.int64),
        "fused_paths": np.asarray([relative_path(Path(dataset.root), s.path) for s in samples], dtype=str),
        "pairing": np.full(n, -1, dtype=np.int64),
        "generator_id_to_name": np.array(gen_names, dtype=str),
        "window": np.int64(window),
        "manifest_checksum": np.array(dataset.manifest_checksum),
        "benchmark_manifest_checksum": np.array(run.manifest_checksum),
        "protocol_version": np.array(PROTOCOL_VERSION),
        "benchmark_type": np.array(run.benchmark_type),
        "run_identity": np.array(run.run_identity),
        "config_hash": np.array(run.config_hash),
        "kind": np.array(PF.KIND_TEST),
        "test_dataset": np.array(dataset.name),
        "test_dataset_spec": np.array(dataset.spec),
        "degradation_profile": np.array(dataset.profile),
        "degradation_base_seed": np.int64(dataset.base_seed),
        "overlap_with_benchmark": overlap.astype(str),
        **{k: np.asarray(v) for k, v in threshold.items()},
    }
    extra = dict(scored.extra or {})
    if "fused_paths" in extra:  # the video track's per-row arrays carry the same paths
        arrays.pop("fused_paths")
    clash = sorted(set(extra) & set(arrays))
    if clash:
        raise ValueError(f"test predictions: extra arrays {clash} would replace the standard keys")
    arrays.update(extra)
    PF.write(path, arrays)
