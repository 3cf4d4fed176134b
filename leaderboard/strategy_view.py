"""Continual-learning strategies in the leaderboard: each run's `cl_strategy` label, the per-strategy comparison
plot (NEXT against seen average, one point per run, 95 % intervals on both axes), and every strategy's paired
differences to the `naive` run of the same detector, seed and benchmark type (same bootstrap resamples).

Reads run.json only: ``cl_strategy`` (the strategy with its resolved parameters), else the config's section;
runs that record neither (older genshift runs, AI-GenBench's own experiments) fine-tuned: `naive`.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.atomic import atomic_write_bytes, atomic_write_text

TABLE_FILE = "strategies.csv"
PLOT_FILE = "strategies.png"
NAIVE = "naive"
COMPARED = ("bwt", "forgetting", "next", "seen_average")
EXPLANATION = (
    "Each continual-learning strategy against the naive (fine-tuning) run of the same detector, seed and "
    "benchmark type: Δ = strategy − naive on the same bootstrap resamples (paired), with its 95 % interval and "
    "two-sided p. A positive ΔBWT or negative Δforgetting means less forgetting; an interval that excludes 0 is a "
    "difference the eval set resolves. The plot shows every run's NEXT against its seen average (95 % intervals)."
)


@dataclass
class Section:
    """What `write_leaderboard` appends: Markdown and HTML parts, the files written, the plot for the HTML."""

    markdown: str = ""
    html: str = ""
    files: tuple[str, ...] = ()


def strategy_of(info: Mapping) -> dict:
    """The run's strategy ``{"name": ..., **params}`` from run.json (naive when it records none)."""
    found = info.get("cl_strategy") or (info.get("config") or {}).get("cl_strategy")
    if isinstance(found, str):
        return {"name": found}
    return dict(found) if isinstance(found, Mapping) and found.get("name") else {"name": NAIVE}


def strategy_label(info: Mapping) -> str:
    """'ewc(gamma=1.0, lambda=100.0)', or 'naive': the name and its parameters as tables show them."""
    s = strategy_of(info)
    params = {k: v for k, v in s.items() if k != "name"}
    return str(s["name"]) + ("(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")" if params else "")


def _partner_key(r) -> tuple:
    det = (r.info.get("detector") or {}).get("name")
    return det, (r.info.get("config") or {}).get("seed"), r.info.get("benchmark_type")


def paired_vs_naive(lb) -> pd.DataFrame:
    """One row per non-naive run that has a naive partner: the paired differences of COMPARED aggregates."""
    from leaderboard import bootstrap as B

    summary = lb.summary.set_index("experiment")
    naive = {}
    for r in lb.records:  # the first naive run per (detector, seed, benchmark type), in leaderboard order
        if strategy_of(r.info)["name"] == NAIVE:
            naive.setdefault(_partner_key(r), r.name)
    rows = []
    for r in lb.records:
        s = strategy_of(r.info)
        partner = naive.get(_partner_key(r))
        if s["name"] == NAIVE or partner is None:
            continue
        row = {"experiment": r.name, "cl_strategy": strategy_label(r.info), "vs": partner}
        for agg in COMPARED:
            d = B.paired_difference(lb.bootstraps[r.name], lb.bootstraps[partner], agg,
                                    float(summary.loc[r.name, agg]), float(summary.loc[partner, agg]), lb.plan.level)
            row |= {f"d_{agg}": d["difference"], f"d_{agg}_ci_low": d["ci_low"], f"d_{agg}_ci_high": d["ci_high"],
                    f"d_{agg}_p": d["p_two_sided"]}
        rows.append(row)
    return pd.DataFrame(rows)


def _ci(row, key: str) -> str:
    v, lo, hi = row[key], row[f"{key}_ci_low"], row[f"{key}_ci_high"]
    if v is None or np.isnan(v):
        return "—"
    return f"{v:+.4f}" if np.isnan(lo) else f"{v:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "experiment": table["experiment"], "strategy": table["cl_strategy"], "vs naive run": table["vs"],
        **{header: [_ci(row, f"d_{key}") for _, row in table.iterrows()]
           for key, header in (("bwt", "ΔBWT [95% CI]"), ("forgetting", "Δforgetting [95% CI]"),
                               ("next", "ΔNEXT [95% CI]"), ("seen_average", "Δseen avg [95% CI]"))},
        "p (ΔBWT)": [f"{p:.3f}" if p == p else "—" for p in table["d_bwt_p"]],
    })


def comparison_plot(summary: pd.DataFrame) -> bytes:
    """NEXT (y) against seen average (x): one point per run with 95 % intervals, one colour per strategy."""
    from leaderboard.plots import _png, plt

    fig, ax = plt.subplots(figsize=(7, 5))
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.11, top=0.92)
    names = list(dict.fromkeys(summary["strategy_name"]))
    colours = plt.get_cmap("tab10")
    for i, name in enumerate(names):
        part = summary[summary["strategy_name"] == name]
        ok = part["next"].notna() & part["seen_average"].notna()
        part = part[ok]
        if part.empty:
            continue
        xerr = np.vstack([part["seen_average"] - part["seen_average_ci_low"],
                          part["seen_average_ci_high"] - part["seen_average"]])
        yerr = np.vstack([part["next"] - part["next_ci_low"], part["next_ci_high"] - part["next"]])
        ax.errorbar(part["seen_average"], part["next"], xerr=np.nan_to_num(xerr), yerr=np.nan_to_num(yerr),
                    fmt="o", color=colours(i % 10), ecolor=colours(i % 10), alpha=0.85, capsize=3, label=name)
    values = summary[["next_ci_low", "next_ci_high", "seen_average_ci_low", "seen_average_ci_high", "next",
                      "seen_average"]].to_numpy(dtype=float)
    if np.isfinite(values).any():  # the runs' region, with the NEXT = seen average diagonal across it
        lo, hi = float(np.nanmin(values)) - 0.02, min(1.0, float(np.nanmax(values)) + 0.02)
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--", label="NEXT = seen avg")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
    ax.set_xlabel("seen average (AUROC on windows 0..k, mean over k)")
    ax.set_ylabel("NEXT (AUROC on window k+1)")
    ax.set_title("continual-learning strategies: NEXT vs seen average (95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    return _png(fig)


def write_section(lb, out_dir: Path) -> Section:
    """strategies.csv and strategies.png plus the md/html sections, when the runs use a strategy besides naive."""
    from leaderboard.report import html_figure, html_table, to_markdown

    names = [strategy_of(r.info)["name"] for r in lb.records]
    if set(names) <= {NAIVE}:
        return Section()
    out_dir = Path(out_dir)
    summary = lb.summary.copy()
    by_name = {r.name: strategy_of(r.info)["name"] for r in lb.records}
    summary["strategy_name"] = summary["experiment"].map(by_name)
    png = comparison_plot(summary)
    atomic_write_bytes(out_dir / PLOT_FILE, png)
    table = paired_vs_naive(lb)
    files = [PLOT_FILE]
    md = [f"\n## Continual-learning strategies\n\n{EXPLANATION}\n\n"]
    section_html = f"<h2 id='strategies'>Continual-learning strategies</h2>\n<p>{html.escape(EXPLANATION)}</p>\n"
    if not table.empty:
        atomic_write_text(out_dir / TABLE_FILE, table.to_csv(index=False))
        files.insert(0, TABLE_FILE)
        shown = display_table(table)
        md.append(to_markdown(shown) + "\n")
        section_html += html_table(shown, "strategies-table")
    else:
        md.append("(no naive run of the same detector, seed and benchmark type to compare with)\n")
    md.append(f"\n![NEXT vs seen average per strategy]({PLOT_FILE})\n")
    section_html += html_figure("NEXT vs seen average per strategy (95% CI)", png)
    return Section("".join(md), section_html, tuple(files))
