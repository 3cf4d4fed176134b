"""The robustness grid's files: per (window, degradation) summaries, the CSV/JSON/PNG outputs and the per-image
scores of `genshift robustness` (protocols/robustness.py scores the grid; this module only turns rows and score
vectors into files, numpy and matplotlib only). `leaderboard.robustness_view` reads them back for the leaderboard.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common import predictions_file
from common import run_dir as layout
from common.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from leaderboard.metrics import roc_auc
from leaderboard.robustness_view import (
    GRADED,
    KINDS,
    MONOTONE_REPLICATES,
    MONOTONE_TOLERANCE,
    monotone_check,
    severity_order,
)

MANDATORY_TOLERANCE = 1e-4  # |robustness mandatory AUROC - the run's recorded AUROC| allowed (float32 batch order)
LEVEL_MEANING = {"none": "-", "jpeg": "JPEG quality (Pillow)", "blur": "Gaussian sigma (px)",
                 "noise": "Gaussian sigma (/255)", "scale": "down-scaling factor (area)",
                 "mandatory": "run's mandatory chain"}
CSV_FIELDS = ("window", "degradation", "level", "auroc", "n")
SUMMARY_FIELDS = ("window", "degradation", "mean_auroc", "worst_auroc", "worst_level", "clean_auroc",
                  "relative_drop", "monotone", "strict_monotone", "falls", "max_rise", "max_rise_low", "total_drop",
                  "auroc_se")
MONOTONE_FIELDS = SUMMARY_FIELDS[-7:]


@dataclass
class GridScores:
    """The grid's rows plus what the monotone check and robustness_scores.npz need: labels and scores per row."""

    rows: list[dict]
    labels: np.ndarray  # (N,) int, eval positions 0..N-1
    sample_ids: np.ndarray  # (N,) manifest ids of those positions
    scores: list[np.ndarray]  # per row, fused P(fake) of the N positions (float64)
    runtime: dict | None = None  # precision, channels_last and batch size the scores were computed with


def summarize(rows: list[dict], labels: np.ndarray | None = None, scores: Sequence[np.ndarray] | None = None,
              n_replicates: int = MONOTONE_REPLICATES) -> list[dict]:
    """Per (window, degradation): mean and worst AUROC over levels, and the worst's drop relative to 'none'.

    With the per-row ``scores`` (and ``labels``), graded degradations scored at two or more levels also get
    the "monotone within noise" verdict of `leaderboard.robustness_view.monotone_check` (paired bootstrap);
    otherwise those columns are empty.
    """
    if (labels is None) != (scores is None) or (scores is not None and len(scores) != len(rows)):
        raise ValueError("summarize: pass both labels and one score vector per row, or neither")
    clean = {r["window"]: r["auroc"] for r in rows if r["degradation"] == "none"}
    out = []
    keys = sorted({(r["window"], r["degradation"]) for r in rows}, key=lambda t: (t[0], list(KINDS).index(t[1])))
    for k, kind in keys:
        idx = [i for i, r in enumerate(rows) if r["window"] == k and r["degradation"] == kind
               and not math.isnan(r["auroc"])]
        cells = [rows[i] for i in idx]
        mono = dict.fromkeys(MONOTONE_FIELDS, "")
        if not cells:
            out.append({"window": k, "degradation": kind, "mean_auroc": math.nan, "worst_auroc": math.nan,
                        "worst_level": "", "clean_auroc": clean.get(k, math.nan), "relative_drop": math.nan} | mono)
            continue
        if scores is not None and kind in GRADED and len(idx) >= 2:
            ordered = sorted(idx, key=lambda i: severity_order(kind, [r["level"] for r in cells]).index(rows[i]["level"]))
            mono = monotone_check(labels, [scores[i] for i in ordered], n_replicates, seed=int(k))
        worst = min(cells, key=lambda r: r["auroc"])
        base = clean.get(k, math.nan)
        out.append({"window": k, "degradation": kind, "mean_auroc": float(np.mean([r["auroc"] for r in cells])),
                    "worst_auroc": worst["auroc"], "worst_level": worst["level"], "clean_auroc": base,
                    "relative_drop": (base - worst["auroc"]) / base if base and not math.isnan(base) else math.nan}
                   | {f: mono[f] for f in MONOTONE_FIELDS})
    return out


def _fmt(key: str, v: object) -> object:
    if not isinstance(v, float):
        return v
    return f"{v:g}" if key in ("level", "worst_level") else f"{v:.6f}"


def csv_text(rows: list[dict], fields: Sequence[str]) -> str:
    """CSV text of `rows`: levels as %g, other floats with 6 decimals."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(k, v) for k, v in r.items()})
    return buf.getvalue()


def plot_grid(rows: list[dict], title: str, summary: list[dict] | None = None) -> bytes:
    """PNG: one panel per graded degradation (AUROC vs level, one line per window, their mean in black).

    With ``summary`` rows that carry monotone verdicts, each panel's title says how many windows are
    monotone within noise.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in KINDS if k not in ("none", "mandatory") and any(r["degradation"] == k for r in rows)]
    windows = sorted({r["window"] for r in rows})
    fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(3.4 * max(1, len(kinds)), 3.3), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, kind in zip(axes[0], kinds, strict=False):
        for i, k in enumerate(windows):
            pts = [(r["level"], r["auroc"]) for r in rows if r["window"] == k and r["degradation"] == kind]
            color = cmap(i / max(1, len(windows) - 1))
            ax.plot(range(len(pts)), [p[1] for p in pts], marker="o", color=color, label=f"w{k}")
            ax.set_xticks(range(len(pts)), [f"{p[0]:g}" for p in pts])
            clean = [r["auroc"] for r in rows if r["window"] == k and r["degradation"] == "none"]
            if clean:
                ax.axhline(clean[0], color=color, linestyle=":", linewidth=0.8)
            mand = [r["auroc"] for r in rows if r["window"] == k and r["degradation"] == "mandatory"]
            if mand:
                ax.axhline(mand[0], color=color, linestyle="--", linewidth=0.8)
        levels = [r["level"] for r in rows if r["window"] == windows[0] and r["degradation"] == kind]
        if len(windows) > 1:
            mean = [np.nanmean([r["auroc"] for r in rows if r["degradation"] == kind and r["level"] == lv])
                    for lv in levels]
            ax.plot(range(len(levels)), mean, color="black", linewidth=2.2, marker="s", label="mean")
        verdicts = [r for r in summary or [] if r["degradation"] == kind and r["monotone"] != ""]
        note = (f"\nmonotone within noise: {sum(bool(r['monotone']) for r in verdicts)}/{len(verdicts)} windows "
                f"(strict {sum(bool(r['strict_monotone']) for r in verdicts)})") if verdicts else ""
        ax.set_title(f"{kind}: {LEVEL_MEANING[kind]}{note}", fontsize=8)
        ax.set_ylabel("AUROC (eval split)")
        ax.grid(alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, title_fontsize=7,
               title="window\n(dotted: clean,\ndashed: mandatory)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def recorded_auroc(run_dir: Path, k: int) -> float | None:
    """AUROC over the whole eval split recorded by the run for window k (predictions.npz), if readable."""
    path = layout.predictions_path(layout.window_dir(run_dir, k))
    try:
        z = predictions_file.read(path)
        return roc_auc(z["fused_labels"], z["fused_scores"])
    except (OSError, KeyError, ValueError):
        return None


def mandatory_check(run_dir: Path, rows: list[dict], limit: int | None) -> dict[str, dict]:
    """Per window: the run's recorded AUROC next to the grid's `mandatory` cell (they must agree: same inputs).

    A disagreement means the checkpoint or the eval inputs changed since the run scored that window; it is
    reported on stderr and recorded in robustness.json. Skipped under ``limit`` (a different eval subset).
    """
    out: dict[str, dict] = {}
    if limit is not None:
        return out
    for r in rows:
        if r["degradation"] != "mandatory":
            continue
        rec = recorded_auroc(run_dir, r["window"])
        agree = rec is not None and abs(rec - r["auroc"]) <= MANDATORY_TOLERANCE
        out[str(r["window"])] = {"recorded": rec, "robustness": r["auroc"], "agree": agree}
        if not agree:
            print(f"[robustness] WARNING: window {r['window']}: mandatory-chain AUROC {r['auroc']:.6f} differs from "
                  f"the run's recorded {rec if rec is None else round(rec, 6)}; was the checkpoint or the eval "
                  f"input changed since the run?", file=sys.stderr)
    return out



def write_grid_files(run_dir: Path, rows: list[dict], grid: dict, limit: int | None, scores: GridScores | None,
                     provenance: dict) -> list[Path]:
    """robustness.csv, robustness_summary.csv, robustness.json, robustness.png in ``run_dir`` (atomic).

    With ``scores`` the summary gets the monotone-within-noise columns and the per-image scores are kept in
    robustness_scores.npz (float32, one row per robustness.csv row, in its order). ``provenance``: the
    ``noise_seed`` of the noise levels and the run's ``manifest_checksum``, recorded in robustness.json.
    """
    run_dir = Path(run_dir)
    if scores is not None and scores.rows is not rows:
        raise ValueError("write_outputs: scores must be the GridScores whose rows are written")
    paths = [run_dir / f"robustness{s}" for s in (".csv", "_summary.csv", ".json", ".png")]
    atomic_write_text(paths[0], csv_text(rows, CSV_FIELDS))
    summary = summarize(rows, scores.labels, scores.scores) if scores is not None else summarize(rows)
    atomic_write_text(paths[1], csv_text(summary, SUMMARY_FIELDS))
    meta = {"grid": {k: list(v) for k, v in grid.items()}, "level_meaning": LEVEL_MEANING,
            "noise_seed": provenance.get("noise_seed"), "manifest_checksum": provenance.get("manifest_checksum"),
            "eval_images": rows[0]["n"] if rows else 0, "limit": limit, "fusion": "mean of crop logits",
            "windows": sorted({r["window"] for r in rows}),
            "monotone_check": {"replicates": MONOTONE_REPLICATES, "level": 0.95, "seed": "window index",
                               "tolerance": MONOTONE_TOLERANCE, "strict_tolerance": 0.0,
                               "resampling": "fakes and reals redrawn separately, same draws for every level"},
            "scoring": scores.runtime if scores is not None else None,
            "mandatory_vs_recorded": mandatory_check(run_dir, rows, limit)}
    atomic_write_text(paths[2], json.dumps(meta, indent=2) + "\n")
    atomic_write_bytes(paths[3], plot_grid(rows, f"{run_dir.name}: robustness (eval AUROC)", summary))
    if scores is not None:
        paths.append(_write_scores(run_dir / "robustness_scores.npz", rows, scores))
    else:  # an older grid's per-image scores would no longer match robustness.csv
        (run_dir / "robustness_scores.npz").unlink(missing_ok=True)
    return paths


def _write_scores(path: Path, rows: list[dict], scores: GridScores) -> Path:
    """robustness_scores.npz: labels, sample ids and one float32 score vector per robustness.csv row."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f, labels=scores.labels.astype(np.int8), sample_ids=scores.sample_ids,
            scores=np.stack(scores.scores).astype(np.float32) if scores.scores else np.zeros((0, 0), np.float32),
            window=np.array([r["window"] for r in rows], np.int64),
            degradation=np.array([r["degradation"] for r in rows]),
            level=np.array([r["level"] for r in rows], np.float64))
    return path
