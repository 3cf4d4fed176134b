"""Leaderboard over experiments, from stored predictions only (no model code): tables, CIs and plots.

`build_leaderboard` reads the runs, refuses incomparable ones, computes the continual aggregates
(`leaderboard.continual`) and their stratified-bootstrap CIs (`leaderboard.bootstrap`, one shared plan so
every run sees the same resamples), and the paired difference of each run's NEXT to the top run's.
`write_leaderboard` writes leaderboard.{md,csv,tex,html}, windows.csv and PNG plots into a directory.
"""

from __future__ import annotations

import base64
import html
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.atomic import atomic_write_bytes, atomic_write_text
from leaderboard import bootstrap as B
from leaderboard.crops import crop_counts
from leaderboard.runs import LeaderboardError, RunRecord, check_comparable, read_run

__all__ = ["LeaderboardError", "Leaderboard", "build_leaderboard", "write_leaderboard"]

CI_AGGREGATES = ("next", "seen_average", "future_average", "bwt", "forgetting")
# Displayed columns of the human tables: (csv key, header)
DISPLAY = (
    ("rank", "#"),
    ("experiment", "experiment"),
    ("detector", "detector"),
    ("mode", "mode"),
    ("seed", "seed"),
    ("input", "input"),
    ("windows", "windows"),
    ("next", "NEXT [95% CI]"),
    ("next_vs_top", "ΔNEXT vs #1 [95% CI]"),
    ("seen_average", "seen avg"),
    ("future_average", "future avg"),
    ("bwt", "BWT"),
    ("forgetting", "forgetting"),
    ("params", "params"),
    ("flops", "FLOPs"),
)
EXPLANATION = (
    "NEXT = mean over k = 0..K−2 of R[k, k+1], the AUROC after training window k on window k+1's "
    "generators (their fakes plus the reals paired to them); the last window has no next window and is not "
    "counted. seen avg = mean over k of the AUROC on windows 0..k pooled; future avg = mean over k < K−1 of "
    "the AUROC on windows k+1..K−1 pooled; BWT = mean over j < K−1 of R[K−1, j] − R[j, j]; forgetting = "
    "mean over j < K−1 of max over j ≤ k < K−1 of R[k, j] − R[K−1, j]. Brackets: 95 % percentile intervals of a "
    "stratified bootstrap ({n} replicates, seed {seed}: reals and fakes of each window resampled separately, "
    "the same resamples for every run). ΔNEXT vs #1: paired difference to the top run on the same "
    "resamples. — = undefined (incomplete run or single-class cell; see windows.csv)."
)


@dataclass
class Leaderboard:
    """Everything the writers need."""

    records: list[RunRecord]
    summary: pd.DataFrame  # one row per run, sorted by NEXT (csv columns)
    windows: pd.DataFrame  # long: experiment, window, group, metric, value
    plan: B.BootstrapPlan
    bootstraps: dict[str, B.RunBootstrap]


def _scalar(v):
    return None if v is None else v


def _row(r: RunRecord, ci: pd.DataFrame) -> dict:
    det = r.info.get("detector", {}) or {}
    cfg = r.info.get("config", {}) or {}
    summary = r.evaluation.summary.set_index("aggregate")
    row = {
        "experiment": r.name,
        "detector": det.get("name", "?"),
        "mode": det.get("mode", "?"),
        "seed": cfg.get("seed"),
        "benchmark": r.info.get("benchmark_type", "?"),
        "windows": f"{r.n_windows_done}/{r.n_windows}",
    }
    pipe = r.pipeline
    row |= {"eval_pipeline": pipe["pipeline"], "eval_input": pipe["input"], "eval_normalize": pipe["normalize"],
            "crops_per_image": float(crop_counts(r.windows[0]).mean())}
    row["input"] = f"{pipe['pipeline']} {pipe['input']} ({pipe['normalize']})"
    ci = ci.set_index("aggregate")
    for name in CI_AGGREGATES:
        row[name] = float(summary.loc[name, "value"])
        row[f"{name}_ci_low"] = float(ci.loc[name, "ci_low"])
        row[f"{name}_ci_high"] = float(ci.loc[name, "ci_high"])
    row["next_reference_variant_last_on_itself"] = float(summary.loc["next_reference_variant_last_on_itself", "value"])
    row["params"] = _scalar(det.get("n_params"))
    row["trainable_params"] = _scalar(det.get("n_trainable"))
    row["flops"] = _scalar(det.get("flops"))
    row["path"] = str(r.path)
    return row


def _long_windows(r: RunRecord) -> pd.DataFrame:
    t = r.evaluation.table[["window", "group", "metric", "value"]].copy()
    t.insert(0, "experiment", r.name)
    return t


def build_leaderboard(
    runs: Sequence[Path],
    n_replicates: int = B.DEFAULT_REPLICATES,
    seed: int = 0,
    level: float = B.DEFAULT_LEVEL,
    timings: dict[str, float] | None = None,
) -> Leaderboard:
    """Read, check, evaluate and bootstrap the runs; rows sorted by NEXT (best first, undefined last)."""
    if not runs:
        raise LeaderboardError("no run given; pass one or more run directories")
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    records = [read_run(Path(p)) for p in runs]
    check_comparable(records)
    timings["read_and_metrics"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    layout = B.eval_layout(records[0].windows[0], str(records[0].path))
    for r in records:
        other = B.eval_layout(r.windows[0], str(r.path))
        if other.digest != layout.digest:
            raise LeaderboardError(
                f"{r.path} and {records[0].path} share a manifest checksum but score different eval sets "
                f"(identifiers, generators or pairing differ); they cannot be compared"
            )
    plan = B.make_plan(layout, n_replicates, seed, level)
    boots: dict[str, B.RunBootstrap] = {}
    rows = []
    for r in records:
        boot = B.bootstrap_run(r.windows, plan, str(r.path))
        boots[r.name] = boot
        point = r.evaluation.summary.set_index("aggregate")["value"].to_dict()
        rows.append(_row(r, B.confidence_intervals(boot, point, level)))
    summary = pd.DataFrame(rows)
    summary = summary.sort_values("next", ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    summary.insert(0, "rank", np.arange(1, len(summary) + 1))
    top = summary.iloc[0]
    diffs = [
        B.paired_difference(boots[name], boots[top["experiment"]], "next", value, float(top["next"]), level)
        for name, value in zip(summary["experiment"], summary["next"], strict=True)
    ]
    summary["next_vs_top"] = [d["difference"] for d in diffs]
    summary["next_vs_top_ci_low"] = [d["ci_low"] for d in diffs]
    summary["next_vs_top_ci_high"] = [d["ci_high"] for d in diffs]
    summary["next_vs_top_p"] = [d["p_two_sided"] for d in diffs]
    timings["bootstrap"] = time.perf_counter() - t0
    windows = pd.concat([_long_windows(r) for r in records], ignore_index=True)
    return Leaderboard(records, summary, windows, plan, boots)


def _num(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.{digits}f}"
    return str(v)


def _count(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    v = float(v)
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.2f}{unit}"
    return f"{v:g}"


def _with_ci(row, key: str) -> str:
    value = row[key]
    if value is None or np.isnan(value):
        return "—"
    lo, hi = row[f"{key}_ci_low"], row[f"{key}_ci_high"]
    if np.isnan(lo):
        return _num(value)
    return f"{value:.4f} [{lo:.4f}, {hi:.4f}]"


def display_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The human-readable table (strings) shown in Markdown, LaTeX and HTML."""
    out = {}
    for key, header in DISPLAY:
        if key in ("next", "next_vs_top"):
            out[header] = [_with_ci(row, key) for _, row in summary.iterrows()]
        elif key in ("params", "flops"):
            out[header] = [_count(v) for v in summary[key]]
        else:
            out[header] = [_num(v) for v in summary[key]]
    return pd.DataFrame(out)


def to_markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    esc = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


_TEX_SPECIAL = re.compile(r"([&%$#_{}])")


def _tex(v: str) -> str:
    v = _TEX_SPECIAL.sub(r"\\\1", str(v)).replace("~", r"\textasciitilde{}").replace("^", r"\^{}")
    return v.replace("—", "--").replace("Δ", r"$\Delta$").replace("≤", r"$\le$")


def to_latex(df: pd.DataFrame, caption: str) -> str:
    cols = list(df.columns)
    lines = [
        r"\begin{table}[t]", r"\centering", r"\small",
        r"\begin{tabular}{" + "l" * len(cols) + "}", r"\hline",
        " & ".join(_tex(c) for c in cols) + r" \\", r"\hline",
    ]
    lines += [" & ".join(_tex(v) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\hline", r"\end{tabular}", r"\caption{" + _tex(caption) + "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def html_table(df: pd.DataFrame, table_id: str) -> str:
    """An escaped HTML table of ``df`` (header row + one row per record), shared by every leaderboard section."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>\n"
        for row in df.itertuples(index=False)
    )
    return f"<table id='{table_id}'><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>\n"


def html_figure(title: str, png: bytes) -> str:
    """A PNG embedded as a base64 <figure> with its caption (the HTML file stands alone)."""
    return (f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            f"<figcaption>{html.escape(title)}</figcaption></figure>\n")


def to_html(df: pd.DataFrame, explanation: str, images: Sequence[tuple[str, bytes]]) -> str:
    figs = "".join(html_figure(title, png) for title, png in images)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>genshift leaderboard</title>\n<style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#eee}"
        "figure{display:inline-block;margin:1em}</style></head><body>\n"
        f"<h1>genshift leaderboard</h1>\n<p>{html.escape(explanation)}</p>\n"
        f"{html_table(df, 'leaderboard')}"
        f"<h2>Plots</h2>\n{figs}</body></html>\n"
    )


def safe_name(name: str) -> str:
    """A run name usable in a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _plots(lb: Leaderboard) -> list[tuple[str, str, bytes]]:
    from leaderboard import plots

    out = [("NEXT per window (AUROC on window k+1 after training window k)", "next_per_window.png",
            plots.next_per_window([(r.name, r.evaluation.auroc_matrix) for r in lb.records]))]
    for r in lb.records:
        out.append((f"R heat-map: {r.name}", f"heatmap_{safe_name(r.name)}.png",
                    plots.heatmap(r.name, r.evaluation.auroc_matrix)))
        k = r.n_windows_done - 1
        out.append((f"per-generator AUROC after window {k}: {r.name}", f"generators_{safe_name(r.name)}.png",
                    plots.generator_bars(r.name, r.evaluation.table, k)))
    return out


def write_leaderboard(
    runs: Sequence[Path],
    out_dir: Path,
    echo: bool = True,
    n_replicates: int = B.DEFAULT_REPLICATES,
    seed: int = 0,
    level: float = B.DEFAULT_LEVEL,
    timings: dict[str, float] | None = None,
) -> pd.DataFrame:
    """Write leaderboard.{md,csv,tex,html}, windows.csv and PNG plots into `out_dir`; return the summary."""
    timings = {} if timings is None else timings
    lb = build_leaderboard(runs, n_replicates, seed, level, timings)
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    explanation = EXPLANATION.format(n=n_replicates, seed=seed)
    table = display_table(lb.summary)
    md = f"# genshift leaderboard\n\n{explanation}\n\n{to_markdown(table)}\n"
    from leaderboard import localization_view as LV  # localization.csv + sections; None when no run has maps

    loc = LV.write_localization_view(lb.records, out_dir)
    md += loc.markdown if loc else ""
    from leaderboard import robustness_view as RV

    rob = RV.write_section(lb, out_dir)  # leaderboard_robustness.csv + md/html sections; empty if no run has one
    md += rob.markdown
    atomic_write_text(out_dir / "leaderboard.md", md)
    atomic_write_text(out_dir / "leaderboard.csv", lb.summary.to_csv(index=False))
    atomic_write_text(out_dir / "leaderboard.tex", to_latex(table, "genshift leaderboard. " + explanation))
    atomic_write_text(out_dir / "windows.csv", lb.windows.to_csv(index=False))
    figures = _plots(lb)
    for _, filename, png in figures:
        atomic_write_bytes(out_dir / filename, png)
    atomic_write_text(
        out_dir / "leaderboard.html",
        LV.insert_html(to_html(table, explanation, [(t, png) for t, _, png in figures]),
                       (loc.html if loc else "") + rob.html),
    )
    timings["write"] = time.perf_counter() - t0
    if echo:
        print(md)
        print(f"written to {out_dir}: leaderboard.md/.csv/.tex/.html, windows.csv, {len(figures)} PNG plots")
    return lb.summary
