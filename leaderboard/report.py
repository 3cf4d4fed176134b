"""Leaderboard tables over experiments, from stored predictions only (no model code).

One row per run: NEXT (mean over k = 0..K−2 of the AUROC on window k+1, the headline), the seen average
and the other continual aggregates; a second table gives per-window AUROC on next/current/seen/all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.atomic import atomic_write_text
from leaderboard.continual import RunEvaluation, evaluate_run, load_run

WINDOW_GROUPS = ("next", "current", "seen", "all")
SUMMARY_COLUMNS = ("next", "seen_average", "future_average", "bwt", "forgetting")


class LeaderboardError(ValueError):
    """Runs cannot be read or compared; the message names the run and what differs."""


@dataclass
class RunRecord:
    """One run's identity (from run.json) and its evaluation (from its predictions)."""

    path: Path
    info: dict
    evaluation: RunEvaluation
    n_windows_done: int


def _window_dirs(run: Path) -> list[Path]:
    dirs = sorted((d for d in run.glob("window_*") if d.is_dir()), key=lambda d: int(d.name.split("_")[1]))
    done = []
    for k, d in enumerate(dirs):
        if d.name != f"window_{k}":
            raise LeaderboardError(f"{run}: window directories are not contiguous (found {d.name} at k={k})")
        if not (d / "done").is_file():
            break
        done.append(d)
    return done


def read_run(run: Path) -> RunRecord:
    """Load a run directory's info and finished windows' predictions."""
    run = Path(run)
    if not run.is_dir():
        raise LeaderboardError(f"{run}: not a run directory")
    info_path = run / "run.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    done = _window_dirs(run)
    if not done:
        raise LeaderboardError(f"{run}: no finished window (no window_<k>/done); nothing to rank")
    try:
        arrays = load_run([d / "predictions.npz" for d in done])
    except (ValueError, FileNotFoundError) as e:
        raise LeaderboardError(f"{run}: {e}") from e
    return RunRecord(run, info, evaluate_run(arrays), len(done))


def check_comparable(records: Sequence[RunRecord]) -> None:
    """Refuse to rank runs made on different manifests or protocol versions, naming them."""
    for key in ("manifest_checksum", "protocol_version"):
        values = {r.path.name: r.info.get(key) for r in records}
        if len(set(values.values())) > 1:
            listing = "\n  ".join(f"{name}: {v}" for name, v in values.items())
            raise LeaderboardError(f"runs differ in {key}; they cannot be ranked together:\n  {listing}")


def _summary_row(r: RunRecord) -> dict:
    det = r.info.get("detector", {})
    cfg = r.info.get("config", {})
    summary = r.evaluation.summary.set_index("aggregate")["value"]
    row = {
        "experiment": r.path.name,
        "detector": det.get("name", "?"),
        "mode": det.get("mode", "?"),
        "seed": cfg.get("seed"),
        "benchmark": r.info.get("benchmark_type", "?"),
        "windows": f"{r.n_windows_done}/{r.evaluation.auroc_matrix.shape[1]}",
    }
    row |= {c: float(summary[c]) for c in SUMMARY_COLUMNS}
    row["params"] = det.get("n_params")
    return row


def window_rows(r: RunRecord) -> pd.DataFrame:
    """Per-window AUROC of the main groups (rows: windows; NaN where a group is undefined)."""
    t = r.evaluation.table
    t = t[(t["metric"] == "auroc") & t["group"].isin(WINDOW_GROUPS)]
    wide = t.pivot(index="window", columns="group", values="value")[list(WINDOW_GROUPS)]
    wide.insert(0, "experiment", r.path.name)
    return wide.reset_index()


def _fmt(v) -> str:
    if isinstance(v, float):
        return "—" if np.isnan(v) else f"{v:.4f}"
    return "" if v is None else str(v)


def to_markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines)


def build_tables(runs: Sequence[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    records = [read_run(Path(r)) for r in runs]
    check_comparable(records)
    summary = pd.DataFrame([_summary_row(r) for r in records])
    summary = summary.sort_values("next", ascending=False, na_position="last").reset_index(drop=True)
    windows = pd.concat([window_rows(r) for r in records], ignore_index=True)
    return summary, windows


def write_leaderboard(runs: Sequence[Path], out_dir: Path, echo: bool = True) -> pd.DataFrame:
    """Write leaderboard.md and leaderboard.csv into `out_dir`; print the Markdown if `echo`."""
    summary, windows = build_tables(runs)
    md = (
        "# genshift leaderboard\n\n"
        "NEXT = mean over k = 0..K−2 of the AUROC, after training window k, on window k+1's generators "
        "(fakes + their paired reals). seen_average = mean over k of the AUROC on windows 0..k. "
        "— = undefined (see windows.csv / metrics.json for the reason).\n\n"
        + to_markdown(summary)
        + "\n\n## AUROC per window\n\n"
        + to_markdown(windows)
        + "\n"
    )
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "leaderboard.md", md)
    wide = windows.pivot(index="experiment", columns="window", values=list(WINDOW_GROUPS))
    wide.columns = [f"auroc_{g}_w{k}" for g, k in wide.columns]
    csv = summary.merge(wide, left_on="experiment", right_index=True, how="left")
    atomic_write_text(out_dir / "leaderboard.csv", csv.to_csv(index=False))
    if echo:
        print(md)
        print(f"written: {out_dir / 'leaderboard.md'}, {out_dir / 'leaderboard.csv'}")
    return summary
