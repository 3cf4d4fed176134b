"""Weighted Mann–Whitney counts of every cell of one model, for all bootstrap replicates, in one pass.

Why a compiled kernel: the bootstrap needs, per model k and replicate b, the AUROC of every window's cell,
of `seen` (windows <= k) and of `future` (windows > k). Walking the model's samples once in ascending score
order and keeping, per replicate, the resampled real mass below the current score (per window, seen side,
future side) gives all of them exactly in O(N·B) simple integer operations; numpy would need one prefix
sum per cell. The inner loops run over the replicate axis (contiguous), which LLVM vectorises.

With multiplicities c, 2U = Σ_fakes c_i (W(< s_i) + W(<= s_i)): ties count ½ exactly, in integers.

`weighted_sums` is the second kernel: multiplicity-weighted sums of per-sample values for every replicate in one
pass (the NEXT-cell calibration and threshold metrics of the bootstrap).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def _scan(counts, order, window, is_real, starts, k, n_windows):  # pragma: no cover - compiled
    n_rep = counts.shape[1]
    below = np.zeros((n_windows, n_rep), np.int32)  # real mass strictly below the current tie group
    group = np.zeros((n_windows, n_rep), np.int32)  # real mass inside the current tie group
    twice_u = np.zeros((n_windows, n_rep), np.int64)
    seen = np.zeros(n_rep, np.int64)
    future = np.zeros(n_rep, np.int64)
    below_seen = np.zeros(n_rep, np.int32)
    below_future = np.zeros(n_rep, np.int32)
    group_seen = np.zeros(n_rep, np.int32)
    group_future = np.zeros(n_rep, np.int32)
    for g in range(starts.shape[0] - 1):
        a = starts[g]
        e = starts[g + 1]
        if e - a == 1:  # no tie: a real adds to the mass below, a fake collects 2·W(< s)
            row = order[a]
            w = window[row]
            c = counts[row]
            if is_real[row]:
                bw = below[w]
                side = below_seen if w <= k else below_future
                for b in range(n_rep):
                    bw[b] += c[b]
                    side[b] += c[b]
            else:
                uw = twice_u[w]
                bw = below[w]
                for b in range(n_rep):
                    uw[b] += 2 * np.int64(c[b]) * bw[b]
                if w <= k:
                    for b in range(n_rep):
                        seen[b] += 2 * np.int64(c[b]) * below_seen[b]
                else:
                    for b in range(n_rep):
                        future[b] += 2 * np.int64(c[b]) * below_future[b]
            continue
        for i in range(a, e):  # tie group: first its real mass, then the fakes, then move the mass below
            row = order[i]
            if is_real[row]:
                w = window[row]
                c = counts[row]
                gw = group[w]
                side = group_seen if w <= k else group_future
                for b in range(n_rep):
                    gw[b] += c[b]
                    side[b] += c[b]
        for i in range(a, e):
            row = order[i]
            if not is_real[row]:
                w = window[row]
                c = counts[row]
                uw = twice_u[w]
                bw = below[w]
                gw = group[w]
                for b in range(n_rep):
                    uw[b] += np.int64(c[b]) * (2 * bw[b] + gw[b])
                if w <= k:
                    for b in range(n_rep):
                        seen[b] += np.int64(c[b]) * (2 * below_seen[b] + group_seen[b])
                else:
                    for b in range(n_rep):
                        future[b] += np.int64(c[b]) * (2 * below_future[b] + group_future[b])
        for i in range(a, e):
            row = order[i]
            if is_real[row]:
                w = window[row]
                bw = below[w]
                gw = group[w]
                for b in range(n_rep):
                    bw[b] += gw[b]
                    gw[b] = 0
        for b in range(n_rep):
            below_seen[b] += group_seen[b]
            below_future[b] += group_future[b]
            group_seen[b] = 0
            group_future[b] = 0
    return twice_u, seen, future


def model_twice_u(
    counts: np.ndarray, scores: np.ndarray, window: np.ndarray, is_real: np.ndarray, k: int, n_windows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2U per replicate of model k: (n_windows, B) window cells, (B,) seen and (B,) future.

    `counts` (N, B) uint8 multiplicities, `scores` (N,) the model's scores, `window` (N,) each sample's
    window, `is_real` (N,) bool; all in the same row order. A cell's AUROC is 2U / (2 · n_fake · n_real).
    """
    counts = np.ascontiguousarray(counts, dtype=np.uint8)
    order = np.argsort(scores, kind="stable").astype(np.int64)
    ordered = scores[order]
    starts = np.r_[0, np.flatnonzero(ordered[1:] != ordered[:-1]) + 1, scores.shape[0]].astype(np.int64)
    return _scan(counts, order, np.ascontiguousarray(window, dtype=np.int64),
                 np.ascontiguousarray(is_real, dtype=np.bool_), starts, int(k), int(n_windows))


def compile_kernel() -> float:
    """Compile (or load from numba's on-disk cache) the kernels; returns the seconds it took."""
    import time

    t0 = time.perf_counter()
    one = np.ones((2, 1), dtype=np.uint8)
    model_twice_u(one, np.array([0.2, 0.7]), np.zeros(2, np.int64), np.array([True, False]), 0, 1)
    weighted_sums(one, np.arange(2), np.zeros((2, 1), np.int64), np.ones((2, 1)), 1)
    return time.perf_counter() - t0


@njit(nogil=True, cache=True)
def _weighted_rows(counts, rows, outputs, weights, n_out):  # pragma: no cover - compiled
    n_rep = counts.shape[1]
    result = np.zeros((n_out, n_rep))
    for i in range(rows.shape[0]):
        c = counts[rows[i]]
        for j in range(outputs.shape[1]):
            w = weights[i, j]
            if w == 0.0:
                continue
            r = result[outputs[i, j]]
            for b in range(n_rep):
                r[b] += w * c[b]
    return result


def weighted_sums(counts: np.ndarray, rows: np.ndarray, outputs: np.ndarray, weights: np.ndarray,
                  n_out: int) -> np.ndarray:
    """(n_out, B): result[o, b] = Σ over rows i and slots j with outputs[i, j] = o of weights[i, j] · counts[rows[i], b].

    One pass over the rows' multiplicities (uint8, never converted) for all B replicates: the bootstrap's NEXT-cell
    means (Brier, Cllr, rates at a threshold, ECE per bin) are such sums. `outputs`/`weights` are (n, slots).
    """
    return _weighted_rows(np.ascontiguousarray(counts, dtype=np.uint8), np.ascontiguousarray(rows, dtype=np.int64),
                          np.ascontiguousarray(outputs, dtype=np.int64), np.ascontiguousarray(weights, dtype=np.float64),
                          int(n_out))
