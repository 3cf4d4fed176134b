"""Questions asked of one window's predictions file (genshift predictions.npz or AI-GenBench's own).

From Python: `sample_frame(path)` (one row per image, a pandas DataFrame), `group_frame(arrays, k)`
(metrics per group and generator), `hardest(arrays)`, `roc_arrays(arrays, group, k)`; `report(path)` is
the text `genshift inspect` prints.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from common import predictions_file
from common import run_dir as layout
from leaderboard.continual import load_window_npz, window_table
from leaderboard.crops import crop_counts, crop_section, has_crops, pipeline_of
from leaderboard.groups import GENERATOR_PREFIX, NAMED_GROUPS, WINDOW_PREFIX, all_groups, window_generator_ids
from leaderboard.metrics import COUNT_NAMES, METRIC_NAMES
from leaderboard.reference import load_reference_npz, to_genshift_arrays
from leaderboard.render import fmt_frame

SAMPLE_COLUMNS = ("identifier", "label", "generator_id", "generator", "paired_generator", "window", "score", "logit",
                  "n_crops")


def load_predictions(path: str | Path, window: int | None = None) -> dict[str, np.ndarray]:
    """Arrays of a genshift predictions.npz, or of a reference file mapped to genshift keys."""
    path = Path(path)
    keys = predictions_file.keys(path)  # a missing, empty or non-zip file is refused here in plain words
    genshift = predictions_file.is_genshift_file(keys)  # crop arrays too since schema 4
    if not genshift and ("crop_scores" in keys or "crop_multiclass_predictions" in keys
                         or "fused_identifiers" not in keys):
        if window is None:
            window = layout.window_index(path.parent)
        return to_genshift_arrays(load_reference_npz(path), path, window)
    arrays = load_window_npz(path)
    return arrays


def resolve_window(arrays: dict[str, np.ndarray], window: int | None, path: str | Path = "arrays") -> int:
    """The training window k the file was scored after (stored scalar, or given)."""
    stored = int(arrays["window"]) if "window" in arrays else None
    if window is not None and stored is not None and window != stored:
        raise ValueError(f"{path}: --window {window} contradicts the stored window {stored}")
    k = window if window is not None else stored
    if k is None:
        raise ValueError(f"{path}: the file does not store its window; pass --window K")
    return k


def sample_frame(path_or_arrays: str | Path | dict, window: int | None = None) -> pd.DataFrame:
    """One row per image: identifier, label, generator (name), paired generator (reals), window, score, logit,
    and, when the file records them, source_format and jpeg_quality (-1: not JPEG)."""
    arrays = path_or_arrays if isinstance(path_or_arrays, dict) else load_predictions(path_or_arrays, window)
    names = np.asarray(arrays["generator_id_to_name"])
    gen = np.asarray(arrays["fused_generator_ids"]).astype(np.int64)
    pairing = np.asarray(arrays["pairing"]).astype(np.int64)
    windows = window_generator_ids(names, arrays["windows_timeline"])
    window_of = np.full(names.size, -1)
    for j, ids in enumerate(windows):
        window_of[ids] = j
    stratum = np.where(gen == 0, window_of[np.maximum(pairing, 0)], window_of[gen])
    logits = arrays.get("fused_logits")
    formats = {}
    if "fused_source_format" in arrays:  # schema 3 on image datasets: the row's source format and JPEG quality
        formats = {"source_format": np.asarray(arrays["fused_source_format"]).astype(str),
                   "jpeg_quality": np.asarray(arrays.get("fused_jpeg_quality", -1)).astype(np.int64)}
    return pd.DataFrame(
        {
            "identifier": np.asarray(arrays["fused_identifiers"]).astype(np.int64),
            "label": np.asarray(arrays["fused_labels"]).astype(np.int64),
            "generator_id": gen,
            "generator": np.where(gen == 0, "(real)", names[gen]),
            "paired_generator": np.where(gen == 0, names[np.maximum(pairing, 0)], ""),
            "window": stratum,
            "score": np.asarray(arrays["fused_scores"]).astype(np.float64),
            "logit": np.asarray(logits).astype(np.float64) if logits is not None else np.nan,
            "n_crops": crop_counts(arrays),
            **formats,
        },
        columns=[*SAMPLE_COLUMNS, *formats],
    )


def group_frame(arrays: dict[str, np.ndarray], k: int) -> pd.DataFrame:
    """Wide table: one row per group (named, window:<j>, generator:<name>), counts and metrics as columns."""
    t = window_table(arrays, k)
    wide = t.pivot(index="group", columns="metric", values="value")
    order = [g.name for g in all_groups(arrays, k)]
    wide = wide.reindex(order)[[*COUNT_NAMES, *METRIC_NAMES]]
    reasons = t.drop_duplicates("group").set_index("group")["reason"].reindex(order)
    wide["reason"] = reasons.where(wide["auroc"].isna(), None)
    return wide.reset_index()


def hardest(arrays: dict[str, np.ndarray], n: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(false negatives: the n lowest-scored fakes, false positives: the n highest-scored reals)."""
    df = sample_frame(arrays)
    fakes = df[df["label"] == 1].sort_values(["score", "identifier"], kind="stable").head(n)
    reals = df[df["label"] == 0].sort_values(["score", "identifier"], ascending=[False, True], kind="stable")
    return fakes.reset_index(drop=True), reals.head(n).reset_index(drop=True)


def roc_arrays(arrays: dict[str, np.ndarray], group: str = "all", k: int = 0) -> dict[str, np.ndarray]:
    """ROC points of a group (FPR, TPR, threshold at every distinct score, highest first, origin added)."""
    match = [g for g in all_groups(arrays, k) if g.name == group]
    if not match:
        raise ValueError(f"unknown group {group!r}; e.g. {list(NAMED_GROUPS)}, {WINDOW_PREFIX}0, {GENERATOR_PREFIX}<name>")
    g = match[0]
    if g.mask is None:
        raise ValueError(f"group {group!r} is undefined after window {k}: {g.reason}")
    y = np.asarray(arrays["fused_labels"])[g.mask].astype(np.int64)
    s = np.asarray(arrays["fused_scores"])[g.mask].astype(np.float64)
    order = np.argsort(s, kind="stable")[::-1]
    s, y = s[order], y[order]
    ends = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size else np.zeros(0, dtype=np.int64)
    tps = np.cumsum(y)[ends]
    fps = ends + 1 - tps
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"group {group!r} has {n_pos} fakes and {n_neg} reals; no ROC curve")
    return {
        "fpr": np.r_[0.0, fps / n_neg],
        "tpr": np.r_[0.0, tps / n_pos],
        "thresholds": np.r_[np.inf, s[ends]],
    }


def _schema(path: Path) -> str:
    lines = []
    with np.load(path, allow_pickle=False) as npz:
        for key in npz.files:
            try:
                a = npz[key]
                lines.append(f"  {key:28s} {str(a.dtype):10s} {a.shape}")
            except ValueError:
                lines.append(f"  {key:28s} object     (pickled; read through the allowlist unpickler)")
    return "\n".join(lines)


def report(path: str | Path, window: int | None = None, top: int = 10,
           robustness: str | Path | None = None) -> str:
    """The text of `genshift inspect`: schema, counts, group and generator metrics, hardest errors, robustness."""
    path = Path(path)
    arrays = load_predictions(path, window)
    k = resolve_window(arrays, window, path)
    df = sample_frame(arrays)
    groups = group_frame(arrays, k)
    named = groups[~groups["group"].str.startswith(GENERATOR_PREFIX)]
    per_gen = groups[groups["group"].str.startswith(GENERATOR_PREFIX)]
    fn, fp = hardest(arrays, top)
    counts = df.groupby("window").agg(fakes=("label", "sum"), images=("label", "size"))
    counts["reals"] = counts["images"] - counts["fakes"]
    parts = [
        f"file: {path}",
        f"after training window k = {k}",
        "schema:\n" + _schema(path),
        f"counts: {len(df)} images, {int(df['label'].sum())} fakes, {int((df['label'] == 0).sum())} reals, "
        f"{len(arrays['generator_id_to_name']) - 1} generators, {np.asarray(arrays['windows_timeline']).shape[0]} windows",
    ]
    if "n_unpaired_reals_dropped" in arrays:
        parts.append(f"AI-GenBench file: {int(arrays['n_unpaired_reals_dropped'])} unpaired real(s) dropped")
    else:
        pipe = pipeline_of(arrays)
        size = f", {pipe['size']} px" if pipe["size"] else ""
        parts.append(f"input pipeline: {pipe['pipeline']}, {pipe['input']}, {pipe['normalize']} statistics{size}")
    if has_crops(arrays):
        parts.append(crop_section(arrays))
    parts += [
        "per window (fakes of its generators + their paired reals):\n" + fmt_frame(counts.reset_index()),
        "groups:\n" + fmt_frame(named),
        "generators:\n" + fmt_frame(per_gen),
        f"hardest false negatives (lowest-scored fakes, top {top}):\n"
        + fmt_frame(fn[["identifier", "generator", "score"]]),
        f"hardest false positives (highest-scored reals, top {top}):\n"
        + fmt_frame(fp[["identifier", "paired_generator", "score"]]),
    ]
    from leaderboard.formats_view import inspect_section as formats_section  # '' unless formats are recorded

    parts += [sec for sec in (formats_section(arrays, k),) if sec]
    from leaderboard.localization_view import inspect_section  # '' unless a localization.npz sits beside it

    parts += [sec.rstrip("\n") for sec in (inspect_section(path, top),) if sec]
    from leaderboard.robustness_view import inspect_parts

    parts += inspect_parts(path, k, robustness, arrays.get("manifest_checksum"))  # window k's robustness rows
    return "\n\n".join(parts) + "\n"
