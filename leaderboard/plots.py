"""Leaderboard plots as PNG bytes (matplotlib, Agg backend): NEXT per window, R heat-map, per-generator bars,
ROC curves and reliability diagrams of the NEXT cells."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from leaderboard.groups import GENERATOR_PREFIX  # noqa: E402


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)  # fixed margins: one draw (layout engines or bbox "tight" redraw)
    plt.close(fig)
    return buf.getvalue()


def next_per_window(curves: Sequence[tuple[str, np.ndarray]],
                    upper: Sequence[tuple[str, np.ndarray]] = ()) -> bytes:
    """One line per run: R[k, k+1] (AUROC on the next window's group) against k; dashed: the AUROC of each
    upper-bound (`full`) row on the same window k+1."""
    fig, ax = plt.subplots(figsize=(7, 4))
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.13, top=0.92)
    for name, r in curves:
        k = np.arange(r.shape[0])
        values = np.array([r[i, i + 1] if i + 1 < r.shape[1] else np.nan for i in k])
        ax.plot(k, values, marker="o", label=name)
    for name, row in upper:
        k = np.arange(len(row) - 1)
        ax.plot(k, np.asarray(row)[1:], ls="--", marker=".", label=f"{name} (upper bound)")
    ax.set_xlabel("after training window k")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("AUROC on window k+1 (NEXT cell)")
    ax.set_title("NEXT per window")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize="small", loc="best")
    return png_bytes(fig)


def heatmap(name: str, r: np.ndarray) -> bytes:
    """R[k, j]: AUROC after window k (rows) on window j's group (columns); NaN cells blank."""
    n_rows, n_cols = r.shape
    fig, ax = plt.subplots(figsize=(1.6 + 0.6 * n_cols, 1.2 + 0.5 * n_rows))
    fig.subplots_adjust(left=0.14, right=0.88, bottom=0.14, top=0.9)  # room for the colour-bar labels
    im = ax.imshow(np.ma.masked_invalid(r), vmin=0.5, vmax=1.0, cmap="viridis")
    for k in range(n_rows):
        for j in range(n_cols):
            if not np.isnan(r[k, j]):
                ax.text(j, k, f"{r[k, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if r[k, j] < 0.8 else "black")
    ax.set_xlabel("evaluated on window j")
    ax.set_ylabel("after training window k")
    ax.set_xticks(range(n_cols))
    ax.set_yticks(range(n_rows))
    ax.set_title(f"R[k, j] (AUROC)\n{name}", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return png_bytes(fig)


def generator_bars(name: str, table: pd.DataFrame, k: int) -> bytes:
    """Per-generator AUROC (fakes of the generator + their paired reals) after window k."""
    t = table[(table["window"] == k) & (table["metric"] == "auroc") & table["group"].str.startswith(GENERATOR_PREFIX)]
    labels = [g[len(GENERATOR_PREFIX):] for g in t["group"]]
    values = t["value"].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.28 * len(labels) + 1.5), 4.6))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.36, top=0.92)  # room for rotated names
    ax.bar(range(len(labels)), np.nan_to_num(values, nan=0.0), color="tab:blue")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=75, ha="right", fontsize=7)
    ax.set_ylim(0.0, 1.0)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_ylabel("AUROC")
    ax.set_title(f"per-generator AUROC after window {k} — {name}", fontsize=9)
    return png_bytes(fig)


def roc_next(name: str, curves: Sequence[tuple[int, np.ndarray, np.ndarray, float]]) -> bytes:
    """ROC curve of every NEXT cell: (k, FPR, TPR, AUROC) = the model after window k on window k+1."""
    fig, ax = plt.subplots(figsize=(5.2, 5))
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.11, top=0.9)
    colours = plt.cm.viridis(np.linspace(0.0, 0.9, max(1, len(curves))))
    for (k, fpr, tpr, auroc), colour in zip(curves, colours, strict=False):
        ax.plot(fpr, tpr, color=colour, lw=1.2, label=f"k={k} → window {k + 1} (AUROC {auroc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("FPR (reals called fake)")
    ax.set_ylabel("TPR (fakes caught)")
    ax.set_title(f"ROC of the NEXT cells\n{name}", fontsize=8)
    if curves:
        ax.legend(fontsize="x-small", loc="lower right")
    return png_bytes(fig)


def reliability(name: str, curves: Sequence[tuple[int, np.ndarray, np.ndarray, float]]) -> bytes:
    """Reliability diagram of every NEXT cell: (k, mean P(fake), fraction of fakes, ECE) per equal-mass bin."""
    fig, ax = plt.subplots(figsize=(5.2, 5))
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.11, top=0.9)
    colours = plt.cm.viridis(np.linspace(0.0, 0.9, max(1, len(curves))))
    for (k, mean_score, fraction, ece), colour in zip(curves, colours, strict=False):
        ax.plot(mean_score, fraction, marker="o", ms=3, color=colour, lw=1.0,
                label=f"k={k} → window {k + 1} (ECE {ece:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="perfectly calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean P(fake) in the bin")
    ax.set_ylabel("fraction of fakes in the bin")
    ax.set_title(f"reliability of the NEXT cells (equal-mass bins)\n{name}", fontsize=8)
    ax.legend(fontsize="x-small", loc="upper left")
    return png_bytes(fig)


def test_per_window(title: str, curves: Sequence[tuple[str, np.ndarray]], windows: Sequence[int]) -> bytes:
    """One line per run: its AUROC on a test dataset after each window k (gaps where the window was not scored)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.13, top=0.9)
    for name, values in curves:
        ax.plot(list(windows), values, marker="o", label=name)
    ax.set_xlabel("after training window k")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("AUROC on the test dataset")
    ax.set_title(f"test dataset {title}", fontsize="small")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize="small", loc="best")
    return png_bytes(fig)
