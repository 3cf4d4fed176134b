"""Seeds of one configuration pooled into one row: mean ± sd over seeds and a two-level bootstrap interval.

Runs that share everything but the seed (`leaderboard.variants.configuration_key`) are S draws of one training
procedure, scored on one eval set. The interval of a pooled aggregate must cover both sources of variation:

1. seeds: replicate b draws S seeds with replacement (`seed_draws`, seeded by the bootstrap seed and the
   configuration, so every configuration draws independently and reproducibly);
2. samples: every drawn seed is scored on resample b of the eval set — the stratified resample of
   `leaderboard.bootstrap`, which is the same for every seed and every run (the seeds were evaluated on the same
   images, so the uncertainty of the eval set is shared by them, and pairing across rows is kept).

The replicate value is the mean over the drawn seeds of each seed's value on resample b: with the per-seed
replicate values A (S, B) already computed by the run bootstrap, that is one fancy-indexed mean,
`A[draws, arange(B)].mean(axis=1)` — no loop over replicates. With one seed it is the ordinary bootstrap.
The point value is the mean over seeds, `sd` their sample standard deviation (ddof 1; NaN for one seed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from leaderboard.bootstrap import DEFAULT_LEVEL, percentile_interval, recentred_interval


def seed_draws(n_seeds: int, n_replicates: int, seed: int, key: str) -> np.ndarray:
    """(B, S) indices of the seeds drawn with replacement in each replicate; all zeros for one seed."""
    if n_seeds < 1:
        raise ValueError(f"need at least one seed, got {n_seeds}")
    if n_seeds == 1:
        return np.zeros((n_replicates, 1), dtype=np.int64)
    tag = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    rng = np.random.default_rng([int(seed), tag])
    return rng.integers(0, n_seeds, size=(n_replicates, n_seeds))


def pooled_replicates(per_seed: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """(B,) two-level replicate values: mean over the seeds drawn in replicate b of their value on resample b."""
    per_seed = np.asarray(per_seed, dtype=float)
    if per_seed.ndim != 2 or draws.shape != (per_seed.shape[1], draws.shape[1]) or draws.max() >= per_seed.shape[0]:
        raise ValueError(f"per-seed replicates (S, B) {per_seed.shape} do not match draws (B, S) {draws.shape}")
    return per_seed[draws, np.arange(per_seed.shape[1])[:, None]].mean(axis=1)


@dataclass(frozen=True)
class Pooled:
    """One aggregate of a configuration: mean over seeds, sd, two-level interval and its replicate values."""

    value: float
    sd: float
    ci_low: float
    ci_high: float
    replicates: np.ndarray  # (B,)


def pool(points: Sequence[float], per_seed: np.ndarray, draws: np.ndarray, level: float = DEFAULT_LEVEL,
         bias_corrected: bool = False) -> Pooled:
    """Pool one aggregate over seeds; NaN when any seed's value is undefined (its reason says why).

    `bias_corrected`: the replicates re-centred on the point value (`bootstrap.recentred_interval`) before the
    percentile interval, for aggregates whose replicates are shifted from it (ECE).
    """
    p = np.asarray(points, dtype=float)
    reps = pooled_replicates(per_seed, draws)
    if p.size == 0 or np.isnan(p).any():
        nan = float("nan")
        return Pooled(nan, nan, nan, nan, reps)
    point = float(p.mean())
    lo, hi = recentred_interval(reps, point, level) if bias_corrected else percentile_interval(reps, level)
    sd = float(np.std(p, ddof=1)) if p.size > 1 else float("nan")
    return Pooled(point, sd, lo, hi, reps)


def paired_difference(a: np.ndarray, b: np.ndarray, point: float, level: float = DEFAULT_LEVEL) -> dict[str, float]:
    """Difference of two rows' pooled replicates (same eval resamples, independent seed draws): point, CI, p."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if np.isnan(point) or np.isnan(d).any():
        nan = float("nan")
        return {"difference": float(point), "ci_low": nan, "ci_high": nan, "p_two_sided": nan}
    lo, hi = percentile_interval(d, level)
    p = min(1.0, 2.0 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0))))
    return {"difference": float(point), "ci_low": lo, "ci_high": hi, "p_two_sided": p}
