"""Localization track views: read a window's ``localization.npz`` (numpy only), score it against the all-ones and
all-zeros baselines, and show it in ``genshift leaderboard`` (localization.csv, Markdown/HTML section) and
``genshift inspect``.

The file (written by ``protocols.localization``) holds the P(altered) maps of every eval image with a ground-truth
mask, quantised to uint8, and the masks bit-packed, flattened with their (M, 2) ``shapes``. Metrics follow
``leaderboard.pixel_metrics`` (per image, then averaged; threshold 0.5), plus the IJCAI 2025 challenge score as
Loupe computes it (``loupe_score``: pooled F1 and the mean IoU of both classes) beside the per-image
``per_image_score``; both use the window's image AUROC on the whole eval split (group ``all``). The baselines are the same metrics for a map that
calls every pixel altered (all-ones) and one that calls none altered (all-zeros): a detector whose pixel F1 is
not clearly above both has learnt nothing about *where* an image was altered.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common import localization_file, predictions_file
from common import run_dir as layout
from common.atomic import atomic_write_text
from common.safe_npz import npz_keys
from leaderboard.pixel_metrics import (
    PIXEL_METRIC_NAMES,
    localization_metrics,
    loupe_pixel_terms,
    loupe_score,
    per_image_localization_score,
    pixel_auroc,
    pixel_f1,
    pixel_iou,
)

FILE_NAME = localization_file.FILE_NAME
PREDICTIONS = predictions_file.FILE_NAME
BASELINES = ("all_ones", "all_zeros")
CSV_NAME = "localization.csv"
# Per-window columns of localization.csv, in order.
CSV_COLUMNS = (
    "experiment", "detector", "window", "n_images", "n_scored", "pixel_f1", "pixel_f1_best", "pixel_iou",
    "pixel_auroc", "image_auroc", "loupe_f1", "loupe_miou", "loupe_score", "per_image_score", "all_ones_pixel_f1",
    "all_ones_pixel_iou", "all_zeros_pixel_f1", "all_zeros_pixel_iou", "inputs", "pixel_threshold",
    "pixel_f1_at_validation_threshold", "pixel_iou_at_validation_threshold",
)
SUMMARY_COLUMNS = CSV_COLUMNS[3:14] + CSV_COLUMNS[-3:]  # of `window_localization`, copied into localization.csv
# Displayed columns of the human table (one row per run, its last window with maps): (csv key, header).
DISPLAY = (
    ("experiment", "experiment"),
    ("detector", "detector"),
    ("window", "window"),
    ("n_scored", "images"),
    ("pixel_f1", "pixel F1@0.5"),
    ("pixel_f1_at_validation_threshold", "F1 @ val. thr."),
    ("pixel_f1_best", "best F1"),
    ("pixel_iou", "IoU"),
    ("pixel_auroc", "pixel AUROC"),
    ("loupe_score", "Loupe score"),
    ("per_image_score", "per-image score"),
    ("all_ones_pixel_f1", "all-ones F1"),
    ("all_zeros_pixel_f1", "all-zeros F1"),
)
EXPLANATION = (
    "Localization on the eval images that have a ground-truth mask (partial fakes), clean whole images, after "
    "each run's last window with maps (every window: localization.csv). Per image, then averaged: pixel F1 and "
    "IoU of the altered class at P(altered) > 0.5, F1 at the pixel threshold the run chose on its validation "
    "split's maps (eval.threshold; — without masked validation images), best F1 (each image its own threshold, an "
    "oracle figure), "
    "pixel AUROC. Loupe score = (image AUROC on the whole eval split + F1 + mean IoU of the clean and altered "
    "classes) / 3 with F1 and IoU pooled over every pixel of the images with an altered pixel: the IJCAI 2025 "
    "forgery challenge's score as its winning solution (Loupe) computes it. per-image score = (image AUROC + "
    "per-image F1 + per-image IoU) / 3. all-ones / all-zeros F1: the same F1 for a map calling every / no pixel altered; a detector "
    "must beat both. — = undefined."
)


def read_localization(path: Path | str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(masks: bool (H, W) per image, maps: float64 P(altered) (H, W) per image) from a localization.npz."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: localization file not found")
    d = localization_file.read(path)  # plain arrays only, version checked: an empty, non-zip or pickle-holding file is refused in plain words
    missing = {"maps_u8", "masks_packed", "shapes"} - set(d)
    if missing:
        raise ValueError(f"{path} lacks {sorted(missing)}; not a genshift localization file")
    shapes, flat_maps, packed = d["shapes"], d["maps_u8"], d["masks_packed"]
    shapes = np.asarray(shapes, np.int64).reshape(-1, 2)
    sizes = np.prod(shapes, axis=1)
    total = int(sizes.sum())
    if flat_maps.size != total or packed.size != (total + 7) // 8:
        raise ValueError(f"{path}: {flat_maps.size} map values / {packed.size} mask bytes do not match the "
                         f"{total} pixels of its {len(shapes)} shapes; the file is damaged")
    flat_masks = np.unpackbits(packed, count=total).astype(bool)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    masks = [flat_masks[a:b].reshape(h, w) for a, b, (h, w) in zip(starts, ends, shapes, strict=True)]
    maps = [flat_maps[a:b].reshape(h, w).astype(np.float64) / 255.0
            for a, b, (h, w) in zip(starts, ends, shapes, strict=True)]
    return masks, maps


def _scalar(path: Path, key: str):
    with np.load(path, allow_pickle=False) as d:
        return d[key].item() if key in d.files else None


def window_localization(path: Path | str, image_auroc: float, mode: str = "per_image") -> dict:
    """Pixel metrics of one localization.npz, the Loupe and per-image scores with ``image_auroc``, two baselines.

    Returns the keys of ``localization_metrics`` plus ``image_auroc``, ``loupe_f1``, ``loupe_miou``, ``n_loupe``,
    ``loupe_score``, ``per_image_score``, ``inputs`` and
    ``baselines`` = {"all_ones": {metric: value}, "all_zeros": {...}} (PIXEL_METRIC_NAMES only).
    """
    path = Path(path)
    masks, maps = read_localization(path)
    out = localization_metrics(masks, maps, mode=mode)
    out["image_auroc"] = float(image_auroc)
    loupe = loupe_pixel_terms(masks, maps)
    out |= {k: loupe[k] for k in ("loupe_f1", "loupe_miou", "n_loupe")}
    out["loupe_score"] = loupe_score(image_auroc, loupe["loupe_f1"], loupe["loupe_miou"])
    out["per_image_score"] = per_image_localization_score(image_auroc, out["pixel_f1"], out["pixel_iou"])
    out["inputs"] = _scalar(path, "inputs")
    t = _scalar(path, "pixel_threshold")  # chosen on the run's validation maps (eval.threshold), when it has them
    out["pixel_threshold"] = float("nan") if t is None else float(t)
    if t is not None and t == t:
        at = localization_metrics(masks, maps, threshold=float(t), mode=mode)
        out["pixel_f1_at_validation_threshold"] = at["pixel_f1"]
        out["pixel_iou_at_validation_threshold"] = at["pixel_iou"]
    else:
        out["pixel_f1_at_validation_threshold"] = out["pixel_iou_at_validation_threshold"] = float("nan")
    out["baselines"] = {}
    for name, value in zip(BASELINES, (1.0, 0.0), strict=True):
        base = localization_metrics(masks, [np.full(m.shape, value) for m in masks], mode=mode)
        out["baselines"][name] = {k: base[k] for k in PIXEL_METRIC_NAMES}
    return out


def per_image_frame(path: Path | str) -> pd.DataFrame:
    """One row per map: eval position, sample id, size, altered fraction, pixel F1 / IoU at 0.5, pixel AUROC."""
    path = Path(path)
    masks, maps = read_localization(path)
    with np.load(path, allow_pickle=False) as d:
        positions = d["positions"] if "positions" in d.files else np.full(len(masks), -1)
        ids = d["sample_ids"] if "sample_ids" in d.files else np.full(len(masks), -1)
    return pd.DataFrame({
        "position": np.asarray(positions, np.int64),
        "sample_id": np.asarray(ids, np.int64),
        "height": [m.shape[0] for m in masks],
        "width": [m.shape[1] for m in masks],
        "altered": [float(m.mean()) for m in masks],
        "pixel_f1": [pixel_f1(m, s) for m, s in zip(masks, maps, strict=True)],
        "pixel_iou": [pixel_iou(m, s) for m, s in zip(masks, maps, strict=True)],
        "pixel_auroc": [pixel_auroc(m, s) for m, s in zip(masks, maps, strict=True)],
    })


def image_auroc_of(predictions: Path | str) -> float:
    """Image AUROC over a window's whole eval split (group ``all``) from its predictions.npz."""
    from leaderboard.continual import load_window_npz, window_table

    arrays = load_window_npz(predictions)
    k = int(arrays["window"])
    return _record_auroc(window_table(arrays, k), k)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4f}"
    return str(v)


def summary_text(summary: dict) -> str:
    """Lines of a window's localization summary: the detector's metrics next to the two baselines."""
    rows = [("detector", summary), *((f"{b} map", summary["baselines"][b]) for b in BASELINES)]
    lines = [f"  {'':14s} " + " ".join(f"{k:>13s}" for k in PIXEL_METRIC_NAMES)]
    lines += [f"  {name:14s} " + " ".join(f"{_fmt(vals[k]):>13s}" for k in PIXEL_METRIC_NAMES) for name, vals in rows]
    lines.append(f"  image AUROC (all) {_fmt(summary['image_auroc'])}, Loupe score (AUROC + pooled F1 + mean IoU "
                 f"of both classes)/3 {_fmt(summary['loupe_score'])}, per-image score (AUROC + F1 + IoU)/3 "
                 f"{_fmt(summary['per_image_score'])}; {summary['n_scored']} of {summary['n_images']} images scored "
                 f"(inputs: {summary.get('inputs') or '?'})")
    return "\n".join(lines)


def inspect_section(predictions: Path | str, top: int = 10) -> str:
    """The localization part of ``genshift inspect`` for a predictions.npz: '' if no localization.npz beside it."""
    loc = Path(predictions).parent / FILE_NAME
    return inspect_report(loc, top, header=False) if loc.is_file() else ""


def _generators(frame: pd.DataFrame, predictions: Path) -> pd.Series | None:
    """Generator name of each map's image, from the predictions.npz beside it (None if its ids do not match)."""
    from leaderboard.continual import load_window_npz

    arrays = load_window_npz(predictions)
    names = np.asarray(arrays["generator_id_to_name"])
    by_id = dict(zip(np.asarray(arrays["fused_identifiers"]).astype(np.int64).tolist(),
                     np.asarray(arrays["fused_generator_ids"]).astype(np.int64).tolist(), strict=True))
    if not set(frame["sample_id"].tolist()) <= set(by_id):
        return None
    return frame["sample_id"].map(lambda i: str(names[by_id[int(i)]]))


def inspect_report(path: Path | str, top: int = 10, header: bool = True) -> str:
    """Text for one localization.npz: summary vs baselines, per generator, and the worst-localised images."""
    path = Path(path)
    pred = path.parent / PREDICTIONS
    auroc = image_auroc_of(pred) if pred.is_file() else float("nan")
    summary = window_localization(path, auroc)
    frame = per_image_frame(path)
    gens = _generators(frame, pred) if pred.is_file() else None
    parts = [f"file: {path}"] if header else []
    note = "" if pred.is_file() else f" (no {PREDICTIONS} beside it: image AUROC and the scores undefined)"
    parts.append(f"localization ({FILE_NAME}){note}:\n" + summary_text(summary))
    fmt = {"float_format": lambda v: f"{v:.4f}"}
    if gens is not None:
        frame.insert(2, "generator", gens)
        per_gen = frame.assign(all_ones_f1=2 * frame["altered"] / (frame["altered"] + 1)).groupby("generator").agg(
            images=("position", "size"), pixel_f1=("pixel_f1", "mean"), pixel_iou=("pixel_iou", "mean"),
            pixel_auroc=("pixel_auroc", "mean"), all_ones_f1=("all_ones_f1", "mean"))
        parts.append("localization per generator (means over its images):\n" + per_gen.reset_index().to_string(
            index=False, **fmt))
    worst = frame.sort_values(["pixel_f1", "position"], kind="stable", na_position="last").head(top)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        parts.append(f"worst-localised images (lowest pixel F1, top {top}):\n{worst.to_string(index=False, **fmt)}")
    return "\n\n".join(parts) + "\n"


def is_localization_file(path: Path | str) -> bool:
    """Whether ``path`` is a localization file (by name, or by its keys when it is some other .npz)."""
    path = Path(path)
    if path.name == FILE_NAME:
        return True
    if path.suffix != ".npz" or not path.is_file():
        return False
    try:
        keys = npz_keys(path)
    except ValueError:  # not an .npz archive at all: the predictions reader says so
        return False
    return {"maps_u8", "masks_packed", "shapes"} <= set(keys)


def _record_auroc(table: pd.DataFrame, k: int) -> float:
    sel = table[(table["window"] == k) & (table["group"] == "all") & (table["metric"] == "auroc")]
    return float(sel["value"].iloc[0]) if len(sel) else float("nan")


def localization_frame(records: Sequence) -> pd.DataFrame:
    """localization.csv: one row per (run, window) that has a localization.npz (CSV_COLUMNS); may be empty."""
    rows = []
    for r in records:
        det = (r.info.get("detector") or {}).get("name", "?")
        for k in range(r.n_windows_done):
            path = layout.window_dir(r.path, k) / FILE_NAME
            if not path.is_file():
                continue
            s = window_localization(path, _record_auroc(r.evaluation.table, k))
            row = {"experiment": r.name, "detector": det, "window": k, **{c: s.get(c) for c in SUMMARY_COLUMNS},
                   "inputs": s["inputs"]}
            for b in BASELINES:
                row[f"{b}_pixel_f1"] = s["baselines"][b]["pixel_f1"]
                row[f"{b}_pixel_iou"] = s["baselines"][b]["pixel_iou"]
            rows.append(row)
    return pd.DataFrame(rows, columns=list(CSV_COLUMNS))


def display_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run (its last window with maps), formatted strings, DISPLAY headers."""
    last = frame.sort_values(["experiment", "window"], kind="stable").groupby("experiment", sort=False).tail(1)
    last = last.sort_values("loupe_score", ascending=False, na_position="last", kind="stable")
    return pd.DataFrame({header: [_fmt(v) for v in last[key]] for key, header in DISPLAY})


@dataclass
class LocalizationView:
    """What ``write_localization_view`` made: the per-window frame and the sections for leaderboard.md/html."""

    frame: pd.DataFrame
    markdown: str
    html: str


def _html(table: pd.DataFrame) -> str:
    from leaderboard.render import html_table

    return f"<h2>Localization</h2>\n<p>{html.escape(EXPLANATION)}</p>\n{html_table(table, 'localization')}"


def write_localization_view(records: Sequence, out_dir: Path) -> LocalizationView | None:
    """Write ``out_dir/localization.csv`` and return the Markdown/HTML sections; None when no run has maps."""
    frame = localization_frame(records)
    if frame.empty:
        return None
    atomic_write_text(Path(out_dir) / CSV_NAME, frame.to_csv(index=False))
    table = display_table(frame)
    from leaderboard.render import to_markdown

    md = f"\n## Localization\n\n{EXPLANATION}\n\n{to_markdown(table)}\n"
    return LocalizationView(frame, md, _html(table))


def insert_html(document: str, section: str) -> str:
    """The leaderboard HTML with ``section`` placed before its plots (or at the end of the body)."""
    for marker in ("<h2>Plots</h2>", "</body>"):
        if marker in document:
            return document.replace(marker, section + marker, 1)
    return document + section
