"""Video-track views of predictions files: video- and segment-level metrics, the manipulation × compression table
(as in LRNet's README) and ROC curves per manipulation. Reads npz files only.

A video-track file (a window's predictions.npz of a sequence run, or `genshift predict`'s) has one row per video
(`fused_*`, with `fused_compression`) and its items: segments (`segment_scores`, `segment_video` = row) or
frames (`frame_scores`, `frame_video`). A cell "method × compression" holds that method's fake videos at that
compression level and every real video at the same level (LRNet's tables: a manipulation's test fakes against
the real test videos); `all` pools the levels (or the methods). Rows without a score (NaN: a video without
a segment in `genshift predict`) are left out and counted.

Metrics: AUROC (Mann–Whitney, ties ½; leaderboard.metrics) and accuracy at 0.5 (LRNet's: a video is called fake
when its score is >= 0.5), at video level and at item (segment or frame) level, where an item carries its
video's label.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from common.safe_npz import npz_keys, read_npz
from leaderboard.metrics import roc_auc

ALL = "all"
TABLE_COLUMNS = ("method", "compression", "n_fake", "n_real", "n_unscored", "video_auroc", "video_accuracy",
                 "item_auroc", "item_accuracy")


def is_video_file(arrays: Mapping[str, np.ndarray]) -> bool:
    """Whether the arrays are a video-track file (rows are videos with items)."""
    return "fused_compression" in arrays and ("segment_scores" in arrays or "frame_scores" in arrays)


def items(arrays: Mapping[str, np.ndarray]) -> tuple[str, np.ndarray, np.ndarray]:
    """(item kind, item scores, item row) — segments or frames."""
    if "segment_scores" in arrays:
        return "segment", np.asarray(arrays["segment_scores"], np.float64), np.asarray(arrays["segment_video"])
    return "frame", np.asarray(arrays["frame_scores"], np.float64), np.asarray(arrays["frame_video"])


def _methods(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    names = np.asarray(arrays["generator_id_to_name"])
    return names[np.asarray(arrays["fused_generator_ids"]).astype(np.int64)]


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    return float(roc_auc(y, s))


def _accuracy(y: np.ndarray, s: np.ndarray) -> float:
    return float(np.mean((s >= 0.5).astype(np.int64) == y)) if y.size else float("nan")


def cell(arrays: Mapping[str, np.ndarray], rows: np.ndarray) -> dict:
    """Metrics of the videos selected by the boolean mask ``rows`` (and of their items)."""
    y = np.asarray(arrays["fused_labels"]).astype(np.int64)
    s = np.asarray(arrays["fused_scores"]).astype(np.float64)
    scored = rows & ~np.isnan(s)
    _, item_s, item_row = items(arrays)
    pick = scored[item_row]
    iy, is_ = y[item_row][pick], item_s[pick]
    return {"n_fake": int((y[scored] == 1).sum()), "n_real": int((y[scored] == 0).sum()),
            "n_unscored": int((rows & np.isnan(s)).sum()),
            "video_auroc": _auroc(y[scored], s[scored]), "video_accuracy": _accuracy(y[scored], s[scored]),
            "item_auroc": _auroc(iy, is_), "item_accuracy": _accuracy(iy, is_)}


def manipulation_table(arrays: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Long table: every method (and `all`) × every compression level (and `all`), see the module docstring."""
    y = np.asarray(arrays["fused_labels"]).astype(np.int64)
    method = _methods(arrays)
    comp = np.asarray(arrays["fused_compression"]).astype(str)
    methods = sorted({str(m) for m in method[y == 1]}) + [ALL]
    levels = sorted(set(comp.tolist())) + [ALL]
    out = []
    for mth in methods:
        fakes = (y == 1) & ((method == mth) if mth != ALL else True)
        for c in levels:
            at = (comp == c) if c != ALL else np.ones_like(y, dtype=bool)
            rows = at & (fakes | (y == 0))
            out.append({"method": mth, "compression": c, **cell(arrays, rows)})
    return pd.DataFrame(out, columns=list(TABLE_COLUMNS))


def pivot(table: pd.DataFrame, metric: str = "video_auroc") -> pd.DataFrame:
    """Methods as rows, compression levels as columns (LRNet's README layout)."""
    wide = table.pivot(index="method", columns="compression", values=metric)
    cols = [c for c in wide.columns if c != ALL] + [ALL]
    rows = [r for r in wide.index if r != ALL] + [ALL]
    return wide.reindex(index=rows, columns=cols)


def _fmt(v: float) -> str:
    return "—" if v != v else f"{100 * v:.2f}"


def markdown_tables(table: pd.DataFrame, item_kind: str) -> str:
    """The video AUROC, video accuracy and item AUROC grids as Markdown (percent, as LRNet reports them)."""
    parts = []
    for metric, title in (("video_auroc", "video-level AUROC (%)"), ("video_accuracy", "video-level accuracy (%)"),
                          ("item_auroc", f"{item_kind}-level AUROC (%)")):
        wide = pivot(table, metric)
        head = "| method | " + " | ".join(str(c) for c in wide.columns) + " |"
        lines = [f"**{title}**", "", head, "|" + "---|" * (len(wide.columns) + 1)]
        for m, row in wide.iterrows():
            lines.append(f"| {m} | " + " | ".join(_fmt(v) for v in row.tolist()) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def roc_points(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct score, highest first, from (0, 0)."""
    order = np.argsort(s, kind="stable")[::-1]
    s, y = s[order], y[order]
    ends = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y)[ends]
    fps = ends + 1 - tps
    return np.r_[0.0, fps / max(int((y == 0).sum()), 1)], np.r_[0.0, tps / max(int(y.sum()), 1)]


def roc_png(arrays: Mapping[str, np.ndarray], method: str, title: str) -> bytes | None:
    """ROC curves of one manipulation against the reals: one curve per compression level plus all pooled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(arrays["fused_labels"]).astype(np.int64)
    s = np.asarray(arrays["fused_scores"]).astype(np.float64)
    mth = _methods(arrays)
    comp = np.asarray(arrays["fused_compression"]).astype(str)
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    fig.subplots_adjust(left=0.15, right=0.97, bottom=0.12, top=0.9)
    drawn = 0
    for c in sorted(set(comp.tolist())) + [ALL]:
        rows = ((mth == method) | (y == 0)) & ((comp == c) if c != ALL else True) & ~np.isnan(s)
        if rows.sum() == 0 or y[rows].min() == y[rows].max():
            continue
        fpr, tpr = roc_points(y[rows], s[rows])
        ax.plot(fpr, tpr, lw=2.2 if c == ALL else 1.2, label=f"{c} (AUROC {_auroc(y[rows], s[rows]):.3f})")
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate (reals)")
    ax.set_ylabel("true positive rate (fakes)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize="small", loc="lower right")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def write_views(arrays: Mapping[str, np.ndarray], out_dir: Path, prefix: str = "", title: str = "") -> list[Path]:
    """manipulations.csv, manipulations.md and roc_<method>.png (one per manipulation) into ``out_dir``."""
    from common.atomic import atomic_write_bytes, atomic_write_text

    out_dir = Path(out_dir)
    table = manipulation_table(arrays)
    kind, _, _ = items(arrays)
    written = [out_dir / f"{prefix}manipulations.csv", out_dir / f"{prefix}manipulations.md"]
    atomic_write_text(written[0], table.to_csv(index=False))
    atomic_write_text(written[1], f"# {title or 'video track'}\n\n{markdown_tables(table, kind)}")
    for method in sorted(set(table["method"]) - {ALL}):
        png = roc_png(arrays, method, f"{method} vs real — {title}" if title else f"{method} vs real")
        if png is not None:
            path = out_dir / f"{prefix}roc_{safe(method)}.png"
            atomic_write_bytes(path, png)
            written.append(path)
    return written


def report(arrays: Mapping[str, np.ndarray]) -> str:
    """Text for `genshift inspect`: overall video/item metrics and the manipulation × compression grids."""
    kind, item_s, _ = items(arrays)
    table = manipulation_table(arrays)
    total = table[(table["method"] == ALL) & (table["compression"] == ALL)].iloc[0]
    profile = str(arrays["sequence_profile"]) if "sequence_profile" in arrays else None
    agg = str(arrays.get("sequence_aggregate", arrays.get("frame_aggregate", "")))
    lines = [
        f"video track: {len(arrays['fused_scores'])} videos, {item_s.size} {kind}s"
        + (f", profile {profile}" if profile else "") + (f", video score = {agg} of its {kind}s" if agg else ""),
        f"video level: AUROC {total['video_auroc']:.4f}, accuracy {total['video_accuracy']:.4f} "
        f"({total['n_fake']} fake, {total['n_real']} real, {total['n_unscored']} without a score); "
        f"{kind} level: AUROC {total['item_auroc']:.4f}, accuracy {total['item_accuracy']:.4f}",
        "",
        markdown_tables(table, kind),
    ]
    return "\n".join(lines)


def is_predict_file(path: str | Path) -> bool:
    """Whether an .npz was written by `genshift predict` (its `kind` key); unreadable files are refused."""
    if "kind" not in npz_keys(path):
        return False
    return str(read_npz(path)["kind"]) == "predict"


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of a predictions file, through the safe reader (no pickles)."""
    return read_npz(path)


def window_rows(experiment: str, windows: list[Mapping[str, np.ndarray]]) -> pd.DataFrame:
    """Long rows (experiment, window, method, compression, metrics) of every window of a sequence run."""
    frames = []
    for k, arrays in enumerate(windows):
        if not is_video_file(arrays):
            continue
        t = manipulation_table(arrays)
        t.insert(0, "window", k)
        t.insert(0, "experiment", experiment)
        frames.append(t)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_leaderboard_section(records, out_dir: Path) -> tuple[str, str]:
    """For runs whose windows are video-track files: video.csv (every window), per-run manipulation grids of the
    last finished window and its ROC PNGs; returns (markdown, html) sections ('' when no run is a video run)."""
    from common.atomic import atomic_write_text

    frames, md, html_parts = [], [], []
    for r in records:
        rows = window_rows(r.name, r.windows)
        if rows.empty:
            continue
        frames.append(rows)
        k = len(r.windows) - 1
        last = r.windows[k]
        kind, _, _ = items(last)
        pngs = write_views(last, out_dir, prefix=f"video_{safe(r.name)}_", title=f"{r.name}, after window {k}")
        allrows = rows[(rows["method"] == ALL) & (rows["compression"] == ALL)]
        across = "\n".join(f"| {int(w)} | {_fmt(v)} | {_fmt(a)} | {_fmt(i)} |" for w, v, a, i in
                           allrows[["window", "video_auroc", "video_accuracy", "item_auroc"]].itertuples(index=False))
        md.append(f"### {r.name}\n\nAcross windows (whole eval split):\n\n| window | video AUROC (%) | video "
                  f"accuracy (%) | {kind} AUROC (%) |\n|---|---|---|---|\n{across}\n\nAfter window {k}:\n\n"
                  + markdown_tables(manipulation_table(last), kind)
                  + "\nROC curves: " + ", ".join(p.name for p in pngs if p.suffix == ".png") + "\n")
        html_parts.append(pngs)
    if not frames:
        return "", ""
    atomic_write_text(Path(out_dir) / "video.csv", pd.concat(frames, ignore_index=True).to_csv(index=False))
    markdown = "\n## Video track\n\nPer manipulation × compression: a method's fake videos at a level against the " \
               "real videos at that level (`all` pools); video.csv holds every window.\n\n" + "\n".join(md)
    import base64
    import html as _html

    figs = "".join(
        f'<figure><img alt="{_html.escape(p.name)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{_html.escape(p.name)}</figcaption></figure>\n'
        for pngs in html_parts for p in pngs if p.suffix == ".png")
    return markdown, f"<h2>Video track</h2>\n{figs}"
