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

The layers: the degradations are `benchmark.single_degradations`, the prepared level inputs
`benchmark.robustness_levels`, the scoring loop the engine's (`protocols.scoring.score_batches`), the summaries,
plot and files `leaderboard.robustness_grid`; this module reads the run and scores the grid, and
protocols/robustness_cli.py is the command.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmark.eval_plan import EvalPlan, make_eval_plan
from benchmark.manifest import Manifest
from benchmark.robustness_levels import LevelInputs
from benchmark.single_degradations import DEFAULT_GRID, NOISE_SEED, is_identity
from benchmark.single_degradations import GridError as RobustnessError
from benchmark.sources import load_source, resolve_cache_dir
from benchmark.timeline import generator_id_to_name
from common import run_dir as layout
from leaderboard.metrics import roc_auc
from leaderboard.robustness_grid import GridScores, write_grid_files

__all__ = ["PRECISIONS", "GridOptions", "GridScores", "RobustnessError", "check_level_budget", "load_eval",
           "read_run", "robustness_grid", "run_runtime", "score_grid", "score_inputs", "window_dirs", "write_outputs"]


# ----------------------------------------------------------------------------------------------- run inputs


def read_run(run_dir: Path) -> dict:
    path = layout.run_json_path(run_dir)
    try:
        doc = layout.read_run_json(run_dir)
    except layout.RunJsonError as exc:
        raise RobustnessError(str(exc)) from exc
    if doc is None:
        raise RobustnessError(f"{path} not found: {run_dir} is not a genshift run directory")
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
    for d in layout.window_dirs(run_dir):
        if layout.is_done(d):
            found[layout.window_index(d)] = d
    if windows is not None:
        missing = sorted(set(windows) - set(found))
        if missing:
            raise RobustnessError(f"{run_dir}: window(s) {missing} are not finished (no 'done'); finished: "
                                  f"{sorted(found)}")
        return [(k, found[k]) for k in sorted(set(windows))]
    if not found:
        raise RobustnessError(f"{run_dir} has no finished window (window_<k>/done); run `genshift run` first")
    return sorted(found.items())


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


def score_inputs(detector, inputs: np.ndarray, batch_size: int, precision: str = "32-true",
                 channels_last: bool = False) -> np.ndarray:
    """Fused P(fake) per image: the mean over crops of the logits, then a sigmoid (float64).

    Scores through the engine's scoring loop (`protocols.scoring.score_batches`: its normalisation, autocast
    and logits) on the detector's device; batches hold whole positions' crops.
    """
    from protocols.module import DetectorModule
    from protocols.scoring import score_batches

    device = next(detector.parameters()).device
    if channels_last:
        detector = detector.to(memory_format=torch.channels_last)
    module = DetectorModule(detector, {"channels_last": channels_last}, 1)
    n, c = inputs.shape[:2]
    outputs = score_batches(module, _PositionBatches(inputs, max(1, batch_size // c)), precision, device)
    detector.to(device)  # the loop hands the module back on the CPU; the grid scores every level on `device`
    logits = [o[0].cpu() for o in outputs]
    fused = torch.cat(logits).view(n, c).mean(dim=1) if logits else torch.zeros(0)
    return torch.sigmoid(fused).double().numpy()


class _PositionBatches:
    """(crops of `per` positions, their positions) batches of a (N, n_crops, 3, S, S) uint8 array, in order."""

    def __init__(self, inputs: np.ndarray, per: int):
        self.inputs, self.per = inputs, per

    def __len__(self) -> int:
        return -(-len(self.inputs) // self.per)

    def __iter__(self):
        for i in range(0, len(self.inputs), self.per):
            block = np.array(self.inputs[i: i + self.per])  # a copy: cached inputs are read-only or from a store
            x = torch.from_numpy(block.reshape(len(block) * block.shape[1], *block.shape[2:]))
            yield [x, torch.arange(i, i + len(block))]


# ---------------------------------------------------------------------------------------------- the grid


@dataclass
class GridOptions:
    """What to score: windows (None: every finished one), the grid (None: DEFAULT_GRID), the batch size (None: the
    run's eval batch size), where the data is (None: the run's cache_dir), the first `limit` eval positions only,
    the prepared-input cache on or off, the device and the precision ('run': the run's recorded one)."""

    windows: Sequence[int] | None = None
    grid: dict | None = None
    batch_size: int | None = None
    cache_dir: Path | None = None
    limit: int | None = None
    progress: bool = True
    use_cache: bool = True
    device: str = "cpu"
    precision: str = "run"


def robustness_grid(run_dir: Path, windows: Sequence[int] | None = None, grid: dict | None = None,
                    **options) -> list[dict]:
    """Rows (window, degradation, level, auroc, n) for every chosen window and grid cell (see `score_grid`)."""
    return score_grid(run_dir, windows, grid, **options).rows


def score_grid(run_dir: Path, windows: Sequence[int] | None = None, grid: dict | None = None,
               **options) -> GridScores:
    """Score every chosen window and grid cell (keyword `options`: the fields of `GridOptions`); keep the
    per-image scores (for the monotone check).

    Prepared level inputs are cached under ``<cache>/robustness`` (the run's cache directory unless
    ``cache_dir`` is given) and shared by every run on the same data and input size. Batch size (default:
    the run's eval batch size), precision and memory layout follow the run unless given.
    """
    from detectors import load_detector_from_checkpoint

    opt = GridOptions(windows, grid, **options)
    if opt.limit is not None and opt.limit < 1:
        raise RobustnessError(f"--limit must be at least 1 eval position, got {opt.limit}")
    run_dir = Path(run_dir)
    doc = read_run(run_dir)
    batch_size = int(opt.batch_size or (doc["config"].get("eval") or {}).get("batch_size") or 64)
    if batch_size < 1:
        raise RobustnessError(f"--batch-size must be at least 1, got {batch_size}")
    precision, channels_last = run_runtime(doc, opt.precision)
    grid = opt.grid or dict(DEFAULT_GRID)
    chosen = window_dirs(run_dir, opt.windows)
    manifest, plan = load_eval(doc, opt.cache_dir, opt.progress)
    detectors = {k: load_detector_from_checkpoint(d).to(opt.device) for k, d in chosen}
    meta = next(iter(detectors.values())).meta
    strategy = (doc["config"].get("eval") or {}).get("input") or meta.eval_resize
    cache = resolve_cache_dir(opt.cache_dir or doc["config"].get("cache_dir"))
    cache_root = cache / "robustness" if opt.use_cache else None
    source = LevelInputs(manifest, plan, meta.input_size, strategy, doc["config"], opt.limit)
    if cache_root is not None:
        check_level_budget(cache_root, [source.spec(*_level_of(kind, lv)) for kind, levels in grid.items()
                                        for lv in levels])

    def score_level(kind: str, level: float) -> dict[int, np.ndarray]:
        inputs = source.cached(cache_root, *_level_of(kind, level))
        return {k: score_inputs(det, inputs, batch_size, precision, channels_last) for k, det in detectors.items()}

    labels = plan.labels if opt.limit is None else plan.labels[:opt.limit]
    rows, scores = _grid_rows(grid, list(detectors), labels, score_level, opt.progress)
    ids = np.asarray(plan.sample_ids if opt.limit is None else plan.sample_ids[:opt.limit], dtype=np.int64)
    return GridScores(rows, np.asarray(labels, dtype=np.int64), ids, scores,
                      {"precision": precision, "channels_last": channels_last, "batch_size": batch_size})


def _level_of(kind: str, level: float) -> tuple[str, float]:
    """The level whose inputs a cell reads: every identity level (none, blur 0, …) reads the clean inputs."""
    return ("none", 0) if is_identity(kind, level) else (kind, level)


def _grid_rows(grid: dict, windows: list[int], labels, score_level, progress: bool) -> tuple[list[dict], list]:
    """Rows and per-row scores of every grid cell and window; identity levels are scored once (the clean inputs)."""
    rows, scores = [], []
    clean: dict[int, np.ndarray] = {}  # scores of the unaltered inputs, shared by every identity level
    t0 = time.time()
    for kind, levels in grid.items():
        for level in levels:
            identity = is_identity(kind, level)
            level_scores = clean if identity and clean else score_level(kind, level)
            if identity:
                clean = level_scores
            for k in windows:
                scores.append(level_scores[k])
                rows.append({"window": k, "degradation": kind, "level": level, "auroc": roc_auc(labels, scores[-1]),
                             "n": int(len(labels))})
            if progress:
                print(f"[robustness] {kind}={level:g}: " + ", ".join(
                    f"w{r['window']} {r['auroc']:.3f}" for r in rows[-len(windows):]) + f"  ({time.time() - t0:.0f}s)",
                    file=sys.stderr)
    return rows, scores


def write_outputs(run_dir: Path, rows: list[dict], grid: dict, limit: int | None,
                  scores: GridScores | None = None) -> list[Path]:
    """robustness.csv, robustness_summary.csv, robustness.json, robustness.png (and with ``scores``
    robustness_scores.npz) in ``run_dir``: `leaderboard.robustness_grid.write_grid_files` with the run's
    provenance."""
    doc = read_run(Path(run_dir))
    return write_grid_files(run_dir, rows, grid, limit, scores,
                            {"noise_seed": NOISE_SEED, "manifest_checksum": doc.get("manifest_checksum")})
