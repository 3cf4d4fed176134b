"""Source-format views of predictions files: AUROC split by (real format, fake format) pairs.

A file of schema 3 on an image dataset records each row's source format (`fused_source_format`: jpeg, png, webp,
other) and estimated JPEG quality (`fused_jpeg_quality`, -1 when not JPEG). The cell (real format a, fake format
b) of a group holds that group's reals stored as a and its fakes stored as b; its AUROC (Mann–Whitney, ties ½)
says how well the detector separates them. If a detector's AUROC is high on (jpeg, png) and near 0.5 on (png,
png) and (jpeg, jpeg), it tells the classes apart by the container, not by what was generated (docs/formats.md).

Leaderboard: `formats.csv` (every run, window, group `next` and `all`, pair) and a "Source formats" section with
one row per configuration: for each pair, the mean over k = 0..K−2 of its AUROC on the NEXT cell (window k+1
after training window k), i.e. NEXT restricted to that pair, mean over seeds. Written only when some run's eval
set holds more than one format. Reads npz arrays only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from leaderboard.groups import group_mask, window_generator_ids
from leaderboard.metrics import roc_auc

FORMAT_KEY, QUALITY_KEY = "fused_source_format", "fused_jpeg_quality"
ORDER = ("jpeg", "png", "webp", "other")
PAIR_COLUMNS = ("real_format", "fake_format", "n_real", "n_fake", "auroc")


def formats_of(arrays: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """Per-row source formats, or None when the file records none (older files, sequence datasets)."""
    if FORMAT_KEY not in arrays:
        return None
    fmt = np.asarray(arrays[FORMAT_KEY]).astype(str)
    return fmt if fmt.size and (fmt != "").any() else None


def several_formats(arrays: Mapping[str, np.ndarray]) -> bool:
    """Whether the eval set mixes source formats (else every split by format is the plain AUROC)."""
    fmt = formats_of(arrays)
    return fmt is not None and len(set(fmt[fmt != ""].tolist())) > 1


def _ordered(values) -> list[str]:
    values = set(values) - {""}
    return [f for f in ORDER if f in values] + sorted(values - set(ORDER))


def pair_table(arrays: Mapping[str, np.ndarray], mask: np.ndarray | None = None) -> pd.DataFrame:
    """AUROC of every (real format, fake format) pair among the rows of `mask` (all rows when None), plus the
    row ('all', 'all'): the group's own AUROC. Pairs without a real or without a fake are not listed."""
    fmt = formats_of(arrays)
    if fmt is None:
        return pd.DataFrame(columns=list(PAIR_COLUMNS))
    y = np.asarray(arrays["fused_labels"]).astype(np.int64)
    s = np.asarray(arrays["fused_scores"]).astype(np.float64)
    m = np.ones(y.size, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    rows = []

    def add(a: str, b: str, real: np.ndarray, fake: np.ndarray) -> None:
        n_real, n_fake = int(real.sum()), int(fake.sum())
        if n_real and n_fake:
            sel = real | fake
            rows.append((a, b, n_real, n_fake, float(roc_auc(y[sel], s[sel]))))

    reals, fakes = m & (y == 0), m & (y == 1)
    add("all", "all", reals, fakes)
    for a in _ordered(fmt[reals]):
        for b in _ordered(fmt[fakes]):
            add(a, b, reals & (fmt == a), fakes & (fmt == b))
    return pd.DataFrame(rows, columns=list(PAIR_COLUMNS))


def composition(arrays: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Rows class, format, n, and for JPEG the min/median/max estimated quality: what a format shortcut can use."""
    fmt = formats_of(arrays)
    if fmt is None:
        return pd.DataFrame(columns=["class", "format", "n", "jpeg_quality_min", "jpeg_quality_median",
                                     "jpeg_quality_max"])
    y = np.asarray(arrays["fused_labels"]).astype(np.int64)
    q = np.asarray(arrays.get(QUALITY_KEY, np.full(y.size, -1))).astype(np.int64)
    rows = []
    for label, name in ((0, "real"), (1, "fake")):
        for f in _ordered(fmt[y == label]):
            sel = (y == label) & (fmt == f)
            qs = q[sel & (q >= 0)]
            stats = (int(qs.min()), float(np.median(qs)), int(qs.max())) if f == "jpeg" and qs.size else \
                (None, None, None)
            rows.append((name, f, int(sel.sum()), *stats))
    return pd.DataFrame(rows, columns=["class", "format", "n", "jpeg_quality_min", "jpeg_quality_median",
                                       "jpeg_quality_max"])


def next_mask(arrays: Mapping[str, np.ndarray], k: int) -> np.ndarray | None:
    """Rows of the NEXT cell after window k (window k+1's fakes and their paired reals), None after the last."""
    wins = window_generator_ids(arrays["generator_id_to_name"], arrays["windows_timeline"])
    if k + 1 >= len(wins):
        return None
    return group_mask(arrays["fused_generator_ids"], arrays["pairing"], wins[k + 1])


def window_rows(experiment: str, windows: Sequence[Mapping[str, np.ndarray]]) -> pd.DataFrame:
    """formats.csv rows of one run: for every window k, groups `next` (when defined) and `all`, every pair."""
    parts = []
    for k, arrays in enumerate(windows):
        if formats_of(arrays) is None:
            continue
        for group, mask in (("next", next_mask(arrays, k)), ("all", None)):
            if group == "next" and mask is None:
                continue
            t = pair_table(arrays, mask)
            t.insert(0, "group", group)
            t.insert(0, "window", k)
            t.insert(0, "experiment", experiment)
            parts.append(t)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def next_by_pair(windows: Sequence[Mapping[str, np.ndarray]]) -> dict[tuple[str, str], tuple[float, int]]:
    """(real format, fake format) -> (mean over k = 0..K−2 of the pair's AUROC on the NEXT cell, cells counted);
    a cell where the pair has no real or no fake is left out of the mean."""
    cells: dict[tuple[str, str], list[float]] = {}
    for k, arrays in enumerate(windows):
        mask = next_mask(arrays, k)
        if mask is None or formats_of(arrays) is None:
            continue
        for a, b, _, _, auroc in pair_table(arrays, mask).itertuples(index=False):
            cells.setdefault((a, b), []).append(auroc)
    return {pair: (float(np.mean(v)), len(v)) for pair, v in cells.items()}


def _pair_name(pair: tuple[str, str]) -> str:
    return "NEXT (all)" if pair == ("all", "all") else f"real {pair[0]} × fake {pair[1]}"


def configuration_table(configurations) -> pd.DataFrame:
    """One row per continual configuration: NEXT by pair, mean over its seeds (module docstring)."""
    rows, pairs = [], []
    for c in configurations:
        if c.is_full:
            continue
        per_seed = [next_by_pair(r.windows) for r in c.records]
        keys = [p for d in per_seed for p in d]
        for p in keys:
            if p not in pairs:
                pairs.append(p)
        row = {"experiment": c.name, "detector": c.records[0].fields.get("detector", "?"),
               "degradation.profile": c.records[0].fields.get("degradation.profile", "?")}
        for p in dict.fromkeys(keys):
            vals = [d[p][0] for d in per_seed if p in d]
            row[_pair_name(p)] = float(np.mean(vals)) if vals else float("nan")
        rows.append(row)
    order = [("all", "all")] + sorted((p for p in pairs if p != ("all", "all")),
                                      key=lambda p: (_rank(p[0]), _rank(p[1])))
    cols = ["experiment", "detector", "degradation.profile"] + [_pair_name(p) for p in order if p in pairs]
    return pd.DataFrame(rows).reindex(columns=cols)


def _rank(fmt: str) -> int:
    return ORDER.index(fmt) if fmt in ORDER else len(ORDER)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    return f"{float(v):.3f}" if isinstance(v, (float, np.floating)) else str(v)


def _markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _composition_line(arrays: Mapping[str, np.ndarray]) -> str:
    comp = composition(arrays)
    parts = []
    for name in ("real", "fake"):
        sub = comp[comp["class"] == name]
        parts.append(f"{name}s " + ", ".join(f"{f} {n}" for f, n in sub[["format", "n"]].itertuples(index=False)))
    return "; ".join(parts)


EXPLANATION = (
    "AUROC of the NEXT cells (window k+1 after training window k) split by source format: reals stored as the "
    "first format against fakes stored as the second, mean over k = 0..K−2 (cells where the pair is absent left "
    "out) and over seeds; formats.csv has every window and group. A detector that reads the container scores "
    "high across formats (real jpeg × fake png) and near 0.5 within one format; the format_only baseline "
    "measures how far the container alone goes. No intervals: see the ranking table for NEXT's."
)


def write_leaderboard_section(lb, out_dir: Path) -> tuple[str, str]:
    """formats.csv and the (markdown, html) "Source formats" section; ('', '') unless some run's eval set mixes
    formats."""
    if not any(several_formats(r.windows[0]) for r in lb.records):
        return "", ""
    import html as _html

    from common.atomic import atomic_write_text
    from leaderboard.render import html_table

    frames = [window_rows(r.name, r.windows) for r in lb.records]
    atomic_write_text(Path(out_dir) / "formats.csv",
                      pd.concat([f for f in frames if len(f)], ignore_index=True).to_csv(index=False))
    md, body = ["\n## Source formats\n", f"\n{EXPLANATION}\n"], [
        f"<h2>Source formats</h2>\n<p>{_html.escape(EXPLANATION)}</p>\n"]
    for i, label in enumerate(lb.tables):
        confs = [c for c in lb.configurations if (c.table or "all") == label and not c.is_full]
        confs = [c for c in confs if formats_of(c.records[0].windows[0]) is not None]
        if not confs:
            continue
        table = configuration_table(confs)
        head = "" if label == "all" else f"### {label}\n\n"
        line = f"Eval set (source formats): {_composition_line(confs[0].records[0].windows[0])}."
        profiles = sorted({str(c.records[0].fields.get("degradation.profile", "")) for c in confs})
        reencoded = [p for p in profiles if "+reencode" in p]
        if reencoded:
            line += (f" Under {', '.join(reencoded)} every eval image was re-encoded as JPEG before the chain: the "
                     "pairs name the source formats the re-encoding removed.")
        md.append(f"\n{head}{line}\n\n{_markdown(table)}\n")
        shown = table.map(_fmt) if hasattr(table, "map") else table.applymap(_fmt)
        body.append(("" if label == "all" else f"<h3>{_html.escape(label)}</h3>\n")
                    + f"<p>{_html.escape(line)}</p>\n" + html_table(shown, f"formats-{i + 1}"))
    return "".join(md), "".join(body)


def inspect_section(arrays: Mapping[str, np.ndarray], k: int) -> str:
    """`genshift inspect` text: the eval set by class and format, and the pair AUROCs of `all` and `next`."""
    if formats_of(arrays) is None:
        return ""
    from leaderboard.render import fmt_frame

    parts = ["source formats (class × format; JPEG quality estimated from the quantisation tables):\n"
             + fmt_frame(composition(arrays))]
    parts.append("AUROC by (real format, fake format), group all:\n" + fmt_frame(pair_table(arrays)))
    mask = next_mask(arrays, k)
    if mask is not None:
        parts.append(f"AUROC by (real format, fake format), group next (window {k + 1}):\n"
                     + fmt_frame(pair_table(arrays, mask)))
    return "\n\n".join(parts)
