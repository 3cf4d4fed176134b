"""Test datasets in the leaderboard: one table per test dataset and the AUROC of every run after every window.

A run's test predictions are `window_<k>/test_<name>/predictions.npz` (`protocols.test_datasets`), read for its
finished windows through the safe reader and checked to belong to the run (its run identity). Runs are grouped by
test dataset: its name, the source's manifest checksum and the degradation profile it was scored under (a table
never mixes two versions of a dataset). Per run, the model after the last scored window: AUROC with a 95 %
stratified-bootstrap interval (reals and fakes resampled separately, seeded), AP, accuracy at the threshold the
window chose on its validation split (its rule named; — without a validation split) and at 0.5, the mean AUROC
over the scored windows, and how many test images share their bytes with the benchmark's data. The per-window
AUROC is a column per window and a plot per test dataset. Everything goes to `test_datasets.csv` (long form).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common import run_dir as layout
from common.atomic import atomic_write_bytes, atomic_write_text
from leaderboard import metrics as M

CSV_NAME = "test_datasets.csv"
PREFIX = "test_"
REQUIRED = ("fused_scores", "fused_labels", "test_dataset", "window", "manifest_checksum")
EXPLANATION = (
    "Test datasets: other sources scored beside the benchmark (config `test_datasets`), their evaluation split under "
    "the degradation profile named. Model after the last scored window: AUROC [95 % stratified-bootstrap interval], "
    "AP, accuracy at the threshold that window chose on its validation split (rule in brackets; — when the run has "
    "no validation split) and at 0.5; mean AUROC over the scored windows; w<k>: AUROC after window k. overlap: test "
    "images with the same bytes as a benchmark image (reported, not removed)."
)


@dataclass
class TestDatasetsView:
    frame: pd.DataFrame
    markdown: str
    html: str
    figures: list[tuple[str, str, bytes]]


def _read(path: Path, info: dict) -> dict[str, np.ndarray]:
    from common import predictions_file
    from leaderboard.runs import LeaderboardError

    try:
        arrays = predictions_file.read(path)
    except ValueError as e:
        raise LeaderboardError(str(e)) from None
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise LeaderboardError(f"{path}: not a test dataset's predictions (missing {missing})")
    expected = info.get("run_identity")
    if expected is not None and str(arrays.get("run_identity", "")) != str(expected):
        raise LeaderboardError(f"{path}: test predictions of another run (run identity "
                               f"{str(arrays.get('run_identity', 'none'))}, run.json says {expected})")
    y, s = np.asarray(arrays["fused_labels"]), np.asarray(arrays["fused_scores"])
    if y.ndim != 1 or s.shape != y.shape or s.dtype.kind != "f":
        raise LeaderboardError(f"{path}: fused_labels / fused_scores must be 1-D of equal length")
    return arrays


def test_files(record) -> dict[str, list[tuple[int, Path]]]:
    """{test dataset name: [(window, predictions.npz), ...]} over a run's finished windows."""
    out: dict[str, list[tuple[int, Path]]] = {}
    for k in range(record.n_windows_done):
        wdir = layout.window_dir(record.path, k)
        if not wdir.is_dir():
            continue
        for d in sorted(wdir.glob(f"{PREFIX}*")):
            f = layout.predictions_path(d)
            if d.is_dir() and f.is_file():
                out.setdefault(d.name[len(PREFIX):], []).append((k, f))
    return out


def auroc_interval(y: np.ndarray, s: np.ndarray, n_replicates: int, seed: int, level: float = 0.95
                   ) -> tuple[float, float]:
    """Percentile interval of the AUROC under a stratified bootstrap (fakes and reals resampled separately)."""
    y = np.asarray(y, np.int64)
    s = np.asarray(s, np.float64)
    fake, real = s[y == 1], np.sort(s[y == 0])
    if fake.size == 0 or real.size == 0 or n_replicates < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    w = rng.multinomial(fake.size, np.full(fake.size, 1.0 / fake.size), size=n_replicates)
    order = np.argsort(s[y == 0], kind="stable")
    v = rng.multinomial(real.size, np.full(real.size, 1.0 / real.size), size=n_replicates)[:, order]
    cum = np.concatenate([np.zeros((n_replicates, 1)), np.cumsum(v, axis=1)], axis=1)
    lo = np.searchsorted(real, fake, side="left")
    hi = np.searchsorted(real, fake, side="right")
    below = cum[:, lo]
    ties = cum[:, hi] - below
    reps = (w * (below + 0.5 * ties)).sum(axis=1) / (fake.size * real.size)
    a = (1.0 - level) / 2.0
    return float(np.quantile(reps, a)), float(np.quantile(reps, 1.0 - a))


def _threshold(arrays: dict) -> tuple[float, str]:
    t = float(arrays["threshold"]) if "threshold" in arrays else float("nan")
    rule = str(arrays.get("threshold_rule", "")) if "threshold_rule" in arrays else ""
    return t, rule


def test_frame(records: Sequence, n_replicates: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Long rows (experiment, test_dataset, manifest, profile, window, metric, value) of every run's test files."""
    rows = []
    for r in records:
        for name, files in test_files(r).items():
            for k, path in files:
                a = _read(path, r.info)
                y = np.asarray(a["fused_labels"], np.int64)
                s = np.asarray(a["fused_scores"], np.float64)
                keep = np.isfinite(s)
                y, s = y[keep], s[keep]
                t, rule = _threshold(a)
                base = {"experiment": r.name, "test_dataset": name, "manifest": str(a["manifest_checksum"]),
                        "profile": str(a.get("degradation_profile", "")), "window": k,
                        "selection": r.fields.get("train.selection", "last"), "detector":
                        (r.info.get("detector") or {}).get("name", r.fields.get("detector", "?"))}
                values = {
                    "auroc": M.roc_auc(y, s), "average_precision": M.average_precision(y, s),
                    "accuracy_at_validation_threshold": float("nan") if t != t else M.accuracy_at_threshold(y, s, t),
                    "accuracy_at_05": M.accuracy_at_threshold(y, s, M.DEFAULT_THRESHOLD),
                    "threshold": t, "n": float(y.size), "n_fake": float(y.sum()),
                    "n_overlap": float(np.count_nonzero(np.asarray(a.get("overlap_with_benchmark", [])) != "")),
                }
                lo, hi = auroc_interval(y, s, n_replicates, seed)
                values |= {"auroc_ci_low": lo, "auroc_ci_high": hi}
                for metric, value in values.items():
                    rows.append(base | {"metric": metric, "value": float(value), "rule": rule})
    return pd.DataFrame(rows, columns=["experiment", "detector", "selection", "test_dataset", "manifest", "profile",
                                       "window", "metric", "value", "rule"])


def _fmt(v: float, digits: int = 3) -> str:
    return "—" if v is None or v != v else f"{v:.{digits}f}"


def display_tables(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """[(title, display table, per-window AUROC (rows runs, columns windows))] per test dataset."""
    out = []
    for (name, manifest, profile), part in frame.groupby(["test_dataset", "manifest", "profile"], sort=True):
        title = f"{name} (manifest {manifest[:12]}, degradation {profile})"
        cells = part.set_index(["experiment", "window", "metric"])["value"].unstack("metric")
        rules = part.groupby("experiment")["rule"].first()
        rows = []
        per_window = cells["auroc"].unstack("window").sort_index(axis=1)
        for exp in sorted(part["experiment"].unique()):
            c = cells.loc[exp]
            last = int(c.index.max())
            at = c.loc[last]
            meta = part[part["experiment"] == exp].iloc[0]
            rule = rules.get(exp) or ""
            row = {
                "experiment": exp, "detector": meta["detector"], "selection": meta["selection"],
                "after window": str(last),
                "AUROC": f"{_fmt(at['auroc'])} [{_fmt(at['auroc_ci_low'])}, {_fmt(at['auroc_ci_high'])}]",
                "AP": _fmt(at["average_precision"]),
                "acc @ val. thr.": _fmt(at["accuracy_at_validation_threshold"]) + (f" ({rule})" if rule and
                                                                                    at["threshold"] == at["threshold"]
                                                                                    else ""),
                "acc @ 0.5": _fmt(at["accuracy_at_05"]),
                "mean AUROC": _fmt(float(np.nanmean(c["auroc"].to_numpy())) if c["auroc"].notna().any() else np.nan),
                "n": str(int(at["n"])), "overlap": str(int(at["n_overlap"])),
            }
            for k in per_window.columns:
                row[f"w{k}"] = _fmt(per_window.loc[exp, k])
            rows.append(row)
        out.append((title, pd.DataFrame(rows), per_window))
    return out


def write_section(records: Sequence, out_dir: Path, n_replicates: int = 1000, seed: int = 0) -> TestDatasetsView | None:
    """Write `test_datasets.csv` and the per-window plots; the Markdown/HTML sections (None: no test files)."""
    from leaderboard import plots
    from leaderboard.render import html_table, safe_name, to_markdown

    frame = test_frame(records, n_replicates, seed)
    if frame.empty:
        return None
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / CSV_NAME, frame.to_csv(index=False))
    md = [f"\n## Test datasets\n\n{EXPLANATION}\n"]
    body = [f"<h2>Test datasets</h2>\n<p>{EXPLANATION}</p>\n"]
    figures = []
    for i, (title, table, per_window) in enumerate(display_tables(frame)):
        md.append(f"\n### {title}\n\n{to_markdown(table)}\n")
        body.append(f"<h3>{title}</h3>\n{html_table(table, f'test-dataset-{i + 1}')}")
        curves = [(exp, per_window.loc[exp].to_numpy(dtype=float)) for exp in per_window.index]
        png = plots.test_per_window(title, curves, [int(k) for k in per_window.columns])
        filename = f"test_{safe_name(title.split(' ')[0])}_{i + 1}_per_window.png"
        atomic_write_bytes(out_dir / filename, png)
        figures.append((f"test dataset {title}: AUROC after each window", filename, png))
    return TestDatasetsView(frame, "".join(md), "".join(body), figures)
