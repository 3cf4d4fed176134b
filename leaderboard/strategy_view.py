"""Continual-learning strategies in the leaderboard: the per-strategy comparison plot (NEXT against seen average,
one point per row, 95 % intervals on both axes) and every strategy's paired differences to the `naive` row of the
same configuration otherwise (same eval resamples).

A row's strategy is its `cl_strategy` variant field (leaderboard.variants: the npz's `cl_strategy` with its
parameters, else run.json's config; runs that record none fine-tuned: `naive`). Rows are the leaderboard's
configurations, seeds pooled; a strategy row's partner is the naive row of the same table whose configuration
differs only in `cl_strategy` (detector, benchmark type, training recipe, seeds' configuration all equal).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.atomic import atomic_write_bytes, atomic_write_text

TABLE_FILE = "strategies.csv"
PLOT_FILE = "strategies.png"
NAIVE = "naive"
COMPARED = ("bwt", "forgetting", "next", "seen_average")
EXPLANATION = (
    "Each continual-learning strategy against the naive (fine-tuning) row whose configuration differs only in the "
    "strategy: Δ = strategy − naive on the same eval resamples (paired; seeds drawn independently per row), with "
    "its 95 % interval and two-sided p. A positive ΔBWT or a negative Δforgetting means less forgetting; an interval "
    "that excludes 0 is a difference the eval set and the seeds resolve. The plot shows every row's NEXT against "
    "its seen average (95 % intervals)."
)


@dataclass
class Section:
    """What `write_leaderboard` appends: Markdown and HTML parts, the files written."""

    markdown: str = ""
    html: str = ""
    files: tuple[str, ...] = ()


def label_name(label: str) -> str:
    """The strategy name of a `cl_strategy` field value ('ewc(gamma=1.0, …)' -> 'ewc')."""
    return str(label).split("(", 1)[0]


def _partner_key(conf) -> str:
    """What a strategy row and its naive partner share: the table, every variant field but the strategy, and the
    configuration without the strategy (and without seeds and operational keys)."""
    from leaderboard import variants as V

    r = conf.records[0]
    fields = {k: v for k, v in r.fields.items() if k != "cl_strategy"}
    config = V._without(r.info.get("config") or {}, (*V.OPERATIONAL_KEYS, "cl_strategy"))
    return json.dumps({"table": conf.table, "fields": fields, "config": config}, sort_keys=True, default=str)


def paired_vs_naive(lb) -> pd.DataFrame:
    """One row per non-naive (continual) row that has a naive partner: paired differences of COMPARED aggregates."""
    from leaderboard import pooling as P

    level = next(iter(lb.plans.values())).level
    confs = [c for c in lb.configurations if not c.is_full]
    naive: dict[str, object] = {}
    for c in confs:  # the first naive row per partner key, in leaderboard order
        if label_name(c.records[0].fields["cl_strategy"]) == NAIVE:
            naive.setdefault(_partner_key(c), c)
    rows = []
    for c in confs:
        label = c.records[0].fields["cl_strategy"]
        partner = naive.get(_partner_key(c))
        if label_name(label) == NAIVE or partner is None:
            continue
        row = {"group": c.table or "all", "experiment": c.name, "cl_strategy": label, "n_seeds": len(c.records),
               "vs": partner.name, "vs_n_seeds": len(partner.records)}
        for agg in COMPARED:
            a, b = c.pooled[agg], partner.pooled[agg]
            d = P.paired_difference(a.replicates, b.replicates, a.value - b.value, level)
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
    out = {"experiment": table["experiment"], "strategy": table["cl_strategy"], "seeds": table["n_seeds"],
           "vs naive row": table["vs"]}
    if table["group"].nunique() > 1:
        out = {"group": table["group"], **out}
    return pd.DataFrame({
        **out,
        **{header: [_ci(row, f"d_{key}") for _, row in table.iterrows()]
           for key, header in (("bwt", "ΔBWT [95% CI]"), ("forgetting", "Δforgetting [95% CI]"),
                               ("next", "ΔNEXT [95% CI]"), ("seen_average", "Δseen avg [95% CI]"))},
        "p (ΔBWT)": [f"{p:.3f}" if p == p else "—" for p in table["d_bwt_p"]],
    })


def comparison_plot(summary: pd.DataFrame, title_suffix: str = "") -> bytes:
    """NEXT (y) against seen average (x): one point per row with 95 % intervals, one colour per strategy."""
    from leaderboard.plots import plt, png_bytes

    fig, ax = plt.subplots(figsize=(7, 5))
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.11, top=0.92)
    labels = list(dict.fromkeys(summary["cl_strategy"]))
    colours = plt.get_cmap("tab10")
    for i, label in enumerate(labels):
        part = summary[summary["cl_strategy"] == label]
        part = part[part["next"].notna() & part["seen_average"].notna()]
        if part.empty:
            continue
        xerr = np.vstack([part["seen_average"] - part["seen_average_ci_low"],
                          part["seen_average_ci_high"] - part["seen_average"]])
        yerr = np.vstack([part["next"] - part["next_ci_low"], part["next_ci_high"] - part["next"]])
        ax.errorbar(part["seen_average"], part["next"], xerr=np.nan_to_num(xerr), yerr=np.nan_to_num(yerr),
                    fmt="o", color=colours(i % 10), ecolor=colours(i % 10), alpha=0.85, capsize=3, label=label)
    values = summary[["next_ci_low", "next_ci_high", "seen_average_ci_low", "seen_average_ci_high", "next",
                      "seen_average"]].to_numpy(dtype=float)
    if np.isfinite(values).any():  # the rows' region, with the NEXT = seen average diagonal across it
        lo, hi = float(np.nanmin(values)) - 0.02, min(1.0, float(np.nanmax(values)) + 0.02)
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--", label="NEXT = seen avg")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
    ax.set_xlabel("seen average (AUROC on windows 0..k, mean over k)")
    ax.set_ylabel("NEXT (AUROC on window k+1)")
    ax.set_title(f"continual-learning strategies: NEXT vs seen average (95% CI){title_suffix}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    return png_bytes(fig)


def write_section(lb, out_dir: Path) -> Section:
    """strategies.csv and strategies[_<group>].png plus the md/html sections, when a row uses a strategy besides
    naive (nothing otherwise)."""
    from leaderboard.render import html_figure, html_table, safe_name, to_markdown

    rows = lb.summary[lb.summary["rank"].notna()]  # continual rows (upper-bound `full` rows have no rank)
    if rows.empty or set(rows["cl_strategy"].map(label_name)) <= {NAIVE}:
        return Section()
    out_dir = Path(out_dir)
    files: list[str] = []
    md = [f"\n## Continual-learning strategies\n\n{EXPLANATION}\n\n"]
    section_html = f"<h2 id='strategies'>Continual-learning strategies</h2>\n<p>{html.escape(EXPLANATION)}</p>\n"
    table = paired_vs_naive(lb)
    if not table.empty:
        atomic_write_text(out_dir / TABLE_FILE, table.to_csv(index=False))
        files.append(TABLE_FILE)
        shown = display_table(table)
        md.append(to_markdown(shown) + "\n")
        section_html += html_table(shown, "strategies-table")
    else:
        md.append("(no naive row of the same configuration to compare with)\n")
    for group in dict.fromkeys(rows["group"]):
        part = rows[rows["group"] == group]
        if set(part["cl_strategy"].map(label_name)) <= {NAIVE}:
            continue
        filename = PLOT_FILE if group == "all" else f"strategies_{safe_name(str(group))}.png"
        suffix = "" if group == "all" else f" — {group}"
        png = comparison_plot(part, suffix)
        atomic_write_bytes(out_dir / filename, png)
        files.append(filename)
        md.append(f"\n![NEXT vs seen average per strategy{suffix}]({filename})\n")
        section_html += html_figure(f"NEXT vs seen average per strategy (95% CI){suffix}", png)
    return Section("".join(md), section_html, tuple(files))
