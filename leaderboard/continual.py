"""Continual-learning metrics of one run (DESIGN §6) from its per-window predictions arrays.

R[k, j] = AUROC of the model after window k on window j's group (fakes of window j + their paired reals).
Aggregates over a complete run of K windows (all use AUROC):

- NEXT (headline) = mean_{k=0..K-2} R[k, k+1]; the last window has no next window and is excluded.
- `next_reference_variant_last_on_itself`: the AI-GenBench reference's K-value variant, which for
  k = K-1 uses R[K-1, K-1]; shown only under that name.
- seen_average = mean_{k=0..K-1} AUROC(after k, group `seen` = windows 0..k pooled into one cell).
- future_average = mean_{k=0..K-2} AUROC(after k, group `future` = windows k+1..K-1 pooled).
- BWT = mean_{j<K-1} (R[K-1, j] − R[j, j]).
- forgetting = mean_{j<K-1} (max_{j<=k<K-1} R[k, j] − R[K-1, j]).
- FWT (forward transfer, GEM's definition on AUROC) = mean_{j=1..K-1} (R[j-1, j] − b_j), where b_j is the
  AUROC on window j of the model before any training (`window_init/predictions.npz`, `leaderboard.initial`);
  NaN, with that reason, for a run that did not score its untrained model.
- ece, brier, cllr: the mean over k = 0..K-2 of the cell's calibration metric on the NEXT cell (window k+1
  after training window k): how trustworthy P(fake) is on generators the detector has not seen.
- next_{accuracy,tpr,fpr}_at_05 and next_{accuracy,tpr,fpr}_at_past_threshold: the mean over k = 0..K-2 of
  the NEXT cell's accuracy, TPR and FPR at 0.5 and at the threshold fixed after window k on the windows seen
  so far (`leaderboard.operating`): how a deployed detector's operating point drifts.

NaN cells propagate: an aggregate with any undefined input cell is NaN and its reason names the cells
(no silent nanmean).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common import predictions_file
from common import run_dir as layout
from leaderboard.groups import (
    REQUIRED_KEYS,
    WINDOW_PREFIX,
    group_specs,
    sample_owner,
    validate_eval_arrays,
    window_generator_ids,
)
from leaderboard.metrics import COUNT_NAMES, DEFAULT_THRESHOLD, METRIC_NAMES, cell_metrics_by_key
from leaderboard.operating import operating_rows

TABLE_COLUMNS: tuple[str, ...] = ("window", "group", "metric", "value", "reason")
SUMMARY_COLUMNS: tuple[str, ...] = ("aggregate", "value", "reason")
AGGREGATES: tuple[str, ...] = (
    "next",
    "next_reference_variant_last_on_itself",
    "seen_average",
    "future_average",
    "bwt",
    "forgetting",
    "fwt",
    "ece",
    "brier",
    "cllr",
    "next_accuracy_at_05",
    "next_tpr_at_05",
    "next_fpr_at_05",
    "next_accuracy_at_past_threshold",
    "next_tpr_at_past_threshold",
    "next_fpr_at_past_threshold",
)
# Aggregates that are the mean over k = 0..K-2 of one metric of the NEXT cell: name -> (metric, transform).
NEXT_CELL_AGGREGATES: dict[str, str] = {
    "ece": "ece",
    "brier": "brier",
    "cllr": "cllr",
    "next_accuracy_at_05": "accuracy_at_threshold",
    "next_tpr_at_05": "tpr_at_threshold",
    "next_fpr_at_05": "fpr_at_threshold",
    "next_accuracy_at_past_threshold": "accuracy_at_past_threshold",
    "next_tpr_at_past_threshold": "tpr_at_past_threshold",
    "next_fpr_at_past_threshold": "fpr_at_past_threshold",
}
INITIAL_WINDOW = -1  # the `window` value of the untrained model's rows (window_init/predictions.npz)


def load_window_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Load one window's predictions.npz (`common.predictions_file.read`) and validate its keys and arrays."""
    path = Path(path)
    keys = predictions_file.keys(path)  # a missing, empty or non-zip file is refused here in plain words
    missing = [k for k in REQUIRED_KEYS if k not in keys]
    if missing:
        raise ValueError(f"{path}: missing required keys {missing}; present: {sorted(keys)}")
    out = predictions_file.read(path)  # plain arrays only (a pickle is refused), version checked, migrated
    validate_eval_arrays(out, str(path))
    if "crop_to_image_index" in out or "crop_scores" in out:
        from leaderboard.crops import validate_crop_arrays

        validate_crop_arrays(out, str(path))
    if "window" in out and np.asarray(out["window"]).shape != ():
        raise ValueError(
            f"{path}: key 'window' must be a scalar, got shape {np.asarray(out['window']).shape}"
        )
    return out


def check_run(windows: Sequence[Mapping[str, np.ndarray]]) -> int:
    """Validate the per-window arrays of one run and return K (windows in its timeline).

    All windows must share generator names, timeline and eval set composition (per-generator counts of
    fakes and of paired reals); a stored `window` scalar must equal its list index.
    """
    if len(windows) == 0:
        raise ValueError("a run needs at least one window of predictions, got none")
    first = windows[0]
    for k, arrays in enumerate(windows):
        source = f"window {k}"
        validate_eval_arrays(arrays, source)
        if "window" in arrays and int(np.asarray(arrays["window"])) != k:
            raise ValueError(
                f"{source}: stored window scalar is {int(np.asarray(arrays['window']))}, "
                f"but the arrays are at list index {k}"
            )
        for key in ("generator_id_to_name", "windows_timeline"):
            if not np.array_equal(arrays[key], first[key]):
                raise ValueError(
                    f"{source}: {key} differs from window 0's; all windows of a run must share it"
                )
        if _composition(arrays) != _composition(first):
            raise ValueError(
                f"{source}: eval set composition (per-generator counts of fakes / paired reals) "
                f"differs from window 0's; every window must score the same eval set"
            )
    n_windows = len(window_generator_ids(first["generator_id_to_name"], first["windows_timeline"]))
    if len(windows) > n_windows:
        raise ValueError(
            f"run has {len(windows)} windows of predictions but its timeline has only {n_windows}"
        )
    return n_windows


def _composition(arrays: Mapping[str, np.ndarray]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    gen = np.asarray(arrays["fused_generator_ids"])
    size = len(arrays["generator_id_to_name"])
    paired = np.asarray(arrays["pairing"])[gen == 0]
    return tuple(np.bincount(gen, minlength=size).tolist()), tuple(
        np.bincount(paired, minlength=size).tolist()
    )


def window_table(
    arrays: Mapping[str, np.ndarray], k: int, threshold: float = DEFAULT_THRESHOLD
) -> pd.DataFrame:
    """Tidy rows (window, group, metric, value, reason) of every group and metric after window k.

    `arrays` are expected to be validated already (by `load_window_npz` or `check_run`).
    """
    scores = np.asarray(arrays["fused_scores"])
    labels = np.asarray(arrays["fused_labels"])
    rows: list[tuple[int, str, str, float, str | None]] = []
    keys = (*COUNT_NAMES, *METRIC_NAMES)
    specs = group_specs(arrays, k)
    owner = sample_owner(arrays["fused_generator_ids"], arrays["pairing"])
    cells = iter(cell_metrics_by_key(labels, scores, owner, [ids for _, ids, _ in specs if ids is not None],
                                     threshold=threshold))
    for name, ids, why in specs:
        if ids is None:
            rows += [(k, name, key, float("nan"), why) for key in keys]
            continue
        cell = next(cells)
        for key in keys:
            reason = None if key in COUNT_NAMES else cell["reason"]
            rows.append((k, name, key, float(cell[key]), reason))
    return _frame(rows, TABLE_COLUMNS)


def _frame(rows: list[tuple], columns: Sequence[str]) -> pd.DataFrame:
    """DataFrame with an object `reason` column keeping None (pandas >= 3 would store NaN strings)."""
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(columns)
    data = {
        name: pd.Series(list(values), dtype=object if name == "reason" else None)
        for name, values in zip(columns, cols, strict=True)
    }
    return pd.DataFrame(data, columns=list(columns))


def run_table(
    windows: Sequence[Mapping[str, np.ndarray]], threshold: float = DEFAULT_THRESHOLD
) -> pd.DataFrame:
    """Tidy table of a run: every window (list index k), group and metric; see `window_table`.

    Group `next` also has the operating-point rows of `leaderboard.operating` (OPERATING_METRICS).
    """
    n_windows = check_run(windows)
    parts = [window_table(a, k, threshold) for k, a in enumerate(windows)]
    parts.append(_frame(operating_rows(windows, n_windows), TABLE_COLUMNS))
    return pd.concat(parts, ignore_index=True)


def initial_table(arrays: Mapping[str, np.ndarray], threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """Rows (window = INITIAL_WINDOW) of the untrained model: groups `all`, window:<j> and generator:<name>."""
    specs = [(name, ids, why) for name, ids, why in group_specs(arrays, 0) if name not in WINDOW_RELATIVE_GROUPS]
    scores = np.asarray(arrays["fused_scores"])
    owner = sample_owner(arrays["fused_generator_ids"], arrays["pairing"])
    cells = cell_metrics_by_key(np.asarray(arrays["fused_labels"]), scores, owner, [ids for _, ids, _ in specs],
                                threshold=threshold)
    rows = [(INITIAL_WINDOW, name, key, float(cell[key]), None if key in COUNT_NAMES else cell["reason"])
            for (name, _, _), cell in zip(specs, cells, strict=True) for key in (*COUNT_NAMES, *METRIC_NAMES)]
    return _frame(rows, TABLE_COLUMNS)


WINDOW_RELATIVE_GROUPS = frozenset({"next", "current", "seen", "seen_next", "past", "future"})  # depend on k


def _lookup(table: pd.DataFrame, metrics: Sequence[str] | None = None) -> dict[tuple[int, str, str], tuple[float, str | None]]:
    """(window, group, metric) -> (value, reason), of the given metrics only (all when None)."""
    if metrics is not None:
        table = table[table["metric"].isin(list(metrics))]
    return {(int(w), g, m): (v, r) for w, g, m, v, r in table[list(TABLE_COLUMNS)].itertuples(index=False)}


def _n_windows(table: pd.DataFrame) -> int:
    cols = [g for g in table["group"].unique() if g.startswith(WINDOW_PREFIX)]
    return len(cols)


def matrix_from_table(table: pd.DataFrame, metric: str = "auroc") -> np.ndarray:
    """M[k, j] = `metric` after window k on window j's group; shape (windows evaluated, K)."""
    n_rows = int(table["window"].max()) + 1
    n_cols = _n_windows(table)
    cells = _lookup(table, [metric])
    out = np.full((n_rows, n_cols), np.nan)
    for k in range(n_rows):
        for j in range(n_cols):
            key = (k, f"{WINDOW_PREFIX}{j}", metric)
            if key not in cells:
                raise ValueError(f"table has no row for window {k}, group {key[1]}, metric {metric!r}")
            out[k, j] = cells[key][0]
    return out


def _square(r: np.ndarray) -> int:
    r = np.asarray(r)
    if r.ndim != 2 or r.shape[0] != r.shape[1] or r.shape[0] == 0:
        raise ValueError(f"aggregates need the full K x K matrix of a complete run, got shape {r.shape}")
    return r.shape[0]


def next_score(r: np.ndarray) -> float:
    """NEXT = mean_{k=0..K-2} R[k, k+1] (the last window is excluded); NaN if K < 2 or a cell is NaN."""
    n = _square(r)
    return float(np.mean(np.diagonal(r, offset=1))) if n >= 2 else float("nan")


def next_reference_variant_last_on_itself(r: np.ndarray) -> float:
    """The AI-GenBench reference's K-value NEXT: mean_k R[k, min(k+1, K-1)] (last window scored on itself)."""
    n = _square(r)
    idx = np.arange(n)
    return float(np.mean(np.asarray(r)[idx, np.minimum(idx + 1, n - 1)]))


def backward_transfer(r: np.ndarray) -> float:
    """BWT = mean_{j<K-1} (R[K-1, j] − R[j, j]); NaN if K < 2 or a cell is NaN."""
    n = _square(r)
    if n < 2:
        return float("nan")
    r = np.asarray(r)
    j = np.arange(n - 1)
    return float(np.mean(r[n - 1, j] - r[j, j]))


def forgetting(r: np.ndarray) -> float:
    """Mean_{j<K-1} (max_{j<=k<K-1} R[k, j] − R[K-1, j]); NaN if K < 2 or a used cell is NaN."""
    n = _square(r)
    if n < 2:
        return float("nan")
    r = np.asarray(r, dtype=float)
    upper = np.where(np.tril(np.ones((n - 1, n - 1), dtype=bool)), r[: n - 1, : n - 1], -np.inf)
    best = upper.max(axis=0)  # column j: max over rows k in j..K-2 (NaN propagates)
    return float(np.mean(best - r[n - 1, : n - 1]))


def forward_transfer(r: np.ndarray, b: np.ndarray) -> float:
    """FWT = mean_{j=1..K-1} (R[j-1, j] − b_j), b_j = AUROC on window j before any training; NaN if K < 2."""
    n = _square(r)
    b = np.asarray(b, dtype=float)
    if b.shape != (n,):
        raise ValueError(f"b must hold one AUROC per window ({n}), got shape {b.shape}")
    if n < 2:
        return float("nan")
    j = np.arange(1, n)
    return float(np.mean(np.asarray(r)[j - 1, j] - b[j]))


@dataclass(frozen=True)
class RunEvaluation:
    """Everything computed for one run: tidy per-window table, AUROC matrix, aggregates table.

    `initial_auroc` is b_j (AUROC on window j of the untrained model) when the run scored it, else None;
    `initial` holds that model's rows (window = INITIAL_WINDOW) or an empty table.
    """

    table: pd.DataFrame  # columns TABLE_COLUMNS
    auroc_matrix: np.ndarray  # (windows evaluated, K)
    summary: pd.DataFrame  # columns aggregate, value, reason
    initial: pd.DataFrame | None = None
    initial_auroc: np.ndarray | None = None


def _cells_reason(cells: list[tuple[str, float, str | None]]) -> str | None:
    bad = [
        f"{label}: {reason if isinstance(reason, str) else 'NaN'}"
        for label, value, reason in cells
        if np.isnan(value)
    ]
    return "undefined input cells: " + "; ".join(bad) if bad else None


NO_INITIAL = ("the run has no window_init/predictions.npz: its model was not scored before any training, so b_j "
              "(and FWT) is unknown")


def summary_table(table: pd.DataFrame, initial: pd.DataFrame | None = None,
                  initial_missing: str = NO_INITIAL) -> pd.DataFrame:
    """Aggregates (AGGREGATES order) with a reason for every NaN; NaN for an incomplete run.

    `initial`: the untrained model's rows (`initial_table`), needed by FWT; without them FWT is NaN with
    `initial_missing` as its reason.
    """
    r = matrix_from_table(table, "auroc")
    n_done, n = r.shape
    if n_done < n:
        reason = f"run incomplete: {n_done} of {n} windows evaluated"
        return _frame([(a, float("nan"), reason) for a in AGGREGATES], SUMMARY_COLUMNS)
    cells = _lookup(table, ["auroc", *NEXT_CELL_AGGREGATES.values()])

    def rc(k: int, j: int) -> tuple[str, float, str | None]:
        value, reason = cells[(k, f"{WINDOW_PREFIX}{j}", "auroc")]
        return f"R[{k},{j}]", value, reason

    def grp(k: int, name: str, metric: str = "auroc") -> tuple[str, float, str | None]:
        value, reason = cells[(k, name, metric)]
        return f"{name}@{k}" if metric == "auroc" else f"{metric}({name}@{k})", value, reason

    inputs: dict[str, tuple[float, list[tuple[str, float, str | None]]]] = {
        "next": (next_score(r), [rc(k, k + 1) for k in range(n - 1)]),
        "next_reference_variant_last_on_itself": (
            next_reference_variant_last_on_itself(r),
            [rc(k, min(k + 1, n - 1)) for k in range(n)],
        ),
        "seen_average": (float("nan"), [grp(k, "seen") for k in range(n)]),
        "future_average": (float("nan"), [grp(k, "future") for k in range(n - 1)]),
        "bwt": (
            backward_transfer(r),
            [rc(n - 1, j) for j in range(n - 1)] + [rc(j, j) for j in range(n - 1)],
        ),
        "forgetting": (forgetting(r), [rc(k, j) for j in range(n - 1) for k in range(j, n)]),
    }
    for name, metric in NEXT_CELL_AGGREGATES.items():
        inputs[name] = (float("nan"), [grp(k, "next", metric) for k in range(n - 1)])
    rows = []
    for name in AGGREGATES:
        if name == "fwt":
            rows.append(_fwt_row(r, cells, initial, initial_missing))
            continue
        value, used = inputs[name]
        if name in ("seen_average", "future_average") or name in NEXT_CELL_AGGREGATES:
            value = float(np.mean([v for _, v, _ in used])) if used else float("nan")
        if not used:
            reason: str | None = f"needs at least 2 windows, run has {n}"
        else:
            reason = _cells_reason(used) if np.isnan(value) else None
        rows.append((name, value, reason))
    return _frame(rows, SUMMARY_COLUMNS)


def _fwt_row(r: np.ndarray, cells: dict, initial: pd.DataFrame | None, missing: str) -> tuple:
    n = r.shape[0]
    if n < 2:
        return ("fwt", float("nan"), f"needs at least 2 windows, run has {n}")
    if initial is None:
        return ("fwt", float("nan"), missing)
    b = initial_auroc(initial, n)
    used = [(f"R[{j - 1},{j}]", *cells[(j - 1, f"{WINDOW_PREFIX}{j}", "auroc")]) for j in range(1, n)]
    init_cells = _lookup(initial, ["auroc"])
    used += [(f"b[{j}]", *init_cells[(INITIAL_WINDOW, f"{WINDOW_PREFIX}{j}", "auroc")]) for j in range(1, n)]
    value = forward_transfer(r, b)
    return ("fwt", value, _cells_reason(used) if np.isnan(value) else None)


def initial_auroc(initial: pd.DataFrame, n_windows: int) -> np.ndarray:
    """b_j, the untrained model's AUROC on window j's group, from `initial_table` rows."""
    cells = _lookup(initial, ["auroc"])
    return np.array([cells[(INITIAL_WINDOW, f"{WINDOW_PREFIX}{j}", "auroc")][0] for j in range(n_windows)])


def evaluate_run(
    windows: Sequence[Mapping[str, np.ndarray]],
    threshold: float = DEFAULT_THRESHOLD,
    initial: Mapping[str, np.ndarray] | None = None,
    initial_missing: str = NO_INITIAL,
) -> RunEvaluation:
    """Per-window table, AUROC matrix and aggregates of a run given its windows' arrays (index = k).

    `initial`: the arrays of the untrained model (same eval set), for b_j and FWT.
    """
    table = run_table(windows, threshold)
    init = None
    b = None
    if initial is not None:
        check_initial(initial, windows[0])
        init = initial_table(initial, threshold)
        b = initial_auroc(init, len(window_generator_ids(windows[0]["generator_id_to_name"],
                                                         windows[0]["windows_timeline"])))
    return RunEvaluation(table, matrix_from_table(table, "auroc"), summary_table(table, init, initial_missing),
                         init, b)


def check_initial(initial: Mapping[str, np.ndarray], first: Mapping[str, np.ndarray], source: str = layout.INITIAL_DIR
                  ) -> None:
    """The untrained model's arrays score the same eval set as window 0 (timeline, generators, composition)."""
    validate_eval_arrays(initial, source)
    if "window" in initial and int(np.asarray(initial["window"])) != INITIAL_WINDOW:
        raise ValueError(f"{source}: stored window scalar is {int(np.asarray(initial['window']))}, expected "
                         f"{INITIAL_WINDOW} (the model before any training)")
    for key in ("generator_id_to_name", "windows_timeline"):
        if not np.array_equal(initial[key], first[key]):
            raise ValueError(f"{source}: {key} differs from window 0's")
    if _composition(initial) != _composition(first):
        raise ValueError(f"{source}: eval set composition differs from window 0's; it must score the same eval set")


def load_run(paths: Sequence[str | Path]) -> list[dict[str, np.ndarray]]:
    """Load and validate the predictions files of a run, given in window order."""
    windows = [load_window_npz(p) for p in paths]
    check_run(windows)
    return windows
