"""Benchmark of the leaderboard build on fabricated runs (not a timed test): `bench_leaderboard()`.

`fabricate_run` writes a run directory in the genshift layout (run.json, window_<k>/predictions.npz with
the DESIGN §5 keys, done) with scores whose separation depends on whether a window was seen, so the
aggregates are meaningful. Tests use it too.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from common import predictions_file
from common import run_dir as layout

PROTOCOL = predictions_file.PROTOCOL_VERSION
CHECKSUM = "fabricated-manifest"


def fabricate_eval_set(n_images: int, n_windows: int, per_window: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Balanced eval set: n_images/2 fakes spread over the generators, each real paired to one of them."""
    n_gen = n_windows * per_window
    names = [f"gen{g:02d}" for g in range(n_gen)]  # already in sorted order: ids 1..n_gen
    rng = np.random.default_rng(seed)
    n_fake = n_images // 2
    fake_gen = 1 + np.arange(n_fake) % n_gen
    real_pair = rng.permutation(fake_gen)[: n_images - n_fake]
    gen = np.r_[fake_gen, np.zeros(n_images - n_fake, dtype=np.int64)]
    pairing = np.r_[np.full(n_fake, -1), real_pair]
    perm = rng.permutation(n_images)
    timeline = np.array([names[w * per_window : (w + 1) * per_window] for w in range(n_windows)], dtype=str)
    return {
        "fused_generator_ids": gen[perm].astype(np.int64),
        "pairing": pairing[perm].astype(np.int64),
        "fused_labels": (gen[perm] != 0).astype(np.int64),
        "fused_identifiers": np.arange(n_images, dtype=np.int64) * 3 + 7,
        "generator_id_to_name": np.array([""] + names, dtype=str),
        "windows_timeline": timeline,
    }


def window_scores(eval_set: dict[str, np.ndarray], k: int, skill: float, seed: int) -> np.ndarray:
    """P(fake) after window k: fakes of seen windows are well separated, unseen ones less so."""
    rng = np.random.default_rng(seed)
    gen = eval_set["fused_generator_ids"]
    per_window = eval_set["windows_timeline"].shape[1]
    window = (np.maximum(gen, 1) - 1) // per_window
    shift = np.where(window <= k, 2.0 * skill, 0.6 * skill / np.maximum(1, 1 + window - k))
    logits = rng.normal(-1.0, 1.0, gen.size) + np.where(gen == 0, 0.0, 1.0 + shift)
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _window_arrays(eval_set: dict[str, np.ndarray], scores: np.ndarray, k: int, manifest_checksum: str,
                   protocol_version: str, benchmark_type: str) -> dict[str, np.ndarray]:
    return dict(eval_set) | {
        "fused_scores": scores,
        "fused_logits": np.log(scores / (1 - scores)).astype(np.float32),
        "window": np.int64(k),
        "manifest_checksum": np.array(manifest_checksum),
        "protocol_version": np.array(protocol_version),
        "benchmark_type": np.array(benchmark_type),
    }


def fabricate_run(
    run_dir: Path,
    eval_set: dict[str, np.ndarray],
    skill: float = 1.0,
    seed: int = 0,
    detector: str = "fake_probe",
    manifest_checksum: str = CHECKSUM,
    protocol_version: str = PROTOCOL,
    n_done: int | None = None,
    benchmark_type: str = "cumulative",
    config: dict | None = None,
    initial: bool = False,
) -> Path:
    """Write run.json and n_done (default: all) finished windows of predictions into `run_dir`.

    `benchmark_type` "full" writes the one window of a full run (scores as if every window was seen);
    `config` is merged into run.json's config (variant fields such as degradation.profile); `initial` also
    writes the untrained model's window_init/predictions.npz (scores that barely separate the classes).
    """
    run_dir = Path(run_dir)
    n_windows = eval_set["windows_timeline"].shape[0]
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = _merge({"seed": seed, "detector": detector, "benchmark": {"type": benchmark_type}}, config or {})
    info = {
        "config": cfg,
        "protocol_version": protocol_version,
        "manifest_checksum": manifest_checksum,
        "benchmark_type": benchmark_type,
        "detector": {
            "name": detector, "mode": detector.rsplit("_", 1)[-1], "backbone": detector.rsplit("_", 1)[0],
            "n_params": 1000 + len(detector), "n_trainable": 10, "flops": 2.5e6,
        },
    }
    layout.write_run_json(run_dir, info)
    full = benchmark_type == "full"
    n = 1 if full else (n_windows if n_done is None else n_done)
    for k in range(n):
        wdir = layout.window_dir(run_dir, k)
        wdir.mkdir(exist_ok=True)
        scores = window_scores(eval_set, n_windows - 1 if full else k, skill, seed * 1000 + k)
        predictions_file.write(layout.predictions_path(wdir), _window_arrays(
            eval_set, scores, k, manifest_checksum, protocol_version, benchmark_type))
        layout.mark_done(wdir)
    if initial:
        wdir = layout.initial_dir(run_dir)
        wdir.mkdir(exist_ok=True)
        scores = window_scores(eval_set, -1, 0.1 * skill, seed * 1000 + 999)
        predictions_file.write(layout.predictions_path(wdir), _window_arrays(
            eval_set, scores, -1, manifest_checksum, protocol_version, benchmark_type))
    return run_dir


def bench_leaderboard(n_runs: int = 10, n_windows: int = 9, n_images: int = 72000, seed: int = 0) -> dict:
    """Time `write_leaderboard` (point metrics, 1000-replicate bootstrap, tables, plots) on fabricated runs."""
    from leaderboard.auroc_scan import compile_kernel
    from leaderboard.report import write_leaderboard

    jit_s = compile_kernel()  # once per install (numba caches the machine code on disk); not a leaderboard cost
    with tempfile.TemporaryDirectory(prefix="genshift-bench-") as tmp:
        root = Path(tmp)
        eval_set = fabricate_eval_set(n_images, n_windows, seed=seed)
        t0 = time.perf_counter()
        runs = [
            fabricate_run(root / f"run{i:02d}", eval_set, skill=0.5 + 0.1 * i, seed=seed + i,
                          detector=f"fake{i:02d}_probe")  # distinct configurations: one row each, not pooled
            for i in range(n_runs)
        ]
        t_fab = time.perf_counter() - t0
        t1 = time.perf_counter()
        timings: dict[str, float] = {}
        write_leaderboard(runs, root / "out", echo=False, timings=timings)
        total = time.perf_counter() - t1
    return {
        "n_runs": n_runs, "n_windows": n_windows, "n_images": n_images,
        "fabricate_s": round(t_fab, 2), "jit_compile_s": round(jit_s, 2), "leaderboard_s": round(total, 2),
        **{f"{k}_s": round(v, 2) for k, v in timings.items()},
    }


if __name__ == "__main__":
    print(json.dumps(bench_leaderboard(), indent=1))
