"""Leaderboard over experiments, from stored predictions only (no model code): tables, CIs and plots.

`build_leaderboard` reads the runs, splits them into tables (`leaderboard.runs.partition`: refuses runs whose
evaluation-defining fields differ unless grouped by them), computes each run's continual aggregates
(`leaderboard.continual`) and their stratified-bootstrap replicates (`leaderboard.bootstrap`, one shared plan
per eval set so every run sees the same resamples), pools the seeds of each configuration into one row with a
two-level interval (`leaderboard.pooling`), ranks the continual rows by NEXT with the paired difference to the
top row, and sets each continual row beside its upper bound (a `full` run of the same detector).
`write_leaderboard` writes leaderboard.{md,csv,tex,html}, windows.csv, upper_bound.csv and PNG plots.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from common.atomic import atomic_write_bytes, atomic_write_text
from leaderboard import bootstrap as B
from leaderboard import pooling as P
from leaderboard import variants as V
from leaderboard.continual import AGGREGATES
from leaderboard.crops import crop_counts
from leaderboard.operating import threshold_sources
from leaderboard.render import html_figure, html_table, safe_name, to_markdown
from leaderboard.runs import LeaderboardError, RunRecord, partition, read_run

__all__ = ["LeaderboardError", "Leaderboard", "build_leaderboard", "write_leaderboard"]

# Aggregates with a value, sd over seeds and a two-level 95 % interval in leaderboard.csv and in the tables.
CI_AGGREGATES = (
    "next", "seen_average", "future_average", "bwt", "forgetting", "fwt", "ece", "brier", "cllr",
    "next_accuracy_at_05", "next_tpr_at_05", "next_fpr_at_05", "next_accuracy_at_past_threshold",
    "next_tpr_at_past_threshold", "next_fpr_at_past_threshold",
)
UPPER = "upper_bound_next"  # a full row: mean over j = 1..K-1 of its AUROC on window j (the windows NEXT averages)
# Ranking table: (csv key, header, how to show it)
RANKING = (
    ("rank", "#", "plain"),
    ("experiment", "experiment", "plain"),
    ("detector", "detector", "plain"),
    ("n_seeds", "seeds", "plain"),
    ("windows", "windows", "plain"),
    ("next", "NEXT", "ci"),
    ("next_vs_top", "ΔNEXT vs #1", "ci"),
    ("gap_to_upper_bound", "gap to UB", "ci"),
    ("seen_average", "seen avg", "ci"),
    ("future_average", "future avg", "ci"),
    ("bwt", "BWT", "ci"),
    ("forgetting", "forgetting", "ci"),
    ("fwt", "FWT", "ci"),
    ("params", "params", "count"),
    ("flops", "FLOPs", "count"),
)
CALIBRATION = (
    ("rank", "#", "plain"),
    ("experiment", "experiment", "plain"),
    ("ece", "ECE", "ci"),
    ("brier", "Brier", "ci"),
    ("cllr", "Cllr (bits)", "ci"),
    ("next_accuracy_at_past_threshold", "acc @ past thr.", "ci"),
    ("next_tpr_at_past_threshold", "TPR @ past thr.", "ci"),
    ("next_fpr_at_past_threshold", "FPR @ past thr.", "ci"),
    ("next_accuracy_at_05", "acc @ 0.5", "ci"),
    ("next_tpr_at_05", "TPR @ 0.5", "ci"),
    ("next_fpr_at_05", "FPR @ 0.5", "ci"),
    ("past_threshold_source", "threshold from", "plain"),
)
EXPLANATION = (
    "Rows: one per configuration; runs that differ only in their seed are pooled (seeds = how many). Values are "
    "means over seeds; ±: standard deviation over seeds; brackets: 95 % intervals of a two-level bootstrap ({n} "
    "replicates, seed {seed}: seeds drawn with replacement, then the eval set resampled, reals and fakes of each "
    "window separately, the same eval resamples for every row). "
    "NEXT = mean over k = 0..K−2 of R[k, k+1], the AUROC after training window k on window k+1's generators "
    "(their fakes plus the reals paired to them); the last window has no next window and is not counted. "
    "ΔNEXT vs #1: paired difference to the top row on the same eval resamples. gap to UB: the upper bound's "
    "AUROC on windows 1..K−1 (a `full` run of the same detector, trained once on every window) minus NEXT. "
    "seen avg = mean over k of the AUROC on windows 0..k pooled; future avg = mean over k < K−1 of the AUROC on "
    "windows k+1..K−1 pooled; BWT = mean over j < K−1 of R[K−1, j] − R[j, j]; forgetting = mean over j < K−1 of "
    "max over j ≤ k < K−1 of R[k, j] − R[K−1, j]; FWT = mean over j ≥ 1 of R[j−1, j] − b_j, b_j = AUROC on "
    "window j before any training (window_init/predictions.npz). — = undefined (incomplete run, single-class "
    "cell, or no untrained-model file: leaderboard.csv `undefined` says which)."
)
CALIBRATION_EXPLANATION = (
    "On the NEXT cells (window k+1 after training window k), averaged over k = 0..K−2: ECE with 15 equal-mass "
    "bins, Brier score, Cllr in bits (P(fake) read as a posterior at prior ½; 1 bit = uninformative); accuracy, "
    "TPR and FPR at the threshold fixed after window k by the run's rule (eval.threshold, named after the source: "
    "eer, fpr:<x>, a fixed number; Youden's J for runs that record none) on the run's validation split "
    "('validation') or, without one, on the seen windows' eval images ('seen-eval'), and at 0.5. "
    "Intervals of the threshold metrics and ECE are conditional on the fitted threshold and bin edges."
)
UPPER_EXPLANATION = (
    "Upper bound: `full` runs, trained once on every window, scored once on every window's generators (AUROC, "
    "mean over seeds). UB = mean over windows 1..K−1, the windows NEXT averages over."
)


@dataclass
class Configuration:
    """One row: the runs (seeds) of a configuration in one table and their pooled aggregates."""

    name: str
    table: str
    records: list[RunRecord]
    pooled: dict[str, P.Pooled]
    reasons: dict[str, str]
    is_full: bool
    window_row: np.ndarray | None = None  # full rows: mean AUROC over seeds on each window j
    window_pooled: list[P.Pooled] = field(default_factory=list)  # full rows: per-window pooled AUROC


@dataclass
class Leaderboard:
    """Everything the writers need."""

    records: list[RunRecord]  # in table, then row order
    summary: pd.DataFrame  # one row per configuration (leaderboard.csv columns), tables in order
    windows: pd.DataFrame  # long: experiment, window, group, metric, value
    plans: dict[str, B.BootstrapPlan]  # by eval-set digest
    configurations: list[Configuration]
    per_seed: pd.DataFrame | None = None  # one row per run (with --per-seed)
    upper: pd.DataFrame | None = None  # upper_bound.csv: full rows' per-window AUROC
    group_by: tuple[str, ...] = ()

    @property
    def tables(self) -> list[str]:
        return list(dict.fromkeys(self.summary["group"]))


@dataclass
class _RunStats:
    """A run's point aggregates and their replicate values under its table's plan."""

    points: dict[str, float]
    reasons: dict[str, str]
    replicates: dict[str, np.ndarray]
    row: np.ndarray | None = None  # full runs: AUROC on every window
    row_replicates: np.ndarray | None = None  # full runs: (B, K)


def _thresholds(r: RunRecord) -> list[float]:
    t = r.evaluation.table
    sel = t[(t["group"] == "next") & (t["metric"] == "past_threshold")].sort_values("window")
    return sel["value"].astype(float).tolist()


def _run_stats(r: RunRecord, plan: B.BootstrapPlan) -> _RunStats:
    summary = r.evaluation.summary.set_index("aggregate")
    points = {a: float(summary.loc[a, "value"]) for a in AGGREGATES}
    reasons = {a: summary.loc[a, "reason"] for a in AGGREGATES if summary.loc[a, "reason"] is not None}
    if r.is_full:
        row_reps = B.model_row_replicates(r.windows[0], plan, str(r.path))
        row = r.evaluation.auroc_matrix[0]
        nan = np.full(plan.n_replicates, np.nan)
        reps = {a: nan for a in AGGREGATES}
        points[UPPER] = float(np.mean(row[1:])) if row.size > 1 else float("nan")
        reps[UPPER] = row_reps[:, 1:].mean(axis=1) if row.size > 1 else nan
        if np.isnan(points[UPPER]):
            reasons[UPPER] = "an undefined window cell (see windows.csv)" if row.size > 1 else "a single window"
        return _RunStats(points, reasons, reps, row, row_reps)
    boot = B.bootstrap_run(r.windows, plan, str(r.path), initial=r.initial, thresholds=_thresholds(r))
    reps = dict(boot.aggregates)
    points[UPPER], reps[UPPER] = float("nan"), np.full(plan.n_replicates, np.nan)
    return _RunStats(points, reasons, reps)


def _configurations(members: list[RunRecord], stats: dict[str, _RunStats], key, table: str, seed: int,
                    level: float) -> list[Configuration]:
    """Group runs by `key` (configuration or run identity) and pool each group's aggregates over seeds."""
    groups: dict[str, list[RunRecord]] = {}
    for r in members:
        groups.setdefault(key(r), []).append(r)
    out = []
    for k, runs in groups.items():
        runs = sorted(runs, key=lambda r: (r.seed is None, r.seed if isinstance(r.seed, int) else 0, r.name))
        n_rep = len(next(iter(stats[runs[0].name].replicates.values())))
        draws = P.seed_draws(len(runs), n_rep, seed, k)
        pooled, reasons = {}, {}
        for a in (*CI_AGGREGATES, UPPER, "next_reference_variant_last_on_itself"):
            points = [stats[r.name].points[a] for r in runs]
            pooled[a] = P.pool(points, np.stack([stats[r.name].replicates[a] for r in runs]), draws, level,
                               bias_corrected=a in B.BIAS_CORRECTED)
            why = [f"{r.name}: {stats[r.name].reasons[a]}" for r in runs if a in stats[r.name].reasons]
            if why and np.isnan(pooled[a].value):
                reasons[a] = why[0] if len(runs) == 1 else "; ".join(why)
        name = V.configuration_name([r.name for r in runs], [r.seed for r in runs])
        conf = Configuration(name, table, runs, pooled, reasons, runs[0].is_full)
        if conf.is_full:
            rows = np.stack([stats[r.name].row for r in runs])
            reps = np.stack([stats[r.name].row_replicates for r in runs])  # (S, B, K)
            conf.window_row = rows.mean(axis=0)
            conf.window_pooled = [P.pool(rows[:, j], reps[:, :, j], draws, level) for j in range(rows.shape[1])]
        out.append(conf)
    return out


def _upper_for(conf: Configuration, fulls: list[Configuration]) -> tuple[Configuration | None, str | None]:
    """The upper bound of a continual row: the full row of the same detector and input pipeline (module doc)."""
    same = ("detector", "eval.pipeline", "eval.normalize")
    mine = conf.records[0].fields
    cands = [f for f in fulls if all(f.records[0].fields[n] == mine[n] for n in same)]
    if not cands:
        return None, f"no `full` run of detector {mine['detector']} in this table"
    if len(cands) == 1:
        return cands[0], None
    neutral = ("benchmark", "cl_strategy")

    def body(c: Configuration) -> dict:
        cfg = dict(c.records[0].info.get("config") or {})
        return {k: v for k, v in V._without(cfg, V.OPERATIONAL_KEYS).items() if k not in neutral}

    exact = [f for f in cands if body(f) == body(conf)]
    if len(exact) == 1:
        return exact[0], None
    return None, f"several `full` rows fit detector {mine['detector']}: {[f.name for f in cands]}"


def _rank(configs: list[Configuration], level: float) -> list[dict]:
    """Rows of one table: continual rows by NEXT (best first, undefined last), then the upper-bound rows."""
    cont = [c for c in configs if not c.is_full]
    fulls = [c for c in configs if c.is_full]
    cont.sort(key=lambda c: (np.isnan(c.pooled["next"].value), -np.nan_to_num(c.pooled["next"].value)))
    rows = []
    top = cont[0] if cont else None
    for i, c in enumerate(cont):
        row = _row(c)
        row["rank"] = i + 1
        d = P.paired_difference(c.pooled["next"].replicates, top.pooled["next"].replicates,
                                c.pooled["next"].value - top.pooled["next"].value, level)
        row |= {"next_vs_top": d["difference"], "next_vs_top_ci_low": d["ci_low"],
                "next_vs_top_ci_high": d["ci_high"], "next_vs_top_p": d["p_two_sided"]}
        ub, why = _upper_for(c, fulls)
        if ub is None:
            row |= {"upper_bound": None, "gap_to_upper_bound": float("nan"), "gap_to_upper_bound_ci_low": float("nan"),
                    "gap_to_upper_bound_ci_high": float("nan")}
            row["undefined"] = _join(row["undefined"], f"gap_to_upper_bound: {why}")
        else:
            u = ub.pooled[UPPER]
            g = P.paired_difference(u.replicates, c.pooled["next"].replicates, u.value - c.pooled["next"].value,
                                    level)
            row |= {"upper_bound": ub.name, "upper_bound_next": u.value, "gap_to_upper_bound": g["difference"],
                    "gap_to_upper_bound_ci_low": g["ci_low"], "gap_to_upper_bound_ci_high": g["ci_high"]}
        rows.append(row)
    for c in fulls:
        row = _row(c)
        row |= {"rank": None, "upper_bound": c.name}
        rows.append(row)
    return rows


def selection_text(records: Sequence[RunRecord]) -> str:
    """Which policy chose each window's weights, from the windows' `selection_*` keys: e.g. "best: epochs 3, 1, 2",
    "average: epochs 2–3, 2–3" (per seed, separated by '; '); "(last weights: ...)" marks a window where `best` kept the last weights and why;
    "last" for runs that do not record it."""
    texts = []
    for r in records:
        policies = {str(a["selection_policy"]) for a in r.windows if "selection_policy" in a}
        if not policies:
            texts.append(V.field_value("train.selection", r.info, r.windows[0]))
            continue
        policy = policies.pop() if len(policies) == 1 else "mixed"
        parts = []
        for a in r.windows:
            epoch = float(a["selection_epoch"]) if "selection_epoch" in a else -1.0
            part = "per branch" if epoch < 0 else f"{epoch:g}"
            averaged = np.asarray(a["selection_averaged_epochs"]) if "selection_averaged_epochs" in a else ()
            if len(averaged) > 1:  # `average`: the first and last averaged points
                part = f"{float(averaged[0]):g}–{float(averaged[-1]):g}"
            if "selection_reason" in a and str(a["selection_reason"]):
                part += " (last weights: validation AUROC undefined)"
            parts.append(part)
        texts.append(policy if policy == "last" else f"{policy}: epochs {', '.join(parts)}")
    return "; ".join(dict.fromkeys(texts)) if len(set(texts)) == 1 else "; ".join(texts)


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b


def _row(c: Configuration) -> dict:
    first = c.records[0]
    det = first.info.get("detector", {}) or {}
    done = {r.n_windows_done for r in c.records}
    total = first.n_windows
    windows = "1/1 (full)" if c.is_full else (f"{min(done)}/{total}" if len(done) == 1 else f"{min(done)}-{max(done)}/{total}")
    row: dict = {
        "group": c.table or "all",
        "rank": None,
        "experiment": c.name,
        "detector": det.get("name", first.fields.get("detector", "?")),
        "mode": det.get("mode", "?"),
        "n_seeds": len(c.records),
        "seeds": ",".join("?" if r.seed is None else str(r.seed) for r in c.records),
        "windows": windows,
        **{name: first.fields[name] for name in V.VARIANT_FIELDS},
    }
    for name in (*CI_AGGREGATES, UPPER):
        p = c.pooled[name]
        row[name] = p.value
        row[f"{name}_sd"] = p.sd
        row[f"{name}_ci_low"] = p.ci_low
        row[f"{name}_ci_high"] = p.ci_high
    row["next_reference_variant_last_on_itself"] = c.pooled["next_reference_variant_last_on_itself"].value
    sources = {s for r in c.records for s in threshold_sources(r.windows)}
    row["past_threshold_source"] = "—" if c.is_full else (sources.pop() if len(sources) == 1 else "mixed")
    row["selected"] = selection_text(c.records)
    row["eval_input"] = V.field_value("eval.input", first.info, first.windows[0])  # resize | center_crop | five_crop …
    row["crops_per_image"] = float(np.mean([crop_counts(r.windows[0]).mean() for r in c.records]))
    row["params"] = det.get("n_params")
    row["trainable_params"] = det.get("n_trainable")
    row["flops"] = det.get("flops")
    row["undefined"] = "; ".join(f"{a}: {why}" for a, why in c.reasons.items() if a in (*CI_AGGREGATES, UPPER)
                                 and not (c.is_full and a != UPPER))
    row["runs"] = ";".join(r.name for r in c.records)
    row["path"] = ";".join(str(r.path) for r in c.records)
    return row


def _long_windows(r: RunRecord) -> pd.DataFrame:
    parts = [r.evaluation.table[["window", "group", "metric", "value"]]]
    if r.evaluation.initial is not None:
        parts.insert(0, r.evaluation.initial[["window", "group", "metric", "value"]])
    t = pd.concat(parts, ignore_index=True)
    t.insert(0, "experiment", r.name)
    return t


def _upper_table(configs: list[Configuration]) -> pd.DataFrame:
    rows = []
    for c in configs:
        if not c.is_full:
            continue
        row = {"group": c.table or "all", "experiment": c.name, "detector": c.records[0].fields["detector"],
               "n_seeds": len(c.records)}
        for j, p in enumerate(c.window_pooled):
            row[f"auroc_window_{j}"] = p.value
            row[f"auroc_window_{j}_ci_low"] = p.ci_low
            row[f"auroc_window_{j}_ci_high"] = p.ci_high
        u = c.pooled[UPPER]
        row |= {UPPER: u.value, f"{UPPER}_sd": u.sd, f"{UPPER}_ci_low": u.ci_low, f"{UPPER}_ci_high": u.ci_high}
        rows.append(row)
    return pd.DataFrame(rows)


SUMMARY_ORDER = (
    "group", "rank", "experiment", "detector", "mode", "n_seeds", "seeds", "windows", *V.VARIANT_FIELDS,
    "next", "next_sd", "next_ci_low", "next_ci_high", "next_vs_top", "next_vs_top_ci_low", "next_vs_top_ci_high",
    "next_vs_top_p", "upper_bound", UPPER, f"{UPPER}_sd", f"{UPPER}_ci_low", f"{UPPER}_ci_high",
    "gap_to_upper_bound", "gap_to_upper_bound_ci_low", "gap_to_upper_bound_ci_high",
)


def _frame(rows: list[dict]) -> pd.DataFrame:
    """leaderboard.csv columns: identity, variant fields, NEXT and its comparisons, then everything else."""
    df = pd.DataFrame(rows)
    front = [c for c in dict.fromkeys(SUMMARY_ORDER) if c in df.columns]
    return df[front + [c for c in df.columns if c not in front]]


def build_leaderboard(
    runs: Sequence[Path],
    n_replicates: int = B.DEFAULT_REPLICATES,
    seed: int = 0,
    level: float = B.DEFAULT_LEVEL,
    timings: dict[str, float] | None = None,
    group_by: Sequence[str] = (),
    per_seed: bool = False,
) -> Leaderboard:
    """Read, check, evaluate, bootstrap and pool the runs (module doc); one table per `group_by` value."""
    if not runs:
        raise LeaderboardError("no run given; pass one or more run directories")
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    records = [read_run(Path(p)) for p in runs]
    tables = partition(records, tuple(group_by))
    timings["read_and_metrics"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    plans: dict[str, B.BootstrapPlan] = {}
    rows, seed_rows, configs, ordered = [], [], [], []
    for label, members in tables:
        layout = B.eval_layout(members[0].windows[0], str(members[0].path))
        for r in members:
            other = B.eval_layout(r.windows[0], str(r.path))
            if other.digest != layout.digest:
                raise LeaderboardError(
                    f"{r.path} and {members[0].path} share a manifest checksum but score different eval sets "
                    f"(identifiers, generators or pairing differ); they cannot be compared"
                )
        if layout.digest not in plans:
            plans[layout.digest] = B.make_plan(layout, n_replicates, seed, level)
        plan = plans[layout.digest]
        stats = {r.name: _run_stats(r, plan) for r in members}
        table_configs = _configurations(members, stats, lambda r: r.configuration, label, seed, level)
        table_rows = _rank(table_configs, level)
        by_name = {c.name: c for c in table_configs}
        table_configs = [by_name[row["experiment"]] for row in table_rows]
        rows += table_rows
        configs += table_configs
        ordered += [r for c in table_configs for r in c.records]
        if per_seed:
            seed_rows += _rank(_configurations(members, stats, lambda r: str(r.path), label, seed, level), level)
    summary = _frame(rows)
    timings["bootstrap"] = time.perf_counter() - t0
    windows = pd.concat([_long_windows(r) for r in ordered], ignore_index=True)
    return Leaderboard(ordered, summary, windows, plans, configs, _frame(seed_rows) if per_seed else None,
                       _upper_table(configs), tuple(group_by))


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


def _short(v: float) -> str:
    """3 decimals without the leading zero of a number below 1 (compact interval ends: .897, -.080)."""
    s = f"{v:.3f}"
    return s.replace("0.", ".", 1) if abs(v) < 1 and s.lstrip("-").startswith("0.") else s


def _with_ci(row, key: str) -> str:
    """value ±sd [low, high], compactly; '—' when undefined."""
    value = row.get(key)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    text = f"{float(value):.3f}"
    sd = row.get(f"{key}_sd")
    if sd is not None and not np.isnan(sd):
        text += f" ±{_short(float(sd))}"
    lo, hi = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    if lo is not None and not np.isnan(lo):
        text += f" [{_short(float(lo))}, {_short(float(hi))}]"
    return text


def varying_fields(rows: pd.DataFrame) -> list[str]:
    """The method-side variant fields (detector aside, it has its own column) whose values differ among rows."""
    return [n for n in V.METHOD_FIELDS if n != "detector" and rows[n].astype(str).nunique() > 1]


def constant_fields_text(rows: pd.DataFrame) -> str:
    """'evaluation: …; method: …' naming the variant fields every row shares."""
    def fmt(names):
        out = []
        for n in names:
            vals = rows[n].astype(str).unique()
            if len(vals) == 1 and n != "detector":
                v = vals[0]
                out.append(f"{n}={v[:12] + '…' if n == 'manifest_checksum' and len(v) > 13 else v}")
        return ", ".join(out)

    return f"Variant of every row — evaluation: {fmt(V.EVAL_FIELDS)}; method: {fmt(V.METHOD_FIELDS)}."


def display_table(rows: pd.DataFrame, spec=RANKING, extra: Sequence[str] = ()) -> pd.DataFrame:
    """The human-readable table (strings) shown in Markdown, LaTeX and HTML; `extra` fields follow `windows`."""
    cols: list[tuple[str, str, str]] = []
    for key, header, how in spec:
        cols.append((key, header, how))
        if key == "windows":
            cols += [(f, f, "plain") for f in extra]
    out = {}
    records = rows.to_dict("records")
    for key, header, how in cols:
        if how == "ci":
            out[header] = [_with_ci(row, key) for row in records]
        elif how == "count":
            out[header] = [_count(row.get(key)) for row in records]
        elif key == "rank":
            out[header] = ["—" if row.get(key) is None or np.isnan(row[key]) else str(int(row[key])) for row in records]
        else:
            out[header] = [_num(row.get(key)) for row in records]
    return pd.DataFrame(out)


def upper_display(upper: pd.DataFrame) -> pd.DataFrame:
    """The upper-bound table: per-window AUROC of each full row and UB (windows 1..K−1) with its interval."""
    records = upper.to_dict("records")
    n = sum(1 for c in upper.columns if re.fullmatch(r"auroc_window_\d+", c))
    out = {"experiment": [r["experiment"] for r in records], "detector": [r["detector"] for r in records],
           "seeds": [_num(r["n_seeds"]) for r in records]}
    for j in range(n):
        out[f"w{j}"] = [_num(r[f"auroc_window_{j}"], 3) for r in records]
    out["UB (w1..)"] = [_with_ci(r, UPPER) for r in records]
    return pd.DataFrame(out)


# Every character LaTeX treats specially, replaced in one pass (so an inserted backslash is never escaped again).
_TEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
    ">": r"\textgreater{}", "|": r"\textbar{}", "\n": " ", "\r": " ", "\t": " ",
    "—": "--", "Δ": r"$\Delta$", "≤": r"$\le$",
}
_TEX_SPECIAL = re.compile("|".join(re.escape(c) for c in _TEX_ESCAPES))


def _tex(v: str) -> str:
    """`v` as LaTeX text: every special character escaped (names of runs and detectors are user input)."""
    return _TEX_SPECIAL.sub(lambda m: _TEX_ESCAPES[m.group(0)], str(v))


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


def to_html(body: str, explanation: str, images: Sequence[tuple[str, bytes]]) -> str:
    figs = "".join(html_figure(title, png) for title, png in images)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>genshift leaderboard</title>\n<style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1em}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}th{background:#eee}"
        "figure{display:inline-block;margin:1em}</style></head><body>\n"
        f"<h1>genshift leaderboard</h1>\n<p>{html.escape(explanation)}</p>\n"
        f"{body}"
        f"<h2>Plots</h2>\n{figs}</body></html>\n"
    )


def _mean_matrix(records: Sequence[RunRecord]) -> np.ndarray:
    """R averaged over seeds (rows of incomplete seeds count where they exist)."""
    n_rows = max(r.evaluation.auroc_matrix.shape[0] for r in records)
    k = records[0].evaluation.auroc_matrix.shape[1]
    stack = np.full((len(records), n_rows, k), np.nan)
    for i, r in enumerate(records):
        m = r.evaluation.auroc_matrix
        stack[i, : m.shape[0]] = m
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(stack, axis=0)


def _generator_table(records: Sequence[RunRecord], k: int) -> pd.DataFrame:
    """Per-generator AUROC rows after window k, averaged over seeds (the shape `plots.generator_bars` reads)."""
    from leaderboard.groups import GENERATOR_PREFIX

    parts = []
    for r in records:
        t = r.evaluation.table
        parts.append(t[(t["window"] == k) & (t["metric"] == "auroc") & t["group"].str.startswith(GENERATOR_PREFIX)])
    both = pd.concat(parts)
    mean = both.groupby("group", sort=False)["value"].mean().reset_index()
    mean.insert(0, "window", k)
    mean.insert(2, "metric", "auroc")
    return mean


def _next_cells(r: RunRecord):
    """(k, labels, scores, auroc, ece) of every NEXT cell of a run."""
    from leaderboard.groups import group_mask, window_generator_ids

    t = r.evaluation.table.set_index(["window", "group", "metric"])["value"]
    out = []
    for k, arrays in enumerate(r.windows):
        wins = window_generator_ids(arrays["generator_id_to_name"], arrays["windows_timeline"])
        if k + 1 >= len(wins):
            break
        m = group_mask(arrays["fused_generator_ids"], arrays["pairing"], wins[k + 1])
        y = np.asarray(arrays["fused_labels"])[m].astype(np.int64)
        s = np.asarray(arrays["fused_scores"])[m].astype(np.float64)
        if y.size == 0 or y.min() == y.max():
            continue
        out.append((k, y, s, float(t[(k, "next", "auroc")]), float(t[(k, "next", "ece")])))
    return out


def _plots(lb: Leaderboard) -> list[tuple[str, str, bytes]]:
    from leaderboard import metrics as M
    from leaderboard import plots

    out = []
    for label in lb.tables:
        confs = [c for c in lb.configurations if (c.table or "all") == label]
        suffix = "" if label == "all" else f"_{safe_name(label)}"
        title = "" if label == "all" else f" — {label}"
        curves = [(c.name, _mean_matrix(c.records)) for c in confs if not c.is_full]
        upper = [(c.name, c.window_row) for c in confs if c.is_full]
        out.append((f"NEXT per window (AUROC on window k+1 after training window k){title}",
                    f"next_per_window{suffix}.png", plots.next_per_window(curves, upper)))
    used: set[str] = set()
    for c in lb.configurations:
        stem = safe_name(c.name)
        while stem in used:
            stem += "_"
        used.add(stem)
        seeds = f" (mean of {len(c.records)} seeds)" if len(c.records) > 1 else ""
        out.append((f"R heat-map: {c.name}{seeds}", f"heatmap_{stem}.png",
                    plots.heatmap(c.name, _mean_matrix(c.records))))
        k = min(r.n_windows_done for r in c.records) - 1
        out.append((f"per-generator AUROC after window {k}: {c.name}{seeds}", f"generators_{stem}.png",
                    plots.generator_bars(c.name, _generator_table(c.records, k), k)))
        if c.is_full:
            continue
        first = c.records[0]
        cells = _next_cells(first)
        if not cells:
            continue
        which = f" (seed {first.seed})" if len(c.records) > 1 else ""
        rocs = [(k, *M.roc_points(y, s), auroc) for k, y, s, auroc, _ in cells]
        out.append((f"ROC of the NEXT cells: {c.name}{which}", f"roc_{stem}.png", plots.roc_next(first.name, rocs)))
        rel = [(k, *M.reliability_curve(y, s)[:2], ece) for k, y, s, _, ece in cells]
        out.append((f"reliability of the NEXT cells: {c.name}{which}", f"reliability_{stem}.png",
                    plots.reliability(first.name, rel)))
    return out


def _sections(lb: Leaderboard) -> tuple[str, str, str]:
    """(markdown, LaTeX, HTML) of every table: ranking, calibration, upper bound, per seed."""
    md, tex, body = [], [], []
    for i, label in enumerate(lb.tables):
        rows = lb.summary[lb.summary["group"] == label]
        cont = rows[rows["rank"].notna()]
        shown = cont if len(cont) else rows  # the ranked rows (full rows are in the upper-bound table)
        extra = varying_fields(shown)
        if (shown["selected"].astype(str) != "last").any():  # a policy other than `last` chose some weights
            extra.append("selected")
        sid = "" if i == 0 else f"-{i + 1}"
        head = "" if label == "all" else label
        note = constant_fields_text(shown)
        if head:
            md.append(f"\n## {head}\n")
            body.append(f"<h2>{html.escape(head)}</h2>\n")
        ranking = display_table(shown, RANKING, extra)
        md.append(f"\n{note}\n\n{to_markdown(ranking)}\n")
        tex.append(to_latex(ranking, f"genshift leaderboard{': ' + head if head else ''}. {note}"))
        body.append(f"<p>{html.escape(note)}</p>\n{html_table(ranking, 'leaderboard' + sid)}")
        if len(cont):
            cal = display_table(cont, CALIBRATION)
            md.append(f"\n### Next-window calibration and operating point\n\n{CALIBRATION_EXPLANATION}\n\n"
                      f"{to_markdown(cal)}\n")
            tex.append(to_latex(cal, "Next-window calibration and operating point. " + CALIBRATION_EXPLANATION))
            body.append(f"<h3>Next-window calibration and operating point</h3>\n"
                        f"<p>{html.escape(CALIBRATION_EXPLANATION)}</p>\n{html_table(cal, 'calibration' + sid)}")
        up = lb.upper[lb.upper["group"] == label] if lb.upper is not None and len(lb.upper) else None
        if up is not None and len(up):
            shown = upper_display(up)
            md.append(f"\n### Upper bound\n\n{UPPER_EXPLANATION}\n\n{to_markdown(shown)}\n")
            tex.append(to_latex(shown, "Upper bound. " + UPPER_EXPLANATION))
            body.append(f"<h3>Upper bound</h3>\n<p>{html.escape(UPPER_EXPLANATION)}</p>\n"
                        f"{html_table(shown, 'upper-bound' + sid)}")
        if lb.per_seed is not None:
            ps = lb.per_seed[(lb.per_seed["group"] == label) & lb.per_seed["rank"].notna()]
            if len(ps):
                shown = display_table(ps, RANKING, extra)
                md.append(f"\n### Per seed\n\nEvery run on its own (ordinary stratified bootstrap).\n\n"
                          f"{to_markdown(shown)}\n")
                tex.append(to_latex(shown, "Per seed."))
                body.append(f"<h3>Per seed</h3>\n{html_table(shown, 'per-seed' + sid)}")
    return "".join(md), "\n".join(tex), "".join(body)


def _view_sections(lb, out_dir: Path, n_replicates: int, seed: int) -> tuple[str, str, list]:
    """Every view's files and sections (localization, robustness, strategies, video, formats, test datasets; each
    empty when no run has its data): (Markdown, HTML, the views' extra (title, file, PNG) figures)."""
    from leaderboard import formats_view as FV
    from leaderboard import localization_view as LV
    from leaderboard import robustness_view as RV
    from leaderboard import strategy_view as SV
    from leaderboard import test_datasets_view as TV
    from leaderboard import video_view as VV

    loc = LV.write_localization_view(lb.records, out_dir)  # localization.csv + sections; None when no run has maps
    rob = RV.write_section(lb, out_dir)  # leaderboard_robustness.csv + md/html sections; empty if no run has one
    cl = SV.write_section(lb, out_dir)  # strategies.csv/.png + sections; empty when every run is naive
    video_md, video_html = VV.write_leaderboard_section(lb.records, out_dir)  # video.csv, grids, ROC PNGs
    formats_md, formats_html = FV.write_leaderboard_section(lb, out_dir)  # formats.csv; '' unless formats mix
    tests = TV.write_section(lb.records, out_dir, n_replicates, seed)  # test_datasets.csv, per-window PNGs
    md = (loc.markdown if loc else "") + rob.markdown + cl.markdown + video_md + formats_md \
        + (tests.markdown if tests else "")
    html_part = (loc.html if loc else "") + rob.html + cl.html + video_html + formats_html + (tests.html if tests else "")
    return md, html_part, list(tests.figures) if tests else []


def write_leaderboard(
    runs: Sequence[Path],
    out_dir: Path,
    echo: bool = True,
    n_replicates: int = B.DEFAULT_REPLICATES,
    seed: int = 0,
    level: float = B.DEFAULT_LEVEL,
    timings: dict[str, float] | None = None,
    group_by: Sequence[str] = (),
    per_seed: bool = False,
) -> pd.DataFrame:
    """Write leaderboard.{md,csv,tex,html}, windows.csv, upper_bound.csv and PNG plots into `out_dir`.

    Returns the summary (one row per configuration, every table). With `group_by`, one table per value of
    those fields; with `per_seed`, also every run's own row (leaderboard_per_seed.csv and a section).
    """
    timings = {} if timings is None else timings
    lb = build_leaderboard(runs, n_replicates, seed, level, timings, group_by, per_seed)
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    explanation = EXPLANATION.format(n=n_replicates, seed=seed)
    md_tables, tex, body = _sections(lb)
    views_md, views_html, view_figures = _view_sections(lb, out_dir, n_replicates, seed)
    md = f"# genshift leaderboard\n\n{explanation}\n{md_tables}" + views_md
    atomic_write_text(out_dir / "leaderboard.md", md)
    atomic_write_text(out_dir / "leaderboard.csv", lb.summary.to_csv(index=False))
    if lb.per_seed is not None:
        atomic_write_text(out_dir / "leaderboard_per_seed.csv", lb.per_seed.to_csv(index=False))
    if lb.upper is not None and len(lb.upper):
        atomic_write_text(out_dir / "upper_bound.csv", lb.upper.to_csv(index=False))
    atomic_write_text(out_dir / "leaderboard.tex", f"% genshift leaderboard. {explanation}\n{tex}")
    atomic_write_text(out_dir / "windows.csv", lb.windows.to_csv(index=False))
    figures = _plots(lb)
    for _, filename, png in figures:
        atomic_write_bytes(out_dir / filename, png)
    from leaderboard.localization_view import insert_html

    atomic_write_text(out_dir / "leaderboard.html", insert_html(
        to_html(body, explanation, [(t, png) for t, _, png in figures + view_figures]), views_html))
    timings["write"] = time.perf_counter() - t0
    if echo:
        print(md)
        print(f"written to {out_dir}: leaderboard.md/.csv/.tex/.html, windows.csv, {len(figures)} PNG plots")
    return lb.summary
