"""Robustness grid: every window checkpoint of a run scored on the eval split under single graded degradations.

``genshift robustness RUN_DIR`` rebuilds each finished window's detector from its checkpoint, degrades every
eval image with one degradation at one level (JPEG quality, Gaussian blur, Gaussian noise, down-scaling, the
run's mandatory chain, and ``none`` as the clean reference), applies the detector's own resize/crop and
normalisation, and writes per (window, degradation, level) AUROC over the whole eval split.

Determinism: JPEG, blur and scaling have no randomness; the noise of eval position ``i`` comes from
``numpy.random.default_rng([NOISE_SEED, i])``; the mandatory chain is the run's own (profile and base seed
from run.json), so its level equals the run's recorded evaluation. Degraded inputs are prepared once per
level, shared by every window and cached on disk (``<cache>/robustness``, keyed by data, degradation, input
size and library versions; chunked stores, benchmark/array_store.py, whose size is checked against the free disk
before any level is built). Images are read through the image store, so every source kind works (files, and
the rows of an `aigenbench:` release). Outputs (in RUN_DIR, atomic): robustness.csv (window, degradation, level,
auroc, n), robustness_summary.csv (per window and degradation: mean, worst, relative drop from ``none``, and
for graded degradations whether AUROC is monotone within noise, `leaderboard.robustness_view.monotone_check`),
robustness.json (grid, provenance, the mandatory cell checked against the run's recorded AUROC),
robustness.png (one panel per degradation, one line per window) and robustness_scores.npz (per-image scores
of every row). `genshift leaderboard` and `genshift inspect` show them (leaderboard/robustness_view.py).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from benchmark.array_store import Field, make_spec
from benchmark.degradations import degrade
from benchmark.eval_plan import EvalPlan, make_eval_plan
from benchmark.images import crops_per_image, input_crops
from benchmark.imagestore import read_image
from benchmark.manifest import Manifest
from benchmark.sources import load_source, resolve_cache_dir
from benchmark.timeline import generator_id_to_name
from common.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from leaderboard.metrics import roc_auc
from leaderboard.robustness_view import (
    GRADED,
    MONOTONE_REPLICATES,
    MONOTONE_TOLERANCE,
    monotone_check,
    severity_order,
)

NOISE_SEED = 0x0B0B_5EED
MANDATORY_TOLERANCE = 1e-4  # |robustness mandatory AUROC - the run's recorded AUROC| allowed (float32 batch order)
# degradation -> graded levels; the first level of each graded family is its mildest.
DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "none": (0,),
    "jpeg": (100, 90, 80, 70, 60, 50),
    "blur": (0, 1, 2, 3),
    "noise": (0, 5, 10, 20),
    "scale": (1.0, 0.75, 0.5),
    "mandatory": (1,),
}
LEVEL_MEANING = {"none": "-", "jpeg": "JPEG quality (Pillow)", "blur": "Gaussian sigma (px)",
                 "noise": "Gaussian sigma (/255)", "scale": "down-scaling factor (area)",
                 "mandatory": "run's mandatory chain"}
CSV_FIELDS = ("window", "degradation", "level", "auroc", "n")
SUMMARY_FIELDS = ("window", "degradation", "mean_auroc", "worst_auroc", "worst_level", "clean_auroc",
                  "relative_drop", "monotone", "strict_monotone", "falls", "max_rise", "max_rise_low", "total_drop",
                  "auroc_se")
MONOTONE_FIELDS = SUMMARY_FIELDS[-7:]


class RobustnessError(ValueError):
    """The run directory or the requested grid cannot be scored; the message says what is wrong."""


# ------------------------------------------------------------------------------------------- degradations


def is_identity(kind: str, level: float) -> bool:
    """True where `apply_single` returns the image unchanged (none, blur 0, noise 0, scale 1): scored once."""
    return kind == "none" or (kind in ("blur", "noise") and float(level) == 0) or (kind == "scale" and float(level) == 1)


def apply_single(img: np.ndarray, kind: str, level: float, position: int, run_cfg: dict | None = None) -> np.ndarray:
    """One degradation at one level on a uint8 HWC RGB image (deterministic given ``position``)."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"apply_single needs a uint8 HxWx3 RGB image, got {img.dtype} {img.shape}")
    if kind == "none":
        return img
    if kind == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(level))
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.uint8).copy()
    if kind == "blur":
        return img if level == 0 else cv2.GaussianBlur(img, (0, 0), sigmaX=float(level), sigmaY=float(level),
                                                       borderType=cv2.BORDER_REFLECT_101)
    if kind == "noise":
        if level == 0:
            return img
        rng = np.random.default_rng([NOISE_SEED, int(position)])
        noisy = img.astype(np.float64) + rng.normal(0.0, float(level), size=img.shape)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    if kind == "scale":
        if level == 1.0:
            return img
        h, w = img.shape[:2]
        size = (max(1, round(w * float(level))), max(1, round(h * float(level))))
        return cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    if kind == "mandatory":
        deg = (run_cfg or {}).get("degradation", {})
        out, _ = degrade(img, int(position), deg.get("profile", "aigenbench-v1"), int(deg.get("base_seed", 4321)))
        return out
    raise RobustnessError(f"unknown degradation {kind!r}; choose from {sorted(DEFAULT_GRID)}")


def parse_grid(specs: Sequence[str] | None) -> dict[str, tuple[float, ...]]:
    """['jpeg', 'blur=0,2'] -> grid; None/empty -> DEFAULT_GRID. 'none' is always included (reference)."""
    if not specs:
        return dict(DEFAULT_GRID)
    grid: dict[str, tuple[float, ...]] = {"none": (0,)}
    for spec in specs:
        kind, sep, levels = spec.partition("=")
        if kind not in DEFAULT_GRID:
            raise RobustnessError(f"unknown degradation {kind!r} in {spec!r}; choose from {sorted(DEFAULT_GRID)}")
        try:
            grid[kind] = tuple(float(v) for v in levels.split(",")) if sep else DEFAULT_GRID[kind]
        except ValueError as exc:
            raise RobustnessError(f"bad levels in {spec!r}: expected comma-separated numbers") from exc
    return grid


# ----------------------------------------------------------------------------------------------- run inputs


def read_run(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    if not path.is_file():
        raise RobustnessError(f"{path} not found: {run_dir} is not a genshift run directory")
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise RobustnessError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(doc.get("config"), dict):
        raise RobustnessError(f"{path} has no resolved 'config'; it was not written by `genshift run`")
    return doc


def load_eval(run_doc: dict, cache_dir: Path | None, progress: bool) -> tuple[Manifest, EvalPlan]:
    """The run's manifest (checksum verified against run.json) and eval plan (same seeds as the run)."""
    cfg = run_doc["config"]
    cache = resolve_cache_dir(cache_dir or cfg.get("cache_dir"))
    manifest = load_source(cfg["dataset"], cache, progress=progress)
    want = run_doc.get("manifest_checksum")
    if want and manifest.checksum != want:
        raise RobustnessError(f"dataset {cfg['dataset']!r} under {cache} has manifest checksum {manifest.checksum}, "
                              f"but the run was made on {want}; point --cache-dir at the run's data")
    b = cfg["benchmark"]
    plan = make_eval_plan(manifest.split("eval"), generator_id_to_name(manifest.timeline), b["eval_balance_seed"],
                          b["eval_shuffle_seed"], b["eval_pairing_seed"])
    return manifest, plan


def window_dirs(run_dir: Path, windows: Sequence[int] | None) -> list[tuple[int, Path]]:
    """Finished windows (with a ``done`` marker), all or the chosen ones, in window order."""
    found = {}
    for d in run_dir.glob("window_*"):
        suffix = d.name.removeprefix("window_")
        if suffix.isdigit() and (d / "done").is_file():
            found[int(suffix)] = d
    if windows is not None:
        missing = sorted(set(windows) - set(found))
        if missing:
            raise RobustnessError(f"{run_dir}: window(s) {missing} are not finished (no 'done'); finished: "
                                  f"{sorted(found)}")
        return [(k, found[k]) for k in sorted(set(windows))]
    if not found:
        raise RobustnessError(f"{run_dir} has no finished window (window_<k>/done); run `genshift run` first")
    return sorted(found.items())


def level_input(root: str, path: str, kind: str, level: float, position: int, run_cfg: dict, size: int,
                strategy: str) -> np.ndarray:
    """One eval image decoded (through the image store: any source kind), degraded at one level and adapted to
    the detector input: uint8 (n_crops, 3, S, S)."""
    img = apply_single(read_image(root, path), kind, level, position, run_cfg)
    return np.ascontiguousarray(input_crops(img, size, strategy).transpose(0, 3, 1, 2))


def _level_job(args: tuple) -> np.ndarray:
    return level_input(*args)


def level_jobs(manifest: Manifest, plan: EvalPlan, kind: str, level: float, size: int, strategy: str, run_cfg: dict,
               limit: int | None) -> list[tuple]:
    by_id = {s.id: s for s in manifest.split("eval")}
    ids = plan.sample_ids if limit is None else plan.sample_ids[:limit]
    return [(str(manifest.root), by_id[int(sid)].path, kind, level, pos, run_cfg, size, strategy)
            for pos, sid in enumerate(ids)]


def prepare_level(manifest: Manifest, plan: EvalPlan, kind: str, level: float, size: int, strategy: str,
                  run_cfg: dict, limit: int | None, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 (N, n_crops, 3, S, S) in memory: every eval position degraded, then adapted to the detector input.

    ``out`` (an array of that shape) is filled instead of a new array.
    """
    jobs = level_jobs(manifest, plan, kind, level, size, strategy, run_cfg, limit)
    shape = (len(jobs), crops_per_image(strategy), 3, size, size)
    if out is None:
        out = np.empty(shape, np.uint8)
    elif out.shape != shape or out.dtype != np.uint8:
        raise ValueError(f"prepare_level: out must be uint8 {shape}, got {out.dtype} {out.shape}")
    for pos, job in enumerate(jobs):
        out[pos] = level_input(*job)
    return out


def _level_key(manifest: Manifest, kind: str, level: float, size: int, strategy: str, run_cfg: dict,
               limit: int | None) -> dict:
    """Everything that determines a level's prepared inputs (data, degradation, input, libraries)."""
    import PIL

    return {"manifest": manifest.checksum, "kind": kind, "level": float(level), "size": int(size),
            "strategy": strategy, "limit": limit, "noise_seed": NOISE_SEED,
            "versions": [np.__version__, cv2.__version__, PIL.__version__, torch.__version__],
            "chain": run_cfg.get("degradation") if kind == "mandatory" else None, "format": 2}


def level_spec(manifest: Manifest, plan: EvalPlan, kind: str, level: float, size: int, strategy: str, run_cfg: dict,
               limit: int | None):
    """The chunked store of one level: one uint8 (n_crops, 3, S, S) row per eval position."""
    n = len(plan.sample_ids) if limit is None else min(limit, len(plan.sample_ids))
    key = _level_key(manifest, kind, level, size, strategy, run_cfg, limit)
    return make_spec("robustness", key, n, {"pixels": Field("uint8", (crops_per_image(strategy), 3, size, size))})


def cached_level(cache_root: Path | None, manifest: Manifest, plan: EvalPlan, kind: str, level: float, size: int,
                 strategy: str, run_cfg: dict, limit: int | None, workers: int = 1):
    """prepare_level, read from / written to a chunked store under ``cache_root`` (the cache dir's parent of
    ``robustness/``) when given: rows (N, n_crops, 3, S, S), built chunk by chunk, resumed after a kill.

    The key covers manifest checksum, degradation and level, input size and strategy, the mandatory chain's
    settings and library versions, so a stale entry is never read; a damaged chunk is rebuilt.
    """
    if cache_root is None:
        return prepare_level(manifest, plan, kind, level, size, strategy, run_cfg, limit)
    from benchmark.store_build import cached_store

    spec = level_spec(manifest, plan, kind, level, size, strategy, run_cfg, limit)
    jobs = level_jobs(manifest, plan, kind, level, size, strategy, run_cfg, limit)
    arrays, _ = cached_store(Path(cache_root).parent, spec, _level_job, jobs, workers)
    return arrays["pixels"]


def check_level_budget(cache_root: Path, specs: list) -> None:
    """Refuse (RobustnessError, nothing built) when the levels still to build do not fit the free disk."""
    from benchmark.array_store import store_dir, store_progress
    from protocols.cache_plan import free_disk, human_bytes

    unique = {s.digest: s for s in specs}.values()  # identity levels share the clean store
    need = sum(max(0, s.estimate_bytes() - store_progress(store_dir(Path(cache_root).parent, s.kind, s.key), s)[1])
               for s in unique)
    free = free_disk(Path(cache_root))
    if need > free:
        raise RobustnessError(f"the degraded inputs of the {len(unique)} grid level(s) need {human_bytes(need)} more "
                              f"under {cache_root}, which has {human_bytes(free)} free; nothing was built. Choices: "
                              "--no-cache (prepare each level in memory, nothing written), --limit N, fewer "
                              "--degradation levels, or --cache-dir on a larger disk")


PRECISIONS = ("run", "32-true", "bf16-mixed", "16-mixed")


def run_runtime(doc: dict, precision: str = "run") -> tuple[str, bool]:
    """(eval precision, channels-last) to score with: the run's recorded ones for ``precision='run'``.

    run.json records the values `genshift run` resolved on its machine (``caches.runtime``); scoring the same
    way is what makes the `mandatory` cell equal the run's recorded AUROC (bf16 and fp32 differ slightly).
    """
    if precision not in PRECISIONS:
        raise RobustnessError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    runtime = (doc.get("caches") or {}).get("runtime") or {}
    channels_last = bool(runtime.get("channels_last", False))
    if precision != "run":
        return precision, channels_last
    recorded = runtime.get("eval_precision") or (doc["config"].get("eval") or {}).get("precision") or "32-true"
    if recorded not in PRECISIONS[1:]:  # e.g. 'auto' in an old run.json that did not record the resolved value
        print(f"[robustness] the run's eval precision {recorded!r} was not recorded resolved; scoring in 32-true "
              f"(pass --precision to choose)", file=sys.stderr)
        recorded = "32-true"
    return recorded, channels_last


@torch.no_grad()
def score_inputs(detector, inputs: np.ndarray, batch_size: int, precision: str = "32-true",
                 channels_last: bool = False) -> np.ndarray:
    """Fused P(fake) per image: the mean over crops of the logits, then a sigmoid (float64).

    Runs on the detector's device and normalises like the engine (protocols/module.py), under bf16/fp16
    autocast when ``precision`` says so; logits are taken in float32.
    """
    from protocols.module import DetectorModule  # the engine's own normalisation and logits

    device = next(detector.parameters()).device
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    if channels_last:
        detector = detector.to(memory_format=torch.channels_last)
    module = DetectorModule(detector, {"channels_last": channels_last}, 1).to(device)
    n, c = inputs.shape[:2]
    per = max(1, batch_size // c)  # positions per batch: batches hold whole positions' crops
    logits = []
    for i in range(0, n, per):
        block = np.array(inputs[i: i + per])  # a copy: cached inputs are read-only or read from a store
        x = torch.from_numpy(block.reshape(len(block) * c, *block.shape[2:])).to(device)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits.append(module.logits(x).cpu())
    fused = torch.cat(logits).view(n, c).mean(dim=1) if logits else torch.zeros(0)
    return torch.sigmoid(fused).double().numpy()


# ---------------------------------------------------------------------------------------------- the grid


def robustness_grid(run_dir: Path, windows: Sequence[int] | None = None, grid: dict | None = None,
                    batch_size: int | None = None, cache_dir: Path | None = None, limit: int | None = None,
                    progress: bool = True, use_cache: bool = True, device: str = "cpu",
                    precision: str = "run") -> list[dict]:
    """Rows (window, degradation, level, auroc, n) for every chosen window and grid cell (see `score_grid`)."""
    return score_grid(run_dir, windows, grid, batch_size, cache_dir, limit, progress, use_cache, device,
                      precision).rows


@dataclass
class GridScores:
    """The grid's rows plus what the monotone check and robustness_scores.npz need: labels and scores per row."""

    rows: list[dict]
    labels: np.ndarray  # (N,) int, eval positions 0..N-1
    sample_ids: np.ndarray  # (N,) manifest ids of those positions
    scores: list[np.ndarray]  # per row, fused P(fake) of the N positions (float64)
    runtime: dict | None = None  # precision, channels_last and batch size the scores were computed with


def score_grid(run_dir: Path, windows: Sequence[int] | None = None, grid: dict | None = None,
               batch_size: int | None = None, cache_dir: Path | None = None, limit: int | None = None,
               progress: bool = True, use_cache: bool = True, device: str = "cpu",
               precision: str = "run") -> GridScores:
    """Score every chosen window and grid cell; keep the per-image scores (for the monotone check).

    Prepared level inputs are cached under ``<cache>/robustness`` (the run's cache directory unless
    ``cache_dir`` is given) and shared by every run on the same data and input size. Batch size (default:
    the run's eval batch size), precision and memory layout follow the run unless given.
    """
    from detectors import load_detector_from_checkpoint

    if limit is not None and limit < 1:
        raise RobustnessError(f"--limit must be at least 1 eval position, got {limit}")
    run_dir = Path(run_dir)
    doc = read_run(run_dir)
    batch_size = int(batch_size or (doc["config"].get("eval") or {}).get("batch_size") or 64)
    if batch_size < 1:
        raise RobustnessError(f"--batch-size must be at least 1, got {batch_size}")
    precision, channels_last = run_runtime(doc, precision)
    grid = grid or dict(DEFAULT_GRID)
    chosen = window_dirs(run_dir, windows)
    manifest, plan = load_eval(doc, cache_dir, progress)
    labels = plan.labels if limit is None else plan.labels[:limit]
    detectors = {k: load_detector_from_checkpoint(d).to(device) for k, d in chosen}
    meta = next(iter(detectors.values())).meta
    strategy = (doc["config"].get("eval") or {}).get("input") or meta.eval_resize
    cache = resolve_cache_dir(cache_dir or doc["config"].get("cache_dir"))
    cache_root = cache / "robustness" if use_cache else None
    if cache_root is not None:
        check_level_budget(cache_root, [
            level_spec(manifest, plan, "none" if is_identity(kind, lv) else kind, 0 if is_identity(kind, lv) else lv,
                       meta.input_size, strategy, doc["config"], limit)
            for kind, levels in grid.items() for lv in levels])
    rows, scores = [], []
    clean: dict[int, np.ndarray] = {}  # scores of the unaltered inputs, shared by every identity level
    t0 = time.time()
    for kind, levels in grid.items():
        for level in levels:
            identity = is_identity(kind, level)
            if identity and clean:
                level_scores = clean
            else:
                inputs = cached_level(cache_root, manifest, plan, "none" if identity else kind, 0 if identity else level,
                                      meta.input_size, strategy, doc["config"], limit)
                level_scores = {k: score_inputs(det, inputs, batch_size, precision, channels_last)
                                for k, det in detectors.items()}
                clean = level_scores if identity else clean
            for k in detectors:
                scores.append(level_scores[k])
                auc = roc_auc(labels, scores[-1])
                rows.append({"window": k, "degradation": kind, "level": level, "auroc": auc, "n": int(len(labels))})
            if progress:
                print(f"[robustness] {kind}={level:g}: " + ", ".join(
                    f"w{r['window']} {r['auroc']:.3f}" for r in rows[-len(detectors):]) + f"  ({time.time() - t0:.0f}s)",
                    file=sys.stderr)
    ids = np.asarray(plan.sample_ids if limit is None else plan.sample_ids[:limit], dtype=np.int64)
    return GridScores(rows, np.asarray(labels, dtype=np.int64), ids, scores,
                      {"precision": precision, "channels_last": channels_last, "batch_size": batch_size})


def summarize(rows: list[dict], labels: np.ndarray | None = None, scores: Sequence[np.ndarray] | None = None,
              n_replicates: int = MONOTONE_REPLICATES) -> list[dict]:
    """Per (window, degradation): mean and worst AUROC over levels, and the worst's drop relative to 'none'.

    With the per-row ``scores`` (and ``labels``), graded degradations scored at two or more levels also get
    the "monotone within noise" verdict of `leaderboard.robustness_view.monotone_check` (paired bootstrap);
    otherwise those columns are empty.
    """
    if (labels is None) != (scores is None) or (scores is not None and len(scores) != len(rows)):
        raise ValueError("summarize: pass both labels and one score vector per row, or neither")
    clean = {r["window"]: r["auroc"] for r in rows if r["degradation"] == "none"}
    out = []
    keys = sorted({(r["window"], r["degradation"]) for r in rows}, key=lambda t: (t[0], list(DEFAULT_GRID).index(t[1])))
    for k, kind in keys:
        idx = [i for i, r in enumerate(rows) if r["window"] == k and r["degradation"] == kind
               and not math.isnan(r["auroc"])]
        cells = [rows[i] for i in idx]
        mono = dict.fromkeys(MONOTONE_FIELDS, "")
        if not cells:
            out.append({"window": k, "degradation": kind, "mean_auroc": math.nan, "worst_auroc": math.nan,
                        "worst_level": "", "clean_auroc": clean.get(k, math.nan), "relative_drop": math.nan} | mono)
            continue
        if scores is not None and kind in GRADED and len(idx) >= 2:
            ordered = sorted(idx, key=lambda i: severity_order(kind, [r["level"] for r in cells]).index(rows[i]["level"]))
            mono = monotone_check(labels, [scores[i] for i in ordered], n_replicates, seed=int(k))
        worst = min(cells, key=lambda r: r["auroc"])
        base = clean.get(k, math.nan)
        out.append({"window": k, "degradation": kind, "mean_auroc": float(np.mean([r["auroc"] for r in cells])),
                    "worst_auroc": worst["auroc"], "worst_level": worst["level"], "clean_auroc": base,
                    "relative_drop": (base - worst["auroc"]) / base if base and not math.isnan(base) else math.nan}
                   | {f: mono[f] for f in MONOTONE_FIELDS})
    return out


def _fmt(key: str, v: object) -> object:
    if not isinstance(v, float):
        return v
    return f"{v:g}" if key in ("level", "worst_level") else f"{v:.6f}"


def _csv(rows: list[dict], fields: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(k, v) for k, v in r.items()})
    return buf.getvalue()


def plot_grid(rows: list[dict], title: str, summary: list[dict] | None = None) -> bytes:
    """PNG: one panel per graded degradation (AUROC vs level, one line per window, their mean in black).

    With ``summary`` rows that carry monotone verdicts, each panel's title says how many windows are
    monotone within noise.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in DEFAULT_GRID if k not in ("none", "mandatory") and any(r["degradation"] == k for r in rows)]
    windows = sorted({r["window"] for r in rows})
    fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(3.4 * max(1, len(kinds)), 3.3), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, kind in zip(axes[0], kinds, strict=False):
        for i, k in enumerate(windows):
            pts = [(r["level"], r["auroc"]) for r in rows if r["window"] == k and r["degradation"] == kind]
            color = cmap(i / max(1, len(windows) - 1))
            ax.plot(range(len(pts)), [p[1] for p in pts], marker="o", color=color, label=f"w{k}")
            ax.set_xticks(range(len(pts)), [f"{p[0]:g}" for p in pts])
            clean = [r["auroc"] for r in rows if r["window"] == k and r["degradation"] == "none"]
            if clean:
                ax.axhline(clean[0], color=color, linestyle=":", linewidth=0.8)
            mand = [r["auroc"] for r in rows if r["window"] == k and r["degradation"] == "mandatory"]
            if mand:
                ax.axhline(mand[0], color=color, linestyle="--", linewidth=0.8)
        levels = [r["level"] for r in rows if r["window"] == windows[0] and r["degradation"] == kind]
        if len(windows) > 1:
            mean = [np.nanmean([r["auroc"] for r in rows if r["degradation"] == kind and r["level"] == lv])
                    for lv in levels]
            ax.plot(range(len(levels)), mean, color="black", linewidth=2.2, marker="s", label="mean")
        verdicts = [r for r in summary or [] if r["degradation"] == kind and r["monotone"] != ""]
        note = (f"\nmonotone within noise: {sum(bool(r['monotone']) for r in verdicts)}/{len(verdicts)} windows "
                f"(strict {sum(bool(r['strict_monotone']) for r in verdicts)})") if verdicts else ""
        ax.set_title(f"{kind}: {LEVEL_MEANING[kind]}{note}", fontsize=8)
        ax.set_ylabel("AUROC (eval split)")
        ax.grid(alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, title_fontsize=7,
               title="window\n(dotted: clean,\ndashed: mandatory)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def recorded_auroc(run_dir: Path, k: int) -> float | None:
    """AUROC over the whole eval split recorded by the run for window k (predictions.npz), if readable."""
    path = Path(run_dir) / f"window_{k}" / "predictions.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            return roc_auc(z["fused_labels"], z["fused_scores"])
    except (OSError, KeyError, ValueError):
        return None


def mandatory_check(run_dir: Path, rows: list[dict], limit: int | None) -> dict[str, dict]:
    """Per window: the run's recorded AUROC next to the grid's `mandatory` cell (they must agree: same inputs).

    A disagreement means the checkpoint or the eval inputs changed since the run scored that window; it is
    reported on stderr and recorded in robustness.json. Skipped under ``limit`` (a different eval subset).
    """
    out: dict[str, dict] = {}
    if limit is not None:
        return out
    for r in rows:
        if r["degradation"] != "mandatory":
            continue
        rec = recorded_auroc(run_dir, r["window"])
        agree = rec is not None and abs(rec - r["auroc"]) <= MANDATORY_TOLERANCE
        out[str(r["window"])] = {"recorded": rec, "robustness": r["auroc"], "agree": agree}
        if not agree:
            print(f"[robustness] WARNING: window {r['window']}: mandatory-chain AUROC {r['auroc']:.6f} differs from "
                  f"the run's recorded {rec if rec is None else round(rec, 6)}; was the checkpoint or the eval "
                  f"input changed since the run?", file=sys.stderr)
    return out


def write_outputs(run_dir: Path, rows: list[dict], grid: dict, limit: int | None,
                  scores: GridScores | None = None) -> list[Path]:
    """robustness.csv, robustness_summary.csv, robustness.json, robustness.png in ``run_dir`` (atomic).

    With ``scores`` the summary gets the monotone-within-noise columns and the per-image scores are kept in
    robustness_scores.npz (float32, one row per robustness.csv row, in its order).
    """
    run_dir = Path(run_dir)
    doc = read_run(run_dir)
    if scores is not None and scores.rows is not rows:
        raise ValueError("write_outputs: scores must be the GridScores whose rows are written")
    paths = [run_dir / f"robustness{s}" for s in (".csv", "_summary.csv", ".json", ".png")]
    atomic_write_text(paths[0], _csv(rows, CSV_FIELDS))
    summary = summarize(rows, scores.labels, scores.scores) if scores is not None else summarize(rows)
    atomic_write_text(paths[1], _csv(summary, SUMMARY_FIELDS))
    meta = {"grid": {k: list(v) for k, v in grid.items()}, "level_meaning": LEVEL_MEANING,
            "noise_seed": NOISE_SEED, "manifest_checksum": doc.get("manifest_checksum"),
            "eval_images": rows[0]["n"] if rows else 0, "limit": limit, "fusion": "mean of crop logits",
            "windows": sorted({r["window"] for r in rows}),
            "monotone_check": {"replicates": MONOTONE_REPLICATES, "level": 0.95, "seed": "window index",
                               "tolerance": MONOTONE_TOLERANCE, "strict_tolerance": 0.0,
                               "resampling": "fakes and reals redrawn separately, same draws for every level"},
            "scoring": scores.runtime if scores is not None else None,
            "mandatory_vs_recorded": mandatory_check(run_dir, rows, limit)}
    atomic_write_text(paths[2], json.dumps(meta, indent=2) + "\n")
    atomic_write_bytes(paths[3], plot_grid(rows, f"{run_dir.name}: robustness (eval AUROC)", summary))
    if scores is not None:
        path = run_dir / "robustness_scores.npz"
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(
                f, labels=scores.labels.astype(np.int8), sample_ids=scores.sample_ids,
                scores=np.stack(scores.scores).astype(np.float32) if scores.scores else np.zeros((0, 0), np.float32),
                window=np.array([r["window"] for r in rows], np.int64),
                degradation=np.array([r["degradation"] for r in rows]),
                level=np.array([r["level"] for r in rows], np.float64))
        paths.append(path)
    else:  # an older grid's per-image scores would no longer match robustness.csv
        (run_dir / "robustness_scores.npz").unlink(missing_ok=True)
    return paths


# --------------------------------------------------------------------------------------------------- CLI


def cmd_robustness(args: argparse.Namespace) -> int:
    grid = parse_grid(args.degradation)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = score_grid(Path(args.run_dir), args.window, grid, args.batch_size,
                            Path(args.cache_dir) if args.cache_dir else None, args.limit, not args.no_progress,
                            use_cache=not args.no_cache, device=args.device, precision=args.precision)
        paths = write_outputs(Path(args.run_dir), result.rows, grid, args.limit, result)
    except RobustnessError as e:  # a user error: one line, no traceback
        print(f"genshift: error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


def register(subparsers) -> None:
    """Add `robustness RUN_DIR`; sets ``args.handler(args) -> int``."""
    p = subparsers.add_parser("robustness", help="score a run's window checkpoints under graded degradations",
                              description="JPEG quality, Gaussian blur, Gaussian noise, down-scaling and the "
                                          "mandatory chain, one at a time; writes robustness.csv/.png in RUN_DIR.")
    p.add_argument("run_dir", help="a run directory (runs/<experiment>) with finished windows")
    p.add_argument("--window", type=int, action="append", help="only this window (repeatable; default all)")
    p.add_argument("--degradation", action="append", metavar="KIND[=L1,L2]",
                   help=f"only these degradations (repeatable), kinds: {', '.join(DEFAULT_GRID)}; default all")
    p.add_argument("--batch-size", type=int, help="scoring batch size (default: the run's eval.batch_size)")
    p.add_argument("--precision", default="run", choices=PRECISIONS,
                   help="scoring precision; 'run' (default) = the eval precision the run recorded, so the "
                        "mandatory cell reproduces the run's AUROC")
    p.add_argument("--cache-dir", help="where the run's dataset lives (default: the run's cache_dir)")
    p.add_argument("--limit", type=int, help="only the first N eval positions (quick look; recorded)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="torch device for scoring, e.g. cuda (default cpu)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write prepared degraded inputs")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=cmd_robustness)
