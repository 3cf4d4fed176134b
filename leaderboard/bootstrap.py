"""Stratified bootstrap confidence intervals for a run's continual aggregates (DESIGN §6), vectorised.

Resampling design. The eval set is split into strata: for each window j, its fakes (the fakes of its
generators) and its reals (the reals paired to its generators). Each replicate redraws every stratum with
replacement at its own size, independently of the other strata, so reals and fakes are resampled
separately and windows independently; every cell (a window's group, or a union such as `seen`) keeps its
numbers of fakes and reals. One replicate is one resampled eval set: the same draw is used for every
model k of a run, every group, and every run made on the same eval set (samples matched by
`fused_identifiers`), which keeps R[k, j] and R[k', j] correlated as they are (same images) and makes
`paired_difference` a paired comparison.

A replicate is stored as per-image multiplicities (counts, shape (N, B), uint8). The AUROC of a cell
under counts c is the Mann–Whitney statistic with weights, ties counted ½ exactly in integers. All cells
of one model (every window, `seen`, `future`) come from one compiled pass over its samples in score order
for all B replicates at once (`leaderboard.auroc_scan`).

Intervals are 95 % percentile intervals of the replicate values around the point estimate computed on the
original eval set (the values of `leaderboard.continual`).

The NEXT-cell aggregates that are weighted means (Brier, Cllr, accuracy/TPR/FPR at a threshold, and ECE with
its equal-mass bins fixed on the original cell) are exact linear functions of the multiplicities: one matrix
product per window gives them for every replicate. The past threshold and the ECE bins are those of the
original eval set, so these intervals are conditional on them. FWT's b_j comes from one more scan, of the
untrained model's scores (`leaderboard.initial`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from leaderboard.auroc_scan import model_twice_u, weighted_sums
from leaderboard.continual import AGGREGATES, NEXT_CELL_AGGREGATES
from leaderboard.groups import window_generator_ids
from leaderboard.metrics import DEFAULT_ECE_BINS, DEFAULT_THRESHOLD, LOG_LOSS_EPS, ece_bin_ids
from leaderboard.operating import past_threshold

DEFAULT_REPLICATES = 1000
DEFAULT_LEVEL = 0.95
CHUNK = 250  # replicates drawn together (memory of the draws ~ stratum size x CHUNK x 8 bytes)


@dataclass(frozen=True)
class EvalLayout:
    """The eval set in canonical order: all fakes (by window, then identifier), then all reals likewise."""

    identifiers: np.ndarray  # (N,) int64, canonical order
    generator_ids: np.ndarray  # (N,)
    pairing: np.ndarray  # (N,)
    fake_bounds: np.ndarray  # (K+1,) fakes of window j are rows fake_bounds[j]:fake_bounds[j+1]
    real_bounds: np.ndarray  # (K+1,) reals of window j are rows real_bounds[j]:real_bounds[j+1]
    digest: str  # sha256 of the canonical arrays: equal digests = same eval set

    @property
    def n_windows(self) -> int:
        return len(self.fake_bounds) - 1

    @property
    def n(self) -> int:
        return int(self.identifiers.shape[0])


def eval_layout(arrays: Mapping[str, np.ndarray], source: str = "arrays") -> EvalLayout:
    """Canonical layout of one window's eval set; needs unique `fused_identifiers`."""
    if "fused_identifiers" not in arrays:
        raise ValueError(
            f"{source}: the bootstrap needs 'fused_identifiers' to match samples across windows and runs"
        )
    ids = np.asarray(arrays["fused_identifiers"]).astype(np.int64)
    if np.unique(ids).size != ids.size:
        raise ValueError(f"{source}: fused_identifiers are not unique; samples cannot be matched")
    gen = np.asarray(arrays["fused_generator_ids"]).astype(np.int64)
    pairing = np.asarray(arrays["pairing"]).astype(np.int64)
    windows = window_generator_ids(arrays["generator_id_to_name"], arrays["windows_timeline"], source)
    window_of_gen = np.full(len(arrays["generator_id_to_name"]), -1, dtype=np.int64)
    for j, members in enumerate(windows):
        window_of_gen[members] = j
    is_real = gen == 0
    window = np.where(is_real, window_of_gen[np.where(is_real, pairing, 0)], window_of_gen[gen])
    if (window < 0).any():
        i = int(np.flatnonzero(window < 0)[0])
        raise ValueError(f"{source}: sample {ids[i]} belongs to no window (generator {gen[i]}, pairing {pairing[i]})")
    order = np.lexsort((ids, window, is_real))
    k = len(windows)
    fake_counts = np.bincount(window[~is_real], minlength=k)
    real_counts = np.bincount(window[is_real], minlength=k)
    fake_bounds = np.r_[0, np.cumsum(fake_counts)]
    real_bounds = fake_bounds[-1] + np.r_[0, np.cumsum(real_counts)]
    h = hashlib.sha256()
    for a in (ids[order], gen[order], pairing[order], fake_bounds, real_bounds):
        h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
    return EvalLayout(ids[order], gen[order], pairing[order], fake_bounds, real_bounds, h.hexdigest())


def canonical_scores(arrays: Mapping[str, np.ndarray], layout: EvalLayout, source: str = "arrays") -> np.ndarray:
    """`fused_scores` reordered to the layout's canonical order; refuses a different eval set."""
    ids = np.asarray(arrays["fused_identifiers"]).astype(np.int64)
    if ids.shape[0] != layout.n:
        raise ValueError(f"{source}: {ids.shape[0]} eval samples, the bootstrap layout has {layout.n}")
    by_id = np.argsort(ids, kind="stable")
    pos = np.searchsorted(ids[by_id], layout.identifiers)
    pos = np.minimum(pos, ids.shape[0] - 1)
    idx = by_id[pos]
    if not np.array_equal(ids[idx], layout.identifiers):
        raise ValueError(f"{source}: eval sample identifiers differ from the bootstrap layout's")
    for key, ref in (("fused_generator_ids", layout.generator_ids), ("pairing", layout.pairing)):
        if not np.array_equal(np.asarray(arrays[key])[idx], ref):
            raise ValueError(f"{source}: {key} of the same identifiers differ from the bootstrap layout's")
    return np.asarray(arrays["fused_scores"], dtype=np.float64)[idx]


@dataclass(frozen=True)
class BootstrapPlan:
    """Replicate multiplicities for one eval set, shared by every run compared on it."""

    layout: EvalLayout
    counts: np.ndarray  # (N, B) uint8 multiplicities, canonical row order
    seed: int
    n_replicates: int
    level: float = DEFAULT_LEVEL

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.layout.digest, self.seed, self.n_replicates)


def make_plan(
    layout: EvalLayout, n_replicates: int = DEFAULT_REPLICATES, seed: int = 0, level: float = DEFAULT_LEVEL
) -> BootstrapPlan:
    """Draw the stratified replicates (each stratum from its own child seed of `seed`)."""
    if n_replicates < 1:
        raise ValueError(f"n_replicates must be >= 1, got {n_replicates}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    bounds = np.r_[layout.fake_bounds, layout.real_bounds[1:]]
    counts = np.zeros((layout.n, n_replicates), dtype=np.uint8)
    strata = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
    for (lo, hi), ss in zip(strata, np.random.SeedSequence(seed).spawn(len(strata)), strict=True):
        size = hi - lo
        if size == 0:
            continue
        rng = np.random.default_rng(ss)
        for b0 in range(0, n_replicates, CHUNK):
            b1 = min(n_replicates, b0 + CHUNK)
            draws = rng.integers(0, size, size=(b1 - b0, size))
            flat = (draws + (np.arange(b1 - b0) * size)[:, None]).ravel()
            c = np.bincount(flat, minlength=(b1 - b0) * size).reshape(b1 - b0, size)
            if c.max() > 255:
                raise ValueError("a bootstrap multiplicity exceeded 255; cannot store it (stratum too small?)")
            counts[lo:hi, b0:b1] = c.T
    return BootstrapPlan(layout, counts, seed, n_replicates, level)


@dataclass
class RunBootstrap:
    """Replicate values of one run under a plan: AUROC cells and aggregates, each (B,) per entry."""

    plan_key: tuple[str, int, int]
    n_windows: int
    complete: bool
    r: np.ndarray  # (B, K, K) replicate R[k, j]; NaN where undefined
    seen: np.ndarray  # (B, K)
    future: np.ndarray  # (B, K)  (last column NaN)
    aggregates: dict[str, np.ndarray] = field(default_factory=dict)
    initial: np.ndarray | None = None  # (B, K) replicate b_j of the untrained model, when scored
    next_cells: dict[str, np.ndarray] = field(default_factory=dict)  # NEXT-cell metric -> (B, K-1)


def _row_windows(layout: EvalLayout) -> tuple[np.ndarray, np.ndarray]:
    """(window index, is_real) of every canonical row."""
    window = np.empty(layout.n, dtype=np.int64)
    is_real = np.zeros(layout.n, dtype=bool)
    for j in range(layout.n_windows):
        window[layout.fake_bounds[j] : layout.fake_bounds[j + 1]] = j
        window[layout.real_bounds[j] : layout.real_bounds[j + 1]] = j
        is_real[layout.real_bounds[j] : layout.real_bounds[j + 1]] = True
    return window, is_real


def _ratio(twice_u: np.ndarray, n_fake: int, n_real: int) -> np.ndarray:
    """AUROC = 2U / (2 · n_fake · n_real); NaN for a cell without fakes or reals."""
    if n_fake == 0 or n_real == 0:
        return np.full(twice_u.shape, np.nan)
    return twice_u / (2.0 * n_fake * n_real)


def _replicates(counts: np.ndarray, scores_by_k: Sequence[np.ndarray], layout: EvalLayout, workers: int):
    """(r, seen, future) replicate AUROCs of every model: one compiled pass per model (threads over models)."""
    kk = layout.n_windows
    b = counts.shape[1]
    window, is_real = _row_windows(layout)
    n_fake = np.diff(layout.fake_bounds)
    n_real = np.diff(layout.real_bounds)

    def one(k: int):
        return model_twice_u(counts, scores_by_k[k], window, is_real, k, kk)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        parts = list(pool.map(one, range(len(scores_by_k))))
    r = np.full((b, kk, kk), np.nan)
    seen = np.full((b, kk), np.nan)
    future = np.full((b, kk), np.nan)
    for k, (twice_u, twice_seen, twice_future) in enumerate(parts):
        for j in range(kk):
            r[:, k, j] = _ratio(twice_u[j], int(n_fake[j]), int(n_real[j]))
        seen[:, k] = _ratio(twice_seen, int(n_fake[: k + 1].sum()), int(n_real[: k + 1].sum()))
        if k < kk - 1:
            future[:, k] = _ratio(twice_future, int(n_fake[k + 1 :].sum()), int(n_real[k + 1 :].sum()))
    return r, seen, future


def aggregate_replicates(
    r: np.ndarray,
    seen: np.ndarray,
    future: np.ndarray,
    initial: np.ndarray | None = None,
    next_cells: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """The aggregates of `leaderboard.continual`, vectorised over a leading replicate axis.

    `initial` (B, K): b_j of the untrained model (FWT is NaN without it); `next_cells`: NEXT-cell metric ->
    (B, K-1) replicate values (`next_cell_replicates`; those aggregates are NaN without it).
    """
    b, kk, _ = r.shape
    nan = np.full(b, np.nan)
    out: dict[str, np.ndarray] = {}
    idx = np.arange(kk)
    out["next"] = r[:, idx[:-1], idx[:-1] + 1].mean(axis=1) if kk >= 2 else nan
    out["next_reference_variant_last_on_itself"] = r[:, idx, np.minimum(idx + 1, kk - 1)].mean(axis=1)
    out["seen_average"] = seen.mean(axis=1)
    out["future_average"] = future[:, : kk - 1].mean(axis=1) if kk >= 2 else nan
    if kk >= 2:
        j = idx[:-1]
        out["bwt"] = (r[:, kk - 1, j] - r[:, j, j]).mean(axis=1)
        lower = np.tril(np.ones((kk - 1, kk - 1), dtype=bool))
        upper = np.where(lower[None], r[:, : kk - 1, : kk - 1], -np.inf)
        out["forgetting"] = (upper.max(axis=1) - r[:, kk - 1, j]).mean(axis=1)
    else:
        out["bwt"] = out["forgetting"] = nan
    if kk >= 2 and initial is not None:
        j = idx[1:]
        out["fwt"] = (r[:, j - 1, j] - initial[:, j]).mean(axis=1)
    else:
        out["fwt"] = nan.copy()
    for name, metric in NEXT_CELL_AGGREGATES.items():
        cells = (next_cells or {}).get(metric)
        out[name] = cells.mean(axis=1) if cells is not None and kk >= 2 else nan.copy()
    return out


def next_cell_replicates(
    counts: np.ndarray,
    scores_by_k: Sequence[np.ndarray],
    layout: EvalLayout,
    thresholds: Sequence[float],
    n_bins: int = DEFAULT_ECE_BINS,
) -> dict[str, np.ndarray]:
    """Replicate values (B, K-1) of the NEXT-cell metrics of `NEXT_CELL_AGGREGATES`.

    Each is a weighted sum of the multiplicities (a stratum's size never changes): squared errors (Brier), log
    losses (Cllr), predicted-fake indicators at 0.5 and at `thresholds[k]`, the past threshold fixed after
    window k (NaN: those three metrics are NaN), and label − score per ECE bin of the original cell. One
    compiled pass over each stratum's multiplicities gives them all (`auroc_scan.weighted_sums`).
    """
    kk = layout.n_windows
    b = counts.shape[1]
    metrics = sorted(set(NEXT_CELL_AGGREGATES.values()))
    out = {m: np.full((b, max(kk - 1, 0)), np.nan) for m in metrics}
    n_out = 4 + n_bins  # squared error, log loss share, predicted fake at 0.5, at the past threshold, ECE bins
    for k in range(min(kk - 1, len(scores_by_k))):
        fs = np.arange(int(layout.fake_bounds[k + 1]), int(layout.fake_bounds[k + 2]))
        rs = np.arange(int(layout.real_bounds[k + 1]), int(layout.real_bounds[k + 2]))
        n_fake, n_real = fs.size, rs.size
        if n_fake == 0 or n_real == 0:
            continue
        t_past = float(thresholds[k])
        bins = ece_bin_ids(np.r_[scores_by_k[k][fs], scores_by_k[k][rs]], n_bins)
        sums = []
        for rows, label, n_class, cell_bins in ((fs, 1.0, n_fake, bins[:n_fake]), (rs, 0.0, n_real, bins[n_fake:])):
            s = scores_by_k[k][rows]
            p = np.clip(s, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
            loss = -np.log(p) if label else -np.log1p(-p)
            outputs = np.stack([np.zeros(s.size, np.int64), np.ones(s.size, np.int64), np.full(s.size, 2),
                                np.full(s.size, 3), 4 + cell_bins], axis=1)
            weights = np.stack([(s - label) ** 2, loss / n_class, (s > DEFAULT_THRESHOLD).astype(float),
                                (s > t_past).astype(float), label - s], axis=1)
            sums.append(weighted_sums(counts, rows, outputs, weights, n_out))
        fake, real = sums
        n = n_fake + n_real
        out["brier"][:, k] = (fake[0] + real[0]) / n
        out["cllr"][:, k] = (fake[1] + real[1]) / (2.0 * np.log(2.0))
        out["accuracy_at_threshold"][:, k] = (fake[2] + n_real - real[2]) / n
        out["tpr_at_threshold"][:, k] = fake[2] / n_fake
        out["fpr_at_threshold"][:, k] = real[2] / n_real
        if not np.isnan(t_past):
            out["accuracy_at_past_threshold"][:, k] = (fake[3] + n_real - real[3]) / n
            out["tpr_at_past_threshold"][:, k] = fake[3] / n_fake
            out["fpr_at_past_threshold"][:, k] = real[3] / n_real
        out["ece"][:, k] = np.abs(fake[4:] + real[4:]).sum(axis=0) / n
    return out


def bootstrap_run(
    windows: Sequence[Mapping[str, np.ndarray]],
    plan: BootstrapPlan,
    source: str = "run",
    workers: int = 2,
    initial: Mapping[str, np.ndarray] | None = None,
    thresholds: Sequence[float] | None = None,
) -> RunBootstrap:
    """Replicate AUROC cells and aggregates of a run (windows in order k = 0..) under `plan`.

    Models run on `workers` threads (the compiled scan releases the GIL). An incomplete run (fewer windows
    evaluated than its timeline has) gets NaN aggregates. `initial`: the untrained model's arrays (for FWT);
    `thresholds`: the past threshold of every window k (default: computed by `leaderboard.operating`).
    """
    layout = plan.layout
    kk = layout.n_windows
    scores = [canonical_scores(a, layout, f"{source} window {k}") for k, a in enumerate(windows)]
    b = plan.n_replicates
    if len(scores) != kk:
        nan = np.full(b, np.nan)
        return RunBootstrap(
            plan.key, kk, False, np.full((b, kk, kk), np.nan), np.full((b, kk), np.nan),
            np.full((b, kk), np.nan), {a: nan.copy() for a in AGGREGATES},
        )
    r, seen, future = _replicates(plan.counts, scores, layout, workers)
    b_init = None if initial is None else model_row_replicates(initial, plan, f"{source} window_init")
    if thresholds is None:
        thresholds = [past_threshold(a, k)[0] if k < kk - 1 else float("nan") for k, a in enumerate(windows)]
    cells = next_cell_replicates(plan.counts, scores, layout, thresholds)
    return RunBootstrap(plan.key, kk, True, r, seen, future, aggregate_replicates(r, seen, future, b_init, cells),
                        b_init, cells)


def model_row_replicates(
    arrays: Mapping[str, np.ndarray], plan: BootstrapPlan, source: str = "model"
) -> np.ndarray:
    """(B, K): replicate AUROC of one model's scores on every window's group (e.g. a `full` run's only model)."""
    return _replicate_row(plan.counts, canonical_scores(arrays, plan.layout, source), plan.layout)


def _replicate_row(counts: np.ndarray, scores: np.ndarray, layout: EvalLayout) -> np.ndarray:
    window, is_real = _row_windows(layout)
    twice_u, _, _ = model_twice_u(counts, scores, window, is_real, 0, layout.n_windows)
    n_fake = np.diff(layout.fake_bounds)
    n_real = np.diff(layout.real_bounds)
    return np.stack([_ratio(twice_u[j], int(n_fake[j]), int(n_real[j])) for j in range(layout.n_windows)], axis=1)


def _ones_plan(layout: EvalLayout) -> BootstrapPlan:
    return BootstrapPlan(layout, np.ones((layout.n, 1), dtype=np.uint8), 0, 1)


def point_estimates(
    windows: Sequence[Mapping[str, np.ndarray]],
    layout: EvalLayout,
    initial: Mapping[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Aggregates on the original eval set (every multiplicity 1) with the bootstrap's own code."""
    boot = bootstrap_run(windows, _ones_plan(layout), "windows", workers=1, initial=initial)
    return {a: float(v[0]) for a, v in boot.aggregates.items()}


def percentile_interval(values: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """(low, high) percentile interval of replicate values; NaN if any replicate is NaN."""
    v = np.asarray(values, dtype=float)
    if v.size == 0 or np.isnan(v).any():
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.percentile(v, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)


# Aggregates whose bootstrap replicates are biased away from the point value, so their interval is re-centred:
# ECE sums |Σ (label − score)| over bins, and resampling noise only ever adds to an absolute value (the
# replicates of a well-calibrated cell can lie wholly above its ECE).
BIAS_CORRECTED = frozenset({"ece"})


def recentred_interval(values: np.ndarray, point: float, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """Percentile interval of the replicates shifted by the bootstrap bias estimate (mean − point), so that they
    centre on the point value: the sampling spread around a biased statistic. NaN if any replicate is NaN."""
    v = np.asarray(values, dtype=float)
    if v.size == 0 or np.isnan(v).any() or np.isnan(point):
        return float("nan"), float("nan")
    return percentile_interval(v - (v.mean() - point), level)


def confidence_intervals(
    boot: RunBootstrap, point: Mapping[str, float], level: float = DEFAULT_LEVEL
) -> pd.DataFrame:
    """Rows (aggregate, value, ci_low, ci_high, n_replicates): point estimate and percentile interval."""
    rows = []
    for name in AGGREGATES:
        value = float(point.get(name, float("nan")))
        if name in BIAS_CORRECTED:
            lo, hi = recentred_interval(boot.aggregates[name], value, level)
        else:
            lo, hi = percentile_interval(boot.aggregates[name], level)
        if np.isnan(value):
            lo = hi = float("nan")
        rows.append((name, value, lo, hi, boot.r.shape[0]))
    return pd.DataFrame(rows, columns=["aggregate", "value", "ci_low", "ci_high", "n_replicates"])


def paired_difference(
    a: RunBootstrap,
    b: RunBootstrap,
    aggregate: str,
    point_a: float,
    point_b: float,
    level: float = DEFAULT_LEVEL,
) -> dict[str, float]:
    """Difference a − b of one aggregate with a percentile CI over the same replicates (paired).

    `p_two_sided` is twice the smaller fraction of replicate differences on either side of 0 (capped at 1).
    """
    if a.plan_key != b.plan_key:
        raise ValueError(
            "paired comparison needs both runs bootstrapped with the same plan (same eval set, seed and "
            f"number of replicates); got {a.plan_key[1:]} on {a.plan_key[0][:12]} vs "
            f"{b.plan_key[1:]} on {b.plan_key[0][:12]}"
        )
    if aggregate not in AGGREGATES:
        raise ValueError(f"unknown aggregate {aggregate!r}; known: {list(AGGREGATES)}")
    d = a.aggregates[aggregate] - b.aggregates[aggregate]
    lo, hi = percentile_interval(d, level)
    diff = float(point_a - point_b)
    if np.isnan(diff) or np.isnan(d).any():
        return {"difference": diff, "ci_low": float("nan"), "ci_high": float("nan"), "p_two_sided": float("nan")}
    p = min(1.0, 2.0 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0))))
    return {"difference": diff, "ci_low": lo, "ci_high": hi, "p_two_sided": p}
