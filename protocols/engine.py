"""The engine: train a detector window after window and score the whole eval split after each."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import re
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader

from benchmark.sources import default_cache_dir
from benchmark.worker_server import start_worker_server
from common import run_dir as layout
from common.atomic import atomic_write_json
from detectors import count_flops
from detectors.checkpoint import complete_checkpoint, load_checkpoint, save_checkpoint
from protocols import faults
from protocols.allocator import keep_large_allocations
from protocols.config import ConfigError, builds_pixel_caches, config_hash, validate_config
from protocols.config_schema import safe_name_problem
from protocols.distributed import (
    EvalBatches,
    TrainBatches,
    gather_crop_predictions,
    gather_predictions,
    launch_rank,
    world_size,
)
from protocols.localization import localization_line, score_window_localization
from protocols.loggers import log_window_metrics, make_loggers, step_offsets
from protocols.module import DetectorModule
from protocols.pipeline import check_pipeline_config
from protocols.predictions import (
    PROTOCOL_VERSION,
    RunIdentity,
    RunStamp,
    ScoredRows,
    source_format_arrays,
    variant_fields,
    window_summary,
    write_initial_predictions,
    write_predictions,
)
from protocols.provenance import git_commit, host_info, package_versions
from protocols.resume import (
    TRAIN_STATE,
    Preempted,
    WindowCheckpointer,
    check_stop,
    install_signal_handlers,
    load_train_state,
)
from protocols.run_inputs import RunInputs, features_in, prepare_run_inputs
from protocols.run_setup import (  # noqa: F401  (re-exported: callers import them from the engine)
    Benchmark,
    Prepared,
    benchmark_of,
    checked_manifest,
    create_run_detector,
    prepare_benchmark,
    prepare_run,
)
from protocols.rundir import RunDir
from protocols.scoring import eval_device, predict_in_process
from protocols.selection import WindowSelection, check_selection
from protocols.slurm import job_record
from protocols.strategies.hooks import StrategyHooks
from protocols.strategies.registry import resolve_strategy_config
from protocols.test_datasets import RunTestDatasets, read_threshold
from protocols.test_datasets import due as tests_due
from protocols.validation_inputs import RunValidation


@dataclass
class RunContext:
    """What every window of this process needs: the run's identity, its loggers, and this process's role."""

    run_id: str
    config_hash: str
    run_identity: str  # deterministic (config hash, seed, manifest): written into every predictions.npz
    rank: int
    loggers: list
    step_offsets: list[int]
    detector_kwargs: dict  # the factory's init arguments (the seed), recorded in each checkpoint.json
    strategy: StrategyHooks | None = None  # the continual-learning strategy's touch points (protocols/strategies)
    fields: dict = dataclasses.field(default_factory=dict)  # the variant fields (run.json and every npz)
    rows: dict = dataclasses.field(default_factory=dict)  # per-row npz arrays in eval order (source formats)
    validation: RunValidation | None = None  # the validation rows of each window (selection, thresholds)
    tests: RunTestDatasets | None = None  # test datasets scored beside the benchmark

    @property
    def writer(self) -> bool:
        """Only global rank 0 writes files; the other DDP processes compute alongside it."""
        return self.rank == 0

    def identity(self, k: int) -> dict:
        return {"run_id": self.run_id, "config_hash": self.config_hash, "window": k}


def experiment_name(cfg: dict) -> str:
    """The run directory's name: `experiment`, else one derived from dataset, detector, type and seed.

    Always one safe path component (config validation refuses an unsafe `experiment`; a derived name has every
    other character replaced), so a run directory is always a direct child of `runs_dir`."""
    if cfg.get("experiment"):
        name = str(cfg["experiment"])
        problem = safe_name_problem(name)
        if problem:
            raise ConfigError(f"config key experiment = {name!r}: {problem}")
        return name
    ds = str(cfg["dataset"]).replace(":", "-").replace("/", "_").strip("-_")[-40:]
    det = str(cfg["detector"]).replace(":", "-").replace("/", "_")
    cl = resolve_strategy_config(cfg.get("cl_strategy"))["name"]
    cl = "" if cl == "naive" else "__" + cl.replace(":", "-").replace("/", "_").replace("+", "p")
    name = f"{ds}__{det}__{cfg['benchmark']['type'].replace(':', '')}{cl}__seed{cfg['seed']}"
    return re.sub(r"[^A-Za-z0-9_.,+=@-]", "_", name).lstrip(".-")[:200] or "run"


def with_resolved_strategy(cfg: dict) -> dict:
    """A copy of `cfg` whose `cl_strategy` names the strategy with every parameter (defaults filled in), as run.json,
    the config hash and the leaderboard record it."""
    return {**cfg, "cl_strategy": resolve_strategy_config(cfg.get("cl_strategy"))}


def run_directory(cfg: dict) -> RunDir:
    """`runs_dir/<experiment>`; refuses a name that would leave runs_dir or be runs_dir itself."""
    runs_dir = Path(cfg["runs_dir"]).expanduser()
    path = runs_dir / experiment_name(cfg)
    if path.resolve().parent != runs_dir.resolve():
        raise ConfigError(f"run directory {path} resolves to {path.resolve()}, outside runs_dir {runs_dir.resolve()} "
                          "(a symbolic link?); use another --experiment")
    return RunDir(path)


def run_identity(cfg_hash: str, seed: int, manifest_checksum: str) -> str:
    """What a run's results are of, as 16 hex digits: its results-changing config (hash, seed included) on its
    manifest. Deterministic, so identical runs write identical predictions.npz files; stored in run.json and in
    every window's predictions.npz, where the leaderboard checks it (a window copied from another run is
    refused). run.json's `run_id` is another thing: a random id of this run directory's lifetime (logger runs)."""
    doc = f"genshift-run-identity:{cfg_hash}:seed={int(seed)}:{manifest_checksum}"
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def _say(msg: str, t0: float) -> None:
    elapsed = time.time() - t0
    print(f"[genshift {int(elapsed // 60):02d}:{int(elapsed % 60):02d}] {msg}", flush=True)


def _quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*`srun` command is available.*")  # one task: no srun needed
    warnings.filterwarnings("ignore", message=".*custom batch sampler `EvalBatches`.*")  # it returns every index
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training.*")  # probes


def _cluster_plugins() -> list:
    """Under SLURM, never let Lightning requeue or checkpoint by itself (genshift's script and callback do)."""
    if "SLURM_JOB_ID" not in os.environ:
        return []
    from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment

    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return [SLURMEnvironment(auto_requeue=False)]  # srun started one task per device
    return [LightningEnvironment()]  # one task; Lightning starts the other local processes itself


def _sync_batchnorm(cfg: dict, world: int) -> bool:
    """BatchNorm statistics over the global batch under DDP; torch supports this on GPUs only."""
    if world == 1 or not cfg.get("sync_batchnorm", True):
        return False
    acc = cfg.get("accelerator", "auto") or "auto"
    if acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available()):
        return True
    warnings.warn("sync_batchnorm: SyncBatchNorm needs GPUs; on CPU each DDP process normalises with its own "
                  "part of the batch (results differ from one process for detectors that train BatchNorm)",
                  stacklevel=2)
    return False


def _trainer(cfg: dict, precision: str, progress: bool, loggers: list | bool, n_batches: int = 10,
             callbacks: list | None = None, accumulate: int = 1) -> L.Trainer:
    world = world_size(cfg)
    strategy = cfg.get("strategy", "auto") or "auto"
    return L.Trainer(
        accelerator=cfg.get("accelerator", "auto") or "auto",
        devices=int(cfg.get("devices", 1) or 1),
        num_nodes=int(cfg.get("num_nodes", 1) or 1),
        strategy="ddp" if strategy == "auto" and world > 1 else strategy,
        sync_batchnorm=_sync_batchnorm(cfg, world),
        use_distributed_sampler=False,  # genshift's samplers split batches across ranks without padding
        plugins=_cluster_plugins(),
        callbacks=callbacks or [],
        max_epochs=1,  # the window's batch sampler already holds all `train.epochs` epochs back to back
        precision=precision,
        gradient_clip_val=cfg["train"]["grad_clip"],
        accumulate_grad_batches=accumulate,
        logger=loggers,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(10, n_batches)),
        deterministic=True,
    )


def run_experiment(cfg: dict, force_new: bool = False, progress: bool = True,
                   prepared: Prepared | None = None) -> Path:
    """Run (or resume) the whole benchmark described by `cfg`; returns the run directory.

    `prepared`: what `prepare_run(cfg)` returned (the CLI calls it before importing this module, so a run whose
    caches do not fit is refused within seconds); made here otherwise.
    """
    t0 = time.time()
    cfg = with_resolved_strategy(cfg)  # cl_strategy with every parameter (a bare name given in Python included)
    validate_config(cfg)  # typed and checked before any directory, dataset or model is touched
    check_pipeline_config(cfg)  # a wrong eval.pipeline/input/normalize combination fails as early
    _quiet_lightning()
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    keep_large_allocations()  # recorded in run.json (caches.runtime.malloc)
    install_signal_handlers()
    if builds_pixel_caches(cfg):  # `genshift run` started it already (then this finds it running); API callers
        start_worker_server()  # cache-building workers start in milliseconds once it is up
    rd = run_directory(cfg)
    # The caches' sizes are checked against the budget and the free disk before any image is decoded.
    prepared = prepared or prepare_run(cfg, progress)
    made = (prepared.detector, prepared.detector_kwargs)
    bench = prepare_benchmark(cfg, progress, prepared.manifest)
    rank = launch_rank(cfg)
    if rank != 0:  # another DDP process: rank 0 holds the lock, checks the directory and writes the files
        return _run_guarded(cfg, bench, rd, t0, False, rank, made)
    rd.lock()
    rd.remove_temporaries()
    try:
        try:
            rd.check_compatible(cfg, bench.manifest.checksum)
        except Exception:
            if not force_new:
                raise
            rd.unlock()
            moved = rd.move_aside()
            _say(f"moved the old run directory aside to {moved}", t0)
            rd = RunDir(rd.path)
            rd.lock()
        return _run_guarded(cfg, bench, rd, t0, progress, rank, made)
    finally:
        rd.unlock()


def _run_guarded(cfg: dict, bench: Benchmark, rd: RunDir, t0: float, progress: bool, rank: int, made) -> Path:
    """Lightning ends a fit or predict on SIGTERM with SIGTERMException; genshift reports it as Preempted."""
    try:
        return _run_locked(cfg, bench, rd, t0, progress, rank, made)
    except SIGTERMException as e:
        raise Preempted("stopped on SIGTERM; run the same command again to resume") from e


def _run_locked(cfg: dict, bench: Benchmark, rd: RunDir, t0: float, progress: bool, rank: int = 0,
                made: tuple | None = None) -> Path:
    seed = int(cfg["seed"])
    detector, detector_kwargs = made or create_run_detector(cfg)
    L.seed_everything(seed, workers=True, verbose=False)  # from the seed again, whatever ran since the creation
    if detector.meta.flops is None:
        count_flops(detector)  # one eval-mode forward under no_grad: recorded in run.json and the leaderboard
    meta = detector.meta
    cache_dir = Path(cfg["cache_dir"]).expanduser() if cfg.get("cache_dir") else default_cache_dir()
    n_steps = len(bench.train_sets)
    K = len(bench.windows)
    _say(
        f"{bench.manifest.name}: {K} windows of generators, {n_steps} training step(s) "
        f"({bench.benchmark_type}), {len(bench.plan.sample_ids)} eval images; detector {meta.name}",
        t0,
    )
    inputs = bench.inputs = prepare_run_inputs(cfg, bench, detector, cache_dir, progress, lambda m: _say(m, t0),
                                               world_size(cfg))
    cache_key = inputs.eval_key
    strategy = cache_key["input_strategy"]
    previous = rd.read_run_json() or {}
    ctx = RunContext(
        run_id=previous.get("run_id") or uuid.uuid4().hex[:16], config_hash=config_hash(cfg),
        run_identity=run_identity(config_hash(cfg), seed, bench.manifest.checksum), rank=rank,
        loggers=[],
        step_offsets=step_offsets([len(s) for s in bench.train_sets], int(cfg["train"]["batch_size"]),
                                  int(cfg["train"]["epochs"])),
        detector_kwargs=detector_kwargs,
        fields=variant_fields(cfg, bench.manifest.checksum, str(bench.benchmark_type)),
        rows=source_format_arrays(bench.manifest, bench.plan.sample_ids),
    )
    ctx.strategy = StrategyHooks(cfg, bench.manifest, eval_device(cfg), bench.inputs.workers, lambda m: _say(m, t0),
                                 ctx.writer)
    ctx.validation, ctx.tests = _held_out_data(cfg, bench, detector, cache_dir, progress, t0)
    attempts = list(previous.get("attempts", [])) + [
        {"started": dt.datetime.now().isoformat(timespec="seconds"), "host": host_info().get("hostname"),
         "processes": world_size(cfg), **job_record()}]
    if ctx.writer:
        ctx.loggers = make_loggers(cfg, rd.path, ctx.run_id, rd.path.name)
        rd.write_run_json(
            {
                "run_id": ctx.run_id,
                "run_identity": ctx.run_identity,
                "attempts": attempts,
                "slurm": job_record() or previous.get("slurm"),
                "config": cfg,
                "config_hash": config_hash(cfg),
                "protocol_version": PROTOCOL_VERSION,
                "manifest_checksum": bench.manifest.checksum,
                "dataset": {"name": bench.manifest.name, "spec": cfg["dataset"], "root": str(bench.manifest.root),
                            "skipped_images": bench.manifest.extra.get("skipped", [])},
                "windows": bench.windows,
                "benchmark_type": str(bench.benchmark_type),
                "cl_strategy": ctx.strategy.describe,
                "variant": ctx.fields,
                "seeds": {"seed": seed, **{k: v for k, v in cfg["benchmark"].items() if k.endswith("seed")},
                          "degradation_base_seed": cfg["degradation"]["base_seed"]},
                "detector": meta.to_dict() | {"eval_input": strategy},
                "eval_pipeline": inputs.pipeline.to_dict() if inputs.pipeline is not None else None,
                "eval_cache_key": cache_key,
                "caches": inputs.describe,
                "validation": ctx.validation.describe(),
                "test_datasets": ctx.tests.describe(),
                "packages": package_versions(),
                "host": host_info(),
                "git_commit": git_commit(),
                "created": previous.get("created", dt.datetime.now().isoformat(timespec="seconds")),
                "updated": dt.datetime.now().isoformat(timespec="seconds"),
            }
        )
    if ctx.writer:
        ctx.validation.write_ids(rd.path)
    start = 0
    while start < n_steps and rd.is_done(start):
        start += 1
    if start == 0 and _wants_initial(cfg, bench, rd):
        check_stop("before scoring the untrained model")
        _score_initial(cfg, bench, detector, inputs, rd, t0, progress, ctx)
    if start > 0:
        _score_missing_tests(cfg, detector, rd, start, n_steps, ctx, t0)
        load_checkpoint(detector, rd.window(start - 1))
        ctx.strategy.restore_after(rd.window(start - 1), ctx.identity(start - 1))
        _say(f"resuming: windows 0..{start - 1} are done, continuing at window {start}", t0)
    for k in range(start, n_steps):
        check_stop(f"before window {k}")
        train_metrics = _train_window(cfg, bench, detector, rd, k, t0, progress, ctx)
        check_stop(f"after training window {k}, before scoring it")
        _score_window(cfg, bench, detector, inputs, rd, k, t0, progress, train_metrics, ctx)
        ctx.strategy.after_scoring(k)
    _say(f"all {n_steps} window(s) done in {rd.path}", t0)
    return rd.path


def _train_window(cfg, bench: Benchmark, detector, rd: RunDir, k: int, t0: float, progress: bool,
                  ctx: RunContext) -> dict:
    """Train window k — or continue it from its last train state, or skip it if its weights are final."""
    tc = bench.inputs.train_cfg  # cfg["train"] with precision and channels_last resolved for this machine
    meta = detector.meta
    ids = bench.train_sets[k]
    wdir = rd.window(k)
    identity = ctx.identity(k) | {"manifest_checksum": bench.manifest.checksum, "detector_name": meta.name}
    ds = bench.inputs.train_dataset(ids, k)  # cached pixels or probe features, or decoded + augmented on the fly
    window = ctx.strategy.window(k, len(bench.train_sets), detector, ids, ds, bench.inputs.train_dataset,
                                 int(tc["augmentation_factor"]), int(tc["batch_size"]))
    if complete_checkpoint(wdir, identity):
        load_checkpoint(detector, wdir)
        ctx.strategy.restore_after(wdir, ctx.identity(k))  # the strategy's state after this window's training
        _say(f"window {k + 1}/{len(bench.train_sets)}: training already finished, weights restored", t0)
        try:
            return json.loads((wdir / "train_metrics.json").read_text())
        except (OSError, ValueError):  # missing or damaged: the weights are what matters
            return {"window": k, "train": {"n_images": len(ids), "restored": True}}
    gens = bench.windows[k] if bench.benchmark_type.kind != "full" else ["all generators"]
    _say(f"window {k + 1}/{len(bench.train_sets)}: training on {len(ids)} images × {tc['augmentation_factor']} "
         f"copies (new generators: {', '.join(gens)})", t0)
    train_ds, extend = ctx.strategy.before_training(window)  # the strategy may add a memory to every batch
    # The global batch order is fixed per (seed, window) (a seeded randperm per epoch), so a resumed run
    # continues the same sequence from the first batch not yet done.
    accumulate = accumulation(tc)
    sampler = TrainBatches(len(ds), int(tc["batch_size"]), int(tc["epochs"]), int(cfg["seed"]) * 1_000_003 + k,
                           extend=extend, drop_last=bool(tc.get("drop_last", False)))
    state_identity = identity | {"n_copies": len(ds), "batch_size": sampler.batch_size, "batches": sampler.total}
    if accumulate > 1:
        state_identity["accumulate_grad_batches"] = accumulate
    state = load_train_state(wdir / TRAIN_STATE, state_identity) if ctx.writer else \
        load_train_state(wdir / TRAIN_STATE, None)
    sampler.start = state["batches_done"] if state else 0
    selection = _window_selection(cfg, bench, detector, k, sampler, ctx)
    if state:
        detector.load_trainable_state_dict(state["model"])
        ctx.strategy.restore_in_window(state.get("strategy"))
        selection.load_state_dict(state.get("selection"))
        _say(f"window {k + 1}/{len(bench.train_sets)}: resuming after batch {sampler.start}/{sampler.total}", t0)
    loader = DataLoader(train_ds, batch_sampler=sampler, num_workers=bench.inputs.workers(ds),
                        generator=torch.Generator().manual_seed(int(cfg["seed"]) * 1_000_003 + k),
                        persistent_workers=False, pin_memory=torch.cuda.is_available())
    total_steps = -(-sampler.total // accumulate)  # optimizer steps: one per `accumulate` batches (and the last)
    torch.manual_seed(int(cfg["seed"]) * 7919 + k)
    module = DetectorModule(detector, tc, total_steps, features_in=features_in(ds),
                            strategy=ctx.strategy.step_strategy, window=k)
    window.module = module
    module.step_offset = ctx.step_offsets[k] + sampler.start
    strategy_state = ctx.strategy.train_state_extra  # None: a stateless strategy
    saver = WindowCheckpointer(wdir / TRAIN_STATE, state_identity, int(tc.get("checkpoint_every_n_steps") or 0),
                               sampler.start, sampler.total, state, ctx.writer,
                               extra_state=lambda: ((strategy_state() if strategy_state else {})
                                                    | {"selection": selection.state_dict()}), accumulate=accumulate)
    extra_callbacks = bench.inputs.window_callbacks(k, ids, sampler)  # class weights, the video track's selection;
    # before the saver
    trainer = _trainer(cfg, tc["precision"], progress, ctx.loggers or False, len(loader),
                       callbacks=[*extra_callbacks, *selection.callbacks, saver], accumulate=accumulate)
    started = time.time()
    if len(sampler) and not selection.stopped:  # a resumed window that early stopping ended trains no further
        trainer.fit(module, train_dataloaders=loader)
    if saver.interrupted:
        raise Preempted(f"stopped on a signal in window {k} after batch {saver.done}/{sampler.total} "
                        f"(state saved in {wdir / TRAIN_STATE}); run the same command again to resume")
    selected = _finish_selection(selection, k, len(bench.train_sets), t0)
    ctx.strategy.after_training(window, wdir, ctx.identity(k))  # before the checkpoint marks the window trained
    metrics = {
        "window": k,
        "train": {
            "n_images": len(ids),
            "n_copies": len(ds),
            "steps": total_steps,
            "resumed_at_step": sampler.start,
            "seconds": round(time.time() - started, 2),
            "loss_mean": saver.loss_sum / saver.loss_count if saver.loss_count else None,
            "images_per_second": round(len(ds) * int(tc["epochs"]) / max(time.time() - started, 1e-9), 1),
        },
        "selection": selected,
    }
    if ctx.writer:
        wdir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(wdir / "train_metrics.json", metrics)
        save_checkpoint(detector, wdir, {"config": cfg, "training_complete": True, **identity,
                                         "detector_kwargs": ctx.detector_kwargs})
        bench.inputs.release_train()  # a per-window store of training copies is not needed any more
    return metrics


def accumulation(train_cfg: dict) -> int:
    """`train.accumulate_grad_batches`: batches whose gradients add up before each optimizer step (>= 1)."""
    a = train_cfg.get("accumulate_grad_batches", 1) or 1
    if isinstance(a, bool) or not isinstance(a, int) or a < 1:
        raise ValueError(f"train.accumulate_grad_batches: expected an integer >= 1, got {a!r}")
    return a


def _eval_logits(cfg, inputs: RunInputs, detector, progress: bool, label: str, fault_window: int):
    """(logits, crop positions) of the eval split from `detector` as it is now: one logit per eval item in position
    order (positions None), or one per crop with each crop's eval position (five_crop; fused by write_predictions)."""
    # Whole batches are dealt to ranks (no padded duplicates); every (position, logit) is gathered once.
    ds = inputs.eval_dataset()  # cached pixels or probe features, or decoded + degraded on the fly
    loader = DataLoader(ds, batch_sampler=EvalBatches(len(ds), int(cfg["eval"]["batch_size"])),
                        num_workers=inputs.workers(ds), collate_fn=getattr(ds, "collate", None),
                        pin_memory=torch.cuda.is_available() and inputs.workers(ds) > 0)
    module = DetectorModule(detector, inputs.train_cfg, 1, features_in=features_in(ds))
    module.fault_window = fault_window
    if world_size(cfg) == 1:  # a plain inference loop: no per-call Trainer set-up (protocols/scoring.py)
        outputs = predict_in_process(module, loader, inputs.eval_precision, eval_device(cfg), progress, label)
    else:
        outputs = _trainer(cfg, inputs.eval_precision, progress, False).predict(module, dataloaders=loader)
    if inputs.pipeline is not None and inputs.pipeline.multi_crop:  # one row per crop
        return gather_crop_predictions(outputs, len(inputs))
    logits, _ = gather_predictions(outputs, len(inputs))
    return logits, None


def _wants_initial(cfg, bench: Benchmark, rd: RunDir) -> bool:
    """Whether the untrained model is still to be scored: asked for, not a `full` run (it has no forward
    transfer), and no window_init/predictions.npz yet (the rename of that file is its commit)."""
    from leaderboard.initial import initial_path

    return bool(cfg["eval"].get("score_initial", True)) and bench.benchmark_type.kind != "full" \
        and not initial_path(rd.path).is_file()


@contextlib.contextmanager
def _rng_untouched():
    """Run a block without moving any random stream a later block draws from: torch (CPU and CUDA), NumPy's and
    Python's global generators are restored afterwards (scoring the untrained model must leave window 0's
    training exactly as it was without it)."""
    import random

    import numpy as np

    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def _fused(inputs: RunInputs, logits):
    """(scores, logits, extra): sequence items (segments, frames) fused into one score per video, the items kept in
    `extra`; (None, logits, None) for image runs."""
    if inputs.fuse is None:
        return None, logits, None
    return inputs.fuse(logits)


def _run_record(bench: Benchmark, inputs: RunInputs, ctx: RunContext) -> RunStamp:
    """What every predictions.npz of the run records besides its scores (the window's and the untrained model's)."""
    identity = RunIdentity(bench.manifest.checksum, str(bench.benchmark_type), ctx.run_identity, ctx.config_hash)
    return RunStamp(identity, bench.plan, bench.gen_names, bench.windows,
                    pipeline=inputs.pipeline.to_dict() if inputs.pipeline is not None else None,
                    cl_strategy=ctx.strategy.describe, fields=ctx.fields, rows=ctx.rows)


def _score_initial(cfg, bench: Benchmark, detector, inputs: RunInputs, rd: RunDir, t0: float, progress: bool,
                   ctx: RunContext) -> None:
    """Score the model before any training once: window_init/predictions.npz, FWT's b_j (leaderboard.initial).

    Called before window 0 trains, with the detector as it was built (a resumed window 0 restores its train state
    only inside `_train_window`); no random stream is consumed, so window 0's predictions are unchanged."""
    started = time.time()
    with _rng_untouched():
        logits, positions = _eval_logits(cfg, inputs, detector, progress, "scoring the untrained model", -1)
    if not ctx.writer:
        return
    scores, logits, extra = _fused(inputs, logits)
    path = write_initial_predictions(rd.path, _run_record(bench, inputs, ctx),
                                     ScoredRows(logits, scores, positions, extra))
    from leaderboard.continual import initial_table, load_window_npz

    table = initial_table(load_window_npz(path))
    auroc = table[(table["group"] == "all") & (table["metric"] == "auroc")]["value"].iloc[0]
    _say(f"untrained model scored ({path.parent.name}/, FWT's b_j): AUROC all {auroc:.3f} "
         f"in {time.time() - started:.1f}s", t0)


def _score_window(cfg, bench: Benchmark, detector, inputs: RunInputs, rd: RunDir, k: int, t0: float,
                  progress: bool, train_metrics: dict, ctx: RunContext) -> None:
    wdir = rd.window(k)
    started = time.time()
    logits, positions = _eval_logits(cfg, inputs, detector, progress, f"scoring window {k + 1}/{len(bench.train_sets)}",
                                     k)
    if not ctx.writer:
        return
    scores, logits, extra = _fused(inputs, logits)
    held_out, held_out_summary = _validation_arrays(cfg, k, train_metrics, ctx)
    write_predictions(layout.predictions_path(wdir), _run_record(bench, inputs, ctx), k,
                      ScoredRows(logits, scores, positions, (extra or {}) | held_out))
    summary = window_summary(layout.predictions_path(wdir))
    metrics = train_metrics | {"eval": summary | {"seconds": round(time.time() - started, 2)}} | held_out_summary
    loc = score_window_localization(detector, bench.manifest, bench.plan, wdir, summary["auroc"]["all"],
                                    pixel_threshold=_pixel_threshold(cfg, detector, k, ctx))
    if loc is not None:  # a map detector: window_<k>/localization.npz is written before metrics.json and done
        metrics["localization"] = loc
        _say(f"window {k + 1}/{len(bench.train_sets)} localization: {localization_line(loc)}", t0)
    metrics |= _score_tests(cfg, k, len(bench.train_sets), wdir, held_out, ctx, t0)
    atomic_write_json(wdir / "metrics.json", metrics)
    faults.die_if("before_done", k)
    layout.mark_done(wdir)
    (wdir / TRAIN_STATE).unlink(missing_ok=True)  # the window's final weights are in its checkpoint
    log_window_metrics(ctx.loggers, k, ctx.step_offsets[k] + int(train_metrics["train"].get("steps") or 0),
                       metrics)
    parts = ", ".join(f"{g} {v:.3f}" for g, v in summary["auroc"].items() if v == v)
    _say(f"window {k + 1}/{len(bench.train_sets)} scored: AUROC {parts}", t0)


# ------------------------------------------------------------------ validation, selection, test datasets


def _held_out_data(cfg: dict, bench: Benchmark, detector, cache_dir: Path, progress: bool,
                   t0: float) -> tuple[RunValidation, RunTestDatasets]:
    """The run's validation rows and test datasets; refuses a selection policy the run cannot follow and a bad
    test dataset before any window trains."""
    validation = RunValidation(cfg, bench, detector, cache_dir, progress)
    check_selection(cfg, detector, validation.present)
    if validation.present:
        d = validation.describe()
        _say(f"validation split ({d['origin']}, {d['split']} rows): {d['per_step']} per window; selection "
             f"{cfg['train']['selection']}, threshold {cfg['eval']['threshold']}", t0)
    tests = RunTestDatasets(cfg, bench, detector, cache_dir, progress, lambda m: _say(m, t0))
    tests.load()
    return validation, tests


def _window_selection(cfg: dict, bench: Benchmark, detector, k: int, sampler, ctx: RunContext) -> WindowSelection:
    """The policy's callbacks and resumable state for window k (on window k's validation rows only)."""
    return WindowSelection(cfg, detector, k, sampler, ctx.validation.window_set(k), ctx.validation.branch_set(k)
                           if cfg["train"]["selection"] == "best_val_accuracy" else None, bench.inputs.train_cfg,
                           bench.inputs.eval_precision, ctx.step_offsets[k])


def _finish_selection(selection: WindowSelection, k: int, n: int, t0: float) -> dict:
    """Give the detector the policy's weights and say which they are."""
    record = selection.finish()
    line = selection.line(record)
    if line:
        _say(f"window {k + 1}/{n}: {line}", t0)
    return record


def _validation_arrays(cfg: dict, k: int, train_metrics: dict, ctx: RunContext) -> tuple[dict, dict]:
    """npz arrays and metrics.json entries of window k's validation rows (scored with its final weights), its
    threshold and the selection that chose its weights."""
    from protocols.predictions import selection_arrays

    if not ctx.writer:
        return {}, {}
    arrays, summary = ctx.validation.window_arrays(k, eval_device(cfg), int(cfg["eval"]["batch_size"]))
    return arrays | selection_arrays(train_metrics.get("selection") or {"policy": "last"}), summary


def _pixel_threshold(cfg: dict, detector, k: int, ctx: RunContext) -> dict | None:
    """A map detector's pixel threshold chosen on window k's validation maps (None without a validation split)."""
    if not getattr(detector.meta, "has_localization", False) or not ctx.validation.present:
        return None
    from protocols.localization import validation_pixel_threshold

    ss = ctx.validation.window_set(k)
    return validation_pixel_threshold(detector, ctx.validation.bench.manifest, ss.samples, str(cfg["eval"]["threshold"]))


def _score_tests(cfg: dict, k: int, n: int, wdir: Path, held_out: dict, ctx: RunContext, t0: float) -> dict:
    """Score the test datasets after window k when due (`test_every`); metrics.json's `test_datasets` entry."""
    if not ctx.tests or not tests_due(cfg, k, n):
        return {}
    threshold = {key: v for key, v in held_out.items() if key.startswith("threshold")}
    out = ctx.tests.score(k, wdir, threshold, ctx, eval_device(cfg))
    _say(f"window {k + 1}/{n} test datasets: " + ", ".join(f"{name} AUROC {v['auroc']:.3f}" for name, v in
                                                            out.items()), t0)
    return {"test_datasets": out}


def _score_missing_tests(cfg: dict, detector, rd: RunDir, start: int, n: int, ctx: RunContext, t0: float) -> None:
    """Finished windows whose test predictions are missing (a test dataset added to a finished run's config) are
    scored from their checkpoints; the caller restores the weights it continues from."""
    if not ctx.tests or not ctx.writer:
        return
    for j in range(start):
        missing = ctx.tests.missing(rd.window(j)) if tests_due(cfg, j, n) else []
        if not missing:
            continue
        load_checkpoint(detector, rd.window(j))
        _say(f"window {j + 1}/{n} is done; scoring its missing test dataset(s) {[s.name for s in missing]} from its "
             "checkpoint", t0)
        ctx.tests.score(j, rd.window(j), read_threshold(rd.window(j)), ctx, eval_device(cfg), only=missing)
