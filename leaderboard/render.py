"""Rendering helpers every leaderboard view shares: Markdown and HTML tables, embedded PNG figures, safe file
names, and the fixed-width text frames of `genshift inspect`. A leaf module: the report and its views import it,
it imports none of them."""

from __future__ import annotations

import base64
import html
import re

import pandas as pd


def to_markdown(df: pd.DataFrame) -> str:
    """A Markdown table of ``df`` (pipes in cells escaped)."""
    cols = list(df.columns)
    esc = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


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


def safe_name(name: str) -> str:
    """A run name usable in a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def fmt_frame(df: pd.DataFrame) -> str:
    """``df`` as fixed-width text (4 decimals), as `genshift inspect` prints its tables."""
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_rows", 500):
        return df.to_string(index=False, float_format=lambda v: f"{v:.4f}")
