"""Robustness views for `genshift leaderboard` and `genshift inspect`, read from a run's robustness files.

`genshift robustness RUN` (protocols/robustness.py) writes robustness.csv (AUROC per window, degradation and
level), robustness_summary.csv (per window and degradation), robustness.json and robustness.png into the run
directory. This module reads those files only (no model code, no torch) and builds

- the leaderboard table (`leaderboard_table`): one row per run × degradation × level with the AUROC mean and
  worst over the scored windows, the relative drop of that mean from the clean AUROC, and how many windows'
  curves are monotone within noise; written as leaderboard_robustness.csv and as sections of leaderboard.md
  and leaderboard.html, where each run's PNG grid is embedded (`write_section`);
- the rows of one window for `genshift inspect` (`inspect_parts`);
- the numpy-only "monotone within noise" check that `genshift robustness` runs on the per-image scores
  (`monotone_check`: paired, label-stratified bootstrap of the AUROC at every level).
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common import run_dir as layout
from common.atomic import atomic_write_bytes, atomic_write_text
from leaderboard.runs import LeaderboardError

# Degradation kinds in display order, and which way their levels get harsher.
KINDS = ("none", "jpeg", "blur", "noise", "scale", "mandatory")
GRADED = ("jpeg", "blur", "noise", "scale")
HARSHER_WHEN_SMALLER = frozenset({"jpeg", "scale"})  # JPEG quality and scale factor: lower = harsher
LEVEL_MEANING = {"none": "clean", "jpeg": "JPEG quality", "blur": "Gaussian σ (px)", "noise": "Gaussian σ (/255)",
                 "scale": "down-scaling factor", "mandatory": "run's mandatory chain"}
ROWS_COLUMNS = ("window", "degradation", "level", "auroc", "n")
TABLE_COLUMNS = ("experiment", "degradation", "level", "level_meaning", "windows", "window_list", "n",
                 "auroc_mean", "auroc_worst", "worst_window", "clean_mean", "relative_drop", "monotone_windows",
                 "strict_monotone_windows", "graded_windows")
TABLE_FILE = "leaderboard_robustness.csv"
MONOTONE_REPLICATES = 1000
MONOTONE_LEVEL = 0.95
MONOTONE_TOLERANCE = 0.01  # AUROC: a smaller (even if real) rise between neighbouring levels is not a violation
EXPLANATION = (
    "Robustness (`genshift robustness RUN`): each finished window's checkpoint scored on the eval split under "
    "one degradation at a time (AUROC over the whole eval split; `none` = clean, `mandatory` = the run's own "
    "chain). AUROC mean / worst: over the scored windows (worst names its window). rel. drop = (clean mean − "
    "mean) / clean mean, over the same windows. monotone: windows whose AUROC does not rise, within noise, from "
    "one level to the next harsher one, out of the windows scored at two or more levels (paired, "
    "label-stratified bootstrap, {n} replicates: a step is a rise when its 95 % interval lies above {tol} "
    "AUROC; strict: above 0)."
)


# ------------------------------------------------------------------------------------------ monotone check


def severity_order(kind: str, levels: Sequence[float]) -> list[float]:
    """Levels sorted mildest first (JPEG quality and scale factor descending, blur and noise σ ascending)."""
    return sorted(levels, reverse=kind in HARSHER_WHEN_SMALLER)


def weighted_auroc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC (Mann–Whitney, ties ½) of one score vector under each row of per-image weights (B, N) -> (B,)."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if s.ndim != 1 or y.shape != s.shape or w.shape[1] != s.shape[0]:
        raise ValueError(f"weighted_auroc: labels {y.shape}, scores {s.shape} and weights {w.shape} do not match")
    order = np.argsort(s, kind="stable")
    s, y, w = s[order], y[order], w[:, order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1] if s.size else np.zeros(0, np.int64)
    pos = np.add.reduceat(np.where(y, w, 0.0), starts, axis=1)  # fake weight per tie group (B, G)
    neg = np.add.reduceat(np.where(y, 0.0, w), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # real weight strictly below each group
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))


def bootstrap_aurocs(labels: np.ndarray, scores_by_level: Sequence[np.ndarray], n_replicates: int = MONOTONE_REPLICATES,
                     seed: int = 0) -> np.ndarray:
    """(B, L) AUROC of every level under the same B resamples (fakes and reals redrawn separately, paired)."""
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"bootstrap_aurocs: {n_pos} fakes and {n_neg} reals; AUROC is undefined")
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_replicates, y.size))
    weights[:, y] = rng.multinomial(n_pos, np.full(n_pos, 1.0 / n_pos), size=n_replicates)
    weights[:, ~y] = rng.multinomial(n_neg, np.full(n_neg, 1.0 / n_neg), size=n_replicates)
    return np.stack([weighted_auroc(y, s, weights) for s in scores_by_level], axis=1)


def monotone_check(labels: np.ndarray, scores_by_level: Sequence[np.ndarray], n_replicates: int = MONOTONE_REPLICATES,
                   seed: int = 0, level: float = MONOTONE_LEVEL, tolerance: float = MONOTONE_TOLERANCE) -> dict:
    """Is AUROC non-increasing, within noise, along levels given mildest first? Also the size of the noise.

    Per step (level i to i+1) the paired-bootstrap interval of AUROC[i+1] − AUROC[i] is computed; its lower
    bound is the rise the data vouch for. ``monotone``: no step vouches for a rise above ``tolerance`` (a rise
    both real and material); ``strict_monotone``: none vouches for any rise (tolerance 0; paired differences
    of neighbouring levels are precise, so this flags rises far smaller than one level's own uncertainty).
    ``max_rise_low`` is the largest such lower bound, so ``monotone`` at any other tolerance t is
    ``max_rise_low <= t``. ``falls``: the drop from the mildest to the harshest level is significantly above 0.
    ``max_rise`` is the largest point-estimate step up (≤ 0: the point estimates never rise); ``auroc_se``
    the median bootstrap standard error of one level's AUROC.
    """
    from leaderboard.metrics import roc_auc

    if len(scores_by_level) < 2:
        raise ValueError(f"monotone_check needs at least two levels, got {len(scores_by_level)}")
    point = np.array([roc_auc(labels, s) for s in scores_by_level])
    boot = bootstrap_aurocs(labels, scores_by_level, n_replicates, seed)
    q = (1.0 - level) / 2.0
    steps = np.diff(boot, axis=1)  # (B, L-1): AUROC change one level harsher
    rise_low = float(np.quantile(steps, q, axis=0).max())
    drop_low = np.quantile(boot[:, 0] - boot[:, -1], q)
    return {"monotone": rise_low <= tolerance, "strict_monotone": rise_low <= 0, "falls": bool(drop_low > 0),
            "max_rise": float(np.diff(point).max()), "max_rise_low": rise_low,
            "total_drop": float(point[0] - point[-1]), "auroc_se": float(np.median(boot.std(axis=0, ddof=1)))}


# ------------------------------------------------------------------------------------------ reading files


@dataclass
class RunRobustness:
    """One run's robustness files: per-cell rows, the per-window summary (if any), provenance and PNG grid."""

    run_dir: Path
    rows: pd.DataFrame  # window, degradation, level, auroc, n
    summary: pd.DataFrame | None  # robustness_summary.csv, when present
    meta: dict
    png: bytes | None

    @property
    def windows(self) -> list[int]:
        return sorted(int(k) for k in self.rows["window"].unique())


def read_rows(path: Path) -> pd.DataFrame:
    """robustness.csv, checked: the expected columns, known degradations, numeric cells."""
    path = Path(path)
    if not path.is_file():
        raise LeaderboardError(f"{path}: robustness csv not found (run `genshift robustness RUN_DIR` first)")
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise LeaderboardError(f"{path}: unreadable robustness csv ({e})") from e
    missing = [c for c in ROWS_COLUMNS if c not in df.columns]
    if missing:
        raise LeaderboardError(f"{path}: not a robustness.csv, columns {missing} missing (has {list(df.columns)})")
    unknown = sorted(set(df["degradation"].astype(str)) - set(KINDS))
    if unknown:
        raise LeaderboardError(f"{path}: unknown degradation(s) {unknown}; expected some of {list(KINDS)}")
    try:
        for c in ("window", "n"):
            df[c] = df[c].astype(np.int64)
        for c in ("level", "auroc"):
            df[c] = df[c].astype(np.float64)
    except (TypeError, ValueError) as e:
        raise LeaderboardError(f"{path}: non-numeric window/level/auroc/n cell ({e})") from e
    if df.duplicated(["window", "degradation", "level"]).any():
        dup = df[df.duplicated(["window", "degradation", "level"], keep=False)].iloc[0]
        raise LeaderboardError(f"{path}: window {dup['window']} {dup['degradation']}={dup['level']:g} appears twice")
    df["degradation"] = df["degradation"].astype(str)
    return df


def read_run_robustness(run_dir: Path, manifest_checksum: str | None = None) -> RunRobustness | None:
    """A run's robustness files, or None when it has no robustness.csv; refuses files made on other data."""
    run_dir = Path(run_dir)
    if not (run_dir / "robustness.csv").is_file():
        return None
    rows = read_rows(run_dir / "robustness.csv")
    meta: dict = {}
    if (run_dir / "robustness.json").is_file():
        try:
            meta = json.loads((run_dir / "robustness.json").read_text())
        except ValueError as e:
            raise LeaderboardError(f"{run_dir / 'robustness.json'}: invalid JSON ({e})") from e
    made_on = meta.get("manifest_checksum")
    if manifest_checksum and made_on and str(made_on) != str(manifest_checksum):
        raise LeaderboardError(f"{run_dir}: robustness files were made on manifest {made_on}, the run on "
                               f"{manifest_checksum}; re-run `genshift robustness {run_dir}`")
    summary = None
    if (run_dir / "robustness_summary.csv").is_file():
        summary = pd.read_csv(run_dir / "robustness_summary.csv")
    png = (run_dir / "robustness.png").read_bytes() if (run_dir / "robustness.png").is_file() else None
    return RunRobustness(run_dir, rows, summary, meta, png)


# ------------------------------------------------------------------------------------------ leaderboard


def _level_order(kind: str, levels: Sequence[float]) -> list[float]:
    return severity_order(kind, levels) if kind in GRADED else sorted(levels)


def _monotone_counts(summary: pd.DataFrame | None, kind: str, windows: Sequence[int]) -> tuple[float, float, float]:
    """(windows whose `kind` curve is monotone, strictly monotone, windows with a verdict); NaN if unknown."""
    nan = (math.nan, math.nan, math.nan)
    if summary is None or "monotone" not in summary.columns or kind not in GRADED:
        return nan
    s = summary[(summary["degradation"].astype(str) == kind) & summary["window"].isin(list(windows))]
    verdicts = s["monotone"].astype(str).str.lower()
    s = s[verdicts.isin(["true", "false"])]
    if s.empty:
        return nan
    strict = (s["strict_monotone"].astype(str).str.lower() == "true").sum() if "strict_monotone" in s else math.nan
    return float((s["monotone"].astype(str).str.lower() == "true").sum()), float(strict), float(len(s))


def run_table(name: str, rob: RunRobustness) -> pd.DataFrame:
    """Rows of `leaderboard_table` for one run (degradations in display order, levels mildest first)."""
    df = rob.rows
    clean = df[df["degradation"] == "none"].set_index("window")["auroc"]
    out = []
    for kind in [k for k in KINDS if k in set(df["degradation"])]:
        part = df[df["degradation"] == kind]
        mono, strict, graded = _monotone_counts(rob.summary, kind, part["window"].unique())
        for level in _level_order(kind, part["level"].unique()):
            cell = part[part["level"] == level].set_index("window")["auroc"].dropna()
            both = cell.index.intersection(clean.dropna().index)
            mean = float(cell.mean()) if len(cell) else math.nan
            base = float(clean.loc[both].mean()) if len(both) else math.nan
            paired = float(cell.loc[both].mean()) if len(both) else math.nan
            out.append({
                "experiment": name, "degradation": kind, "level": float(level), "level_meaning": LEVEL_MEANING[kind],
                "windows": int(len(cell)), "window_list": ",".join(str(int(k)) for k in sorted(cell.index)),
                "n": int(part["n"].max()), "auroc_mean": mean,
                "auroc_worst": float(cell.min()) if len(cell) else math.nan,
                "worst_window": int(cell.idxmin()) if len(cell) else -1,
                "clean_mean": base, "relative_drop": (base - paired) / base if base > 0 else math.nan,
                "monotone_windows": mono, "strict_monotone_windows": strict, "graded_windows": graded,
            })
    return pd.DataFrame(out, columns=list(TABLE_COLUMNS))


def leaderboard_table(items: Sequence[tuple[str, RunRobustness]]) -> pd.DataFrame:
    """Long table over runs: experiment, degradation, level, AUROC mean/worst over windows, relative drop, ..."""
    frames = [run_table(name, rob) for name, rob in items]
    if not frames:
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def _f(v: float, digits: int = 4) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The human-readable robustness table (strings) for Markdown and HTML."""
    rows = []
    for r in table.itertuples(index=False):
        mono = "—" if math.isnan(r.graded_windows) else f"{int(r.monotone_windows)}/{int(r.graded_windows)}"
        if not (math.isnan(r.graded_windows) or math.isnan(r.strict_monotone_windows)):
            mono += f" (strict {int(r.strict_monotone_windows)})"
        rows.append({
            "experiment": r.experiment, "degradation": r.degradation,
            "level": "—" if r.degradation in ("none", "mandatory") else f"{r.level:g}",
            "windows": f"{r.windows}", "images": f"{r.n:,}", "AUROC mean": _f(r.auroc_mean),
            "worst (window)": "—" if r.worst_window < 0 else f"{_f(r.auroc_worst)} (w{r.worst_window})",
            "rel. drop vs clean": "—" if math.isnan(r.relative_drop) else f"{100 * r.relative_drop:.1f} %",
            "monotone": mono,
        })
    return pd.DataFrame(rows)


@dataclass
class Section:
    """What `write_leaderboard` appends: Markdown and HTML parts, and the files written."""

    markdown: str = ""
    html: str = ""
    files: tuple[str, ...] = ()


def collect(lb) -> list[tuple[str, RunRobustness]]:
    """(run name, robustness files) of the ranked runs that have them, in leaderboard order."""
    items = []
    for r in lb.records:  # in leaderboard order (tables, rows, seeds)
        name = r.name
        rob = read_run_robustness(r.path, r.info.get("manifest_checksum")) if r.kind == "genshift" else None
        if rob is not None:
            items.append((name, rob))
    return items


def write_section(lb, out_dir: Path) -> Section:
    """Write leaderboard_robustness.csv (+ each run's grid PNG) into out_dir; return the md/html sections."""
    from leaderboard.render import html_figure, html_table, safe_name, to_markdown

    items = collect(lb)
    if not items:
        return Section()
    out_dir = Path(out_dir)
    table = leaderboard_table(items)
    atomic_write_text(out_dir / TABLE_FILE, table.to_csv(index=False))
    files = [TABLE_FILE]
    shown = display_table(table)
    explanation = EXPLANATION.format(n=MONOTONE_REPLICATES, tol=MONOTONE_TOLERANCE)
    md = [f"\n## Robustness\n\n{explanation}\n\n{to_markdown(shown)}\n"]
    figs = []
    for name, rob in items:
        if rob.png is None:
            continue
        same = out_dir.resolve() == rob.run_dir.resolve()
        filename = "robustness.png" if same else f"robustness_{safe_name(name)}.png"
        if not same:
            atomic_write_bytes(out_dir / filename, rob.png)
            files.append(filename)
        md.append(f"\n![robustness grid: {name}]({filename})\n")
        title = f"robustness grid: {name} (AUROC per level, one line per window)"
        figs.append(html_figure(title, rob.png))
    section_html = (f"<h2 id='robustness'>Robustness</h2>\n<p>{html.escape(explanation)}</p>\n"
                    f"{html_table(shown, 'robustness-table')}" + "".join(figs))
    return Section("".join(md), section_html, tuple(files))


# ------------------------------------------------------------------------------------------ inspect


def _run_dir_of(predictions: Path) -> Path | None:
    parent = Path(predictions).parent
    return parent.parent if re.fullmatch(r"window_\d+", parent.name) else None


def inspect_parts(predictions: Path, k: int, robustness_csv: Path | None = None,
                  manifest_checksum: object = None) -> list[str]:
    """`genshift inspect` paragraphs: window k's robustness rows (found next to the run, or the given csv)."""
    manifest_checksum = None if manifest_checksum is None else str(manifest_checksum)
    if robustness_csv is None:
        run_dir = _run_dir_of(predictions)
        if run_dir is None or not (run_dir / "robustness.csv").is_file():
            if run_dir is not None and layout.has_run_json(run_dir):
                return [f"robustness: none for this run (`genshift robustness {run_dir}` makes it)"]
            return []
        robustness_csv = run_dir / "robustness.csv"
    robustness_csv = Path(robustness_csv)
    rows = read_rows(robustness_csv)
    meta_path = robustness_csv.with_suffix(".json")
    if manifest_checksum and meta_path.is_file():
        made_on = json.loads(meta_path.read_text()).get("manifest_checksum")
        if made_on and str(made_on) != str(manifest_checksum):
            raise LeaderboardError(f"{robustness_csv}: made on manifest {made_on}, but {predictions} on "
                                   f"{manifest_checksum}; they are not the same eval set")
    mine = rows[rows["window"] == k]
    if mine.empty:
        return [f"robustness: {robustness_csv} has no rows for window {k} (scored windows: "
                f"{sorted(int(w) for w in rows['window'].unique())})"]
    clean = mine.loc[mine["degradation"] == "none", "auroc"]
    base = float(clean.iloc[0]) if len(clean) else math.nan
    lines = []
    for kind in [x for x in KINDS if x in set(mine["degradation"])]:
        part = mine[mine["degradation"] == kind].set_index("level")
        for level in _level_order(kind, part.index):
            auc = float(part.loc[level, "auroc"])
            lines.append({"degradation": kind, "level": "-" if kind in ("none", "mandatory") else f"{level:g}",
                          "auroc": auc, "vs clean": auc - base,
                          "relative drop": (base - auc) / base if base > 0 else math.nan})
    table = pd.DataFrame(lines)
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        text = table.to_string(index=False, float_format=lambda v: f"{v:.4f}")
    parts = [f"robustness of window {k} ({robustness_csv}, {int(mine['n'].max())} eval images):\n{text}"]
    summary_path = robustness_csv.with_name(robustness_csv.stem + "_summary.csv")
    if summary_path.is_file():
        s = pd.read_csv(summary_path, dtype={"worst_level": str})
        s = s[s["window"] == k].drop(columns=["window"])
        if not s.empty:
            s = s.astype(object).where(s.notna(), "")  # not-graded rows have no verdict: blank, not NaN
            with pd.option_context("display.width", 200, "display.max_columns", 30):
                parts.append(f"robustness summary of window {k} ({summary_path}):\n"
                             + s.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return parts
