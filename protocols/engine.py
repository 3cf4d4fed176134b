"""The engine: train a detector window after window and score the whole eval split after each."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader

from benchmark.worker_server import start_worker_server
from common import run_dir as layout
from common.atomic import atomic_write_json
from detectors import count_flops
from detectors.checkpoint import complete_checkpoint, load_checkpoint, save_checkpoint
from protocols.allocator import keep_large_allocations
from protocols.config import ConfigError, config_hash
from protocols.config_enums import Selection
from protocols.config_model import ConfigLike, RunConfig, run_config
from protocols.distributed import (
    EvalBatches,
    TrainBatches,
    gather_crop_predictions,
    gather_predictions,
    launch_rank,
    world_size,
)
from protocols.faults import fault_hook
from protocols.localization import WindowLocalization
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
from protocols.scoring import eval_device, score_batches
from protocols.selection import WindowSelection, check_selection
from protocols.slurm import job_record
from protocols.strategies.hooks import StrategyHooks
from protocols.test_datasets import RunTestDatasets, ScoreTestDatasets, read_threshold
from protocols.test_datasets import due as tests_due
from protocols.trainer import quiet_lightning, run_trainer
from protocols.validation_inputs import RunValidation
from protocols.value_checks import safe_name_problem
from protocols.window_hooks import WindowHooks, WindowState


@dataclass
class RunContext:
    """What every window of this process needs: the run's identity, its loggers, this process's role, and the
    window hooks (protocols/window_hooks.py) through which the tracks attach."""

    run_id: str
    config_hash: str
    run_identity: str  # deterministic (config hash, seed, manifest): written into every predictions.npz
    rank: int
    loggers: list
    step_offsets: list[int]
    detector_kwargs: dict  # the factory's init arguments (the seed), recorded in each checkpoint.json
    say: Callable[[str], None] = print  # the run log's line, with the time since the start
    progress: bool = True
    strategy: StrategyHooks | None = None  # the continual-learning strategy's touch points (protocols/strategies)
    fields: dict = dataclasses.field(default_factory=dict)  # the variant fields (run.json and every npz)
    rows: dict = dataclasses.field(default_factory=dict)  # per-row npz arrays in eval order (source formats)
    validation: RunValidation | None = None  # the validation rows of each window (selection, thresholds)
    tests: RunTestDatasets | None = None  # test datasets scored beside the benchmark
    hooks: WindowHooks = dataclasses.field(default_factory=WindowHooks)

    @property
    def writer(self) -> bool:
        """Only global rank 0 writes files; the other DDP processes compute alongside it."""
        return self.rank == 0

    def identity(self, k: int) -> dict:
        return {"run_id": self.run_id, "config_hash": self.config_hash, "window": k}

    def window_state(self, k: int, n_windows: int, wdir: Path | None, detector) -> WindowState:
        """The state of window k that the hooks see (k = -1: the untrained model)."""
        return self.hooks.state(k, n_windows, wdir, detector, writer=self.writer, say=self.say,
                                identity=self.identity(k))


def experiment_name(cfg: ConfigLike) -> str:
    """The run directory's name: `experiment`, else one derived from dataset, detector, type and seed.

    Always one safe path component (config validation refuses an unsafe `experiment`; a derived name has every
    other character replaced), so a run directory is always a direct child of `runs_dir`."""
    rc = run_config(cfg)
    if rc.experiment:
        name = str(rc.experiment)
        problem = safe_name_problem(name)
        if problem:
            raise ConfigError(f"config key experiment = {name!r}: {problem}")
        return name
    ds = str(rc.dataset).replace(":", "-").replace("/", "_").strip("-_")[-40:]
    det = str(rc.detector).replace(":", "-").replace("/", "_")
    cl = rc.cl_strategy.name
    cl = "" if cl == "naive" else "__" + cl.replace(":", "-").replace("/", "_").replace("+", "p")
    spelling = rc.to_dict()["benchmark"]["type"]  # as the config writes it (`replay:0.50` names its directory so)
    name = f"{ds}__{det}__{spelling.replace(':', '')}{cl}__seed{rc.seed}"
    return re.sub(r"[^A-Za-z0-9_.,+=@-]", "_", name).lstrip(".-")[:200] or "run"


def run_directory(cfg: ConfigLike) -> RunDir:
    """`runs_dir/<experiment>`; refuses a name that would leave runs_dir or be runs_dir itself."""
    runs_dir = Path(run_config(cfg).runs_dir).expanduser()
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


def window_hooks(cfg: RunConfig, bench: Benchmark, detector, ctx: RunContext) -> WindowHooks:
    """The run's window hooks in call order: the continual-learning strategy, the localization maps (a detector
    with a localization head), the test datasets, and crash injection (only with GENSHIFT_DIE_AT; last, so it
    interrupts after the files of the hooks before it)."""
    hooks = WindowHooks([ctx.strategy])
    if getattr(detector.meta, "has_localization", False):
        hooks.append(WindowLocalization(bench.manifest, bench.plan, ctx.validation, cfg.eval.threshold))
    if ctx.tests:
        hooks.append(ScoreTestDatasets(ctx.tests, ctx, eval_device(cfg)))
    hooks.append(fault_hook())
    return hooks


def run_experiment(cfg: ConfigLike, force_new: bool = False, progress: bool = True,
                   prepared: Prepared | None = None) -> Path:
    """Run (or resume) the whole benchmark described by `cfg` (a RunConfig, or a mapping completed with base.yaml's
    defaults, its strategy resolved and validated here); returns the run directory.

    `prepared`: what `prepare_run(cfg)` returned (the CLI calls it before importing this module, so a run whose
    caches do not fit is refused within seconds); made here otherwise.
    """
    t0 = time.time()
    cfg = run_config(cfg)  # typed and checked before any directory, dataset or model is touched
    check_pipeline_config(cfg)  # a wrong eval.pipeline/input/normalize combination fails as early
    quiet_lightning()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    keep_large_allocations()  # recorded in run.json (caches.runtime.malloc)
    install_signal_handlers()
    if cfg.builds_pixel_caches:  # `genshift run` started it already (then this finds it running); API callers
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


def _run_guarded(cfg: RunConfig, bench: Benchmark, rd: RunDir, t0: float, progress: bool, rank: int, made) -> Path:
    """Lightning ends a fit or predict on SIGTERM with SIGTERMException; genshift reports it as Preempted."""
    try:
        return _run_locked(cfg, bench, rd, t0, progress, rank, made)
    except SIGTERMException as e:
        raise Preempted("stopped on SIGTERM; run the same command again to resume") from e


def _run_locked(cfg: RunConfig, bench: Benchmark, rd: RunDir, t0: float, progress: bool, rank: int = 0,
                made: tuple | None = None) -> Path:
    seed = cfg.seed
    detector, detector_kwargs = made or create_run_detector(cfg)
    L.seed_everything(seed, workers=True, verbose=False)  # from the seed again, whatever ran since the creation
    if detector.meta.flops is None:
        count_flops(detector)  # one eval-mode forward under no_grad: recorded in run.json and the leaderboard
    meta = detector.meta
    cache_dir = cfg.cache_path
    n_steps = len(bench.train_sets)
    _say(f"{bench.manifest.name}: {len(bench.windows)} windows of generators, {n_steps} training step(s) "
         f"({bench.benchmark_type}), {len(bench.plan.sample_ids)} eval images; detector {meta.name}", t0)
    inputs = bench.inputs = prepare_run_inputs(cfg, bench, detector, cache_dir, progress, lambda m: _say(m, t0),
                                               world_size(cfg))
    cache_key = inputs.eval_key
    strategy = cache_key["input_strategy"]
    previous = rd.read_run_json() or {}
    ctx = _run_context(cfg, bench, detector, rank, previous, detector_kwargs, lambda m: _say(m, t0), progress)
    ctx.validation, ctx.tests = _held_out_data(cfg, bench, detector, cache_dir, ctx)
    ctx.hooks = window_hooks(cfg, bench, detector, ctx)
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
                "config": cfg.to_dict(),
                "config_hash": config_hash(cfg),
                "protocol_version": PROTOCOL_VERSION,
                "manifest_checksum": bench.manifest.checksum,
                "dataset": {"name": bench.manifest.name, "spec": cfg.dataset, "root": str(bench.manifest.root),
                            "skipped_images": bench.manifest.extra.get("skipped", [])},
                "windows": bench.windows,
                "benchmark_type": str(bench.benchmark_type),
                "cl_strategy": ctx.strategy.describe,
                "variant": ctx.fields,
                "seeds": {"seed": seed, **{f.name: getattr(cfg.benchmark, f.name)
                                           for f in dataclasses.fields(cfg.benchmark) if f.name.endswith("seed")},
                          "degradation_base_seed": cfg.degradation.base_seed},
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
    start = _first_window(cfg, bench, detector, rd, ctx)
    for k in range(start, n_steps):
        check_stop(f"before window {k}")
        w = ctx.window_state(k, n_steps, rd.window(k), detector)
        _train_window(cfg, bench, w, ctx)
        check_stop(f"after training window {k}, before scoring it")
        _score_window(cfg, bench, w, ctx)
        ctx.hooks.on_window_end(w)
    _say(f"all {n_steps} window(s) done in {rd.path}", t0)
    return rd.path


def _run_context(cfg: RunConfig, bench: Benchmark, detector, rank: int, previous: dict, detector_kwargs: dict,
                 say: Callable[[str], None], progress: bool) -> RunContext:
    """This process's RunContext: the run's identity (its run id kept from run.json), step offsets, strategy."""
    seed = cfg.seed
    ctx = RunContext(
        run_id=previous.get("run_id") or uuid.uuid4().hex[:16], config_hash=config_hash(cfg),
        run_identity=run_identity(config_hash(cfg), seed, bench.manifest.checksum), rank=rank,
        loggers=[],
        step_offsets=step_offsets([len(s) for s in bench.train_sets], cfg.train.batch_size, cfg.train.epochs),
        detector_kwargs=detector_kwargs, say=say, progress=progress,
        fields=variant_fields(cfg, bench.manifest.checksum, str(bench.benchmark_type)),
        rows=source_format_arrays(bench.manifest, bench.plan.sample_ids),
    )
    ctx.strategy = StrategyHooks(cfg, bench.manifest, eval_device(cfg), bench.inputs.workers, say, ctx.writer)
    return ctx


def _first_window(cfg: RunConfig, bench: Benchmark, detector, rd: RunDir, ctx: RunContext) -> int:
    """The first window without `done`; before it, the untrained model is scored (a new run) or the weights and
    strategy state of the last finished window are restored (a resumed one)."""
    n_steps = len(bench.train_sets)
    start = 0
    while start < n_steps and rd.is_done(start):
        start += 1
    if start == 0 and _wants_initial(cfg, bench, rd):
        check_stop("before scoring the untrained model")
        _score_initial(cfg, bench, detector, rd, ctx)
    if start > 0:
        _score_missing_tests(cfg, detector, rd, start, n_steps, ctx)
        load_checkpoint(detector, rd.window(start - 1))
        ctx.strategy.restore_after(rd.window(start - 1), ctx.identity(start - 1))
        ctx.say(f"resuming: windows 0..{start - 1} are done, continuing at window {start}")
    return start


def _train_window(cfg: RunConfig, bench: Benchmark, w: WindowState, ctx: RunContext) -> None:
    """Train window k — or continue it from its last train state, or skip it if its weights are final; sets
    `w.train_metrics`."""
    tc = bench.inputs.train_cfg  # the train section with precision and channels_last resolved for this machine
    k, ids = w.k, bench.train_sets[w.k]
    identity = w.identity | {"manifest_checksum": bench.manifest.checksum, "detector_name": w.detector.meta.name}
    ds = bench.inputs.train_dataset(ids, k)  # cached pixels or probe features, or decoded + augmented on the fly
    w.context = ctx.strategy.window(k, w.n_windows, w.detector, ids, ds, bench.inputs.train_dataset,
                                    int(tc["augmentation_factor"]), int(tc["batch_size"]))
    if complete_checkpoint(w.wdir, identity):
        w.train_metrics = _restore_trained(w, ctx, len(ids))
        return
    gens = bench.windows[k] if bench.benchmark_type.kind != "full" else ["all generators"]
    ctx.say(f"window {k + 1}/{w.n_windows}: training on {len(ids)} images × {tc['augmentation_factor']} "
            f"copies (new generators: {', '.join(gens)})")
    w.train_dataset = ds
    ctx.hooks.before_training(w)  # the strategy may add a memory to every batch (w.train_dataset, w.extend)
    fit, selected = _fit_window(cfg, bench, w, ctx, len(ds), identity)
    ctx.hooks.after_training(w)  # before the checkpoint marks the window trained
    elapsed = time.time() - fit["started"]
    w.train_metrics = {
        "window": k,
        "train": {
            "n_images": len(ids),
            "n_copies": len(ds),
            "steps": fit["steps"],
            "resumed_at_step": fit["resumed_at_step"],
            "seconds": round(elapsed, 2),
            "loss_mean": fit["loss_mean"],
            "images_per_second": round(len(ds) * int(tc["epochs"]) / max(elapsed, 1e-9), 1),
        },
        "selection": selected,
    }
    if ctx.writer:
        w.wdir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(w.wdir / "train_metrics.json", w.train_metrics)
        save_checkpoint(w.detector, w.wdir, {"config": cfg.to_dict(), "training_complete": True, **identity,
                                             "detector_kwargs": ctx.detector_kwargs})
        bench.inputs.release_train()  # a per-window store of training copies is not needed any more


def _restore_trained(w: WindowState, ctx: RunContext, n_images: int) -> dict:
    """A window whose final weights are checkpointed: restore them and the strategy's state; its train metrics."""
    load_checkpoint(w.detector, w.wdir)
    ctx.strategy.restore_after(w.wdir, w.identity)  # the strategy's state after this window's training
    ctx.say(f"window {w.k + 1}/{w.n_windows}: training already finished, weights restored")
    try:
        return json.loads((w.wdir / "train_metrics.json").read_text())
    except (OSError, ValueError):  # missing or damaged: the weights are what matters
        return {"window": w.k, "train": {"n_images": n_images, "restored": True}}


def _fit_window(cfg: RunConfig, bench: Benchmark, w: WindowState, ctx: RunContext, n_copies: int,
                identity: dict) -> tuple[dict, dict]:
    """Fit window k from its first batch or from its last train state: ({steps, resumed_at_step, loss_mean,
    started}, the selection record). Raises Preempted when a signal stopped it (its state saved)."""
    tc, k = bench.inputs.train_cfg, w.k
    # The global batch order is fixed per (seed, window) (a seeded randperm per epoch), so a resumed run
    # continues the same sequence from the first batch not yet done.
    accumulate = accumulation(tc)
    sampler = TrainBatches(n_copies, int(tc["batch_size"]), int(tc["epochs"]), cfg.seed * 1_000_003 + k,
                           extend=w.extend, drop_last=bool(tc.get("drop_last", False)))
    state_identity = identity | {"n_copies": n_copies, "batch_size": sampler.batch_size, "batches": sampler.total}
    if accumulate > 1:
        state_identity["accumulate_grad_batches"] = accumulate
    state = load_train_state(w.wdir / TRAIN_STATE, state_identity if ctx.writer else None)
    sampler.start = w.batches_done = state["batches_done"] if state else 0
    selection = _window_selection(cfg, bench, w.detector, k, sampler, ctx)
    if state:
        w.detector.load_trainable_state_dict(state["model"])
        ctx.strategy.restore_in_window(state.get("strategy"))
        selection.load_state_dict(state.get("selection"))
        ctx.say(f"window {k + 1}/{w.n_windows}: resuming after batch {sampler.start}/{sampler.total}")
    loader = DataLoader(w.train_dataset, batch_sampler=sampler, num_workers=bench.inputs.workers(w.context.dataset),
                        generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + k),
                        persistent_workers=False, pin_memory=torch.cuda.is_available())
    total_steps = -(-sampler.total // accumulate)  # optimizer steps: one per `accumulate` batches (and the last)
    torch.manual_seed(cfg.seed * 7919 + k)
    module = DetectorModule(w.detector, tc, total_steps, features_in=features_in(w.context.dataset),
                            strategy=ctx.strategy.step_strategy, window=k)
    w.context.module = module
    module.step_offset = ctx.step_offsets[k] + sampler.start
    strategy_state = ctx.strategy.train_state_extra  # None: a stateless strategy
    saver = WindowCheckpointer(w.wdir / TRAIN_STATE, state_identity, int(tc.get("checkpoint_every_n_steps") or 0),
                               sampler.start, sampler.total, state, ctx.writer,
                               extra_state=lambda: ((strategy_state() if strategy_state else {})
                                                    | {"selection": selection.state_dict()}), accumulate=accumulate,
                               notify=w.notify)
    # class weights and the video track's selection, the policy's, the hooks', then the saver (last)
    callbacks = [*bench.inputs.window_callbacks(k, bench.train_sets[k], sampler), *selection.callbacks,
                 *ctx.hooks.fit_callbacks(w), saver]
    trainer = run_trainer(cfg, tc["precision"], ctx.progress, ctx.loggers or False, len(loader), callbacks=callbacks,
                          accumulate=accumulate)
    started = time.time()
    if len(sampler) and not selection.stopped:  # a resumed window that early stopping ended trains no further
        trainer.fit(module, train_dataloaders=loader)
    if saver.interrupted:
        raise Preempted(f"stopped on a signal in window {k} after batch {saver.done}/{sampler.total} "
                        f"(state saved in {w.wdir / TRAIN_STATE}); run the same command again to resume")
    selected = _finish_selection(selection, k, w.n_windows, ctx)
    loss_mean = saver.loss_sum / saver.loss_count if saver.loss_count else None
    return {"steps": total_steps, "resumed_at_step": sampler.start, "loss_mean": loss_mean, "started": started}, selected


def accumulation(train_cfg: dict) -> int:
    """`train.accumulate_grad_batches`: batches whose gradients add up before each optimizer step (>= 1)."""
    a = train_cfg.get("accumulate_grad_batches", 1) or 1
    if isinstance(a, bool) or not isinstance(a, int) or a < 1:
        raise ValueError(f"train.accumulate_grad_batches: expected an integer >= 1, got {a!r}")
    return a




def _eval_logits(cfg: RunConfig, inputs: RunInputs, detector, label: str, w: WindowState, ctx: RunContext):
    """(logits, crop positions) of the eval split from `detector` as it is now: one logit per eval item in position
    order (positions None), or one per crop with each crop's eval position (five_crop; fused by write_predictions)."""
    # Whole batches are dealt to ranks (no padded duplicates); every (position, logit) is gathered once.
    ds = inputs.eval_dataset()  # cached pixels or probe features, or decoded + degraded on the fly
    loader = DataLoader(ds, batch_sampler=EvalBatches(len(ds), cfg.eval.batch_size),
                        num_workers=inputs.workers(ds), collate_fn=getattr(ds, "collate", None),
                        pin_memory=torch.cuda.is_available() and inputs.workers(ds) > 0)
    module = DetectorModule(detector, inputs.train_cfg, 1, features_in=features_in(ds))
    callbacks = ctx.hooks.scoring_callbacks(w)
    # One process: a plain inference loop, no per-call Trainer set-up (protocols/scoring.py); DDP: Lightning's.
    trainer = None if world_size(cfg) == 1 else run_trainer(cfg, inputs.eval_precision, ctx.progress, False,
                                                            callbacks=callbacks)
    outputs = score_batches(module, loader, inputs.eval_precision, eval_device(cfg), ctx.progress, label, callbacks,
                            trainer)
    if inputs.pipeline is not None and inputs.pipeline.multi_crop:  # one row per crop
        return gather_crop_predictions(outputs, len(inputs))
    logits, _ = gather_predictions(outputs, len(inputs))
    return logits, None


def _wants_initial(cfg: RunConfig, bench: Benchmark, rd: RunDir) -> bool:
    """Whether the untrained model is still to be scored: asked for, not a `full` run (it has no forward
    transfer), and no window_init/predictions.npz yet (the rename of that file is its commit)."""
    from leaderboard.initial import initial_path

    return cfg.eval.score_initial and bench.benchmark_type.kind != "full" \
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




def _score_initial(cfg: RunConfig, bench: Benchmark, detector, rd: RunDir, ctx: RunContext) -> None:
    """Score the model before any training once: window_init/predictions.npz, FWT's b_j (leaderboard.initial).

    Called before window 0 trains, with the detector as it was built (a resumed window 0 restores its train state
    only inside `_train_window`); no random stream is consumed, so window 0's predictions are unchanged."""
    started = time.time()
    inputs = bench.inputs
    w = ctx.window_state(-1, len(bench.train_sets), None, detector)
    with _rng_untouched():
        logits, positions = _eval_logits(cfg, inputs, detector, "scoring the untrained model", w, ctx)
    if not ctx.writer:
        return
    scores, logits, extra = _fused(inputs, logits)
    path = write_initial_predictions(rd.path, _run_record(bench, inputs, ctx),
                                     ScoredRows(logits, scores, positions, extra))
    from leaderboard.continual import initial_table, load_window_npz

    table = initial_table(load_window_npz(path))
    auroc = table[(table["group"] == "all") & (table["metric"] == "auroc")]["value"].iloc[0]
    ctx.say(f"untrained model scored ({path.parent.name}/, FWT's b_j): AUROC all {auroc:.3f} "
            f"in {time.time() - started:.1f}s")


def _score_window(cfg: RunConfig, bench: Benchmark, w: WindowState, ctx: RunContext) -> None:
    """Score window k, write its predictions, let the hooks add their files and metrics, then metrics.json and
    `done` (the window's commit)."""
    started = time.time()
    inputs = bench.inputs
    logits, positions = _eval_logits(cfg, inputs, w.detector, f"scoring window {w.k + 1}/{w.n_windows}", w, ctx)
    if not ctx.writer:
        return
    wdir = w.wdir
    scores, logits, extra = _fused(inputs, logits)
    w.held_out, held_out_summary = _validation_arrays(cfg, w.k, w.train_metrics, ctx)
    write_predictions(layout.predictions_path(wdir), _run_record(bench, inputs, ctx), w.k,
                      ScoredRows(logits, scores, positions, (extra or {}) | w.held_out))
    w.summary = window_summary(layout.predictions_path(wdir))
    metrics = w.train_metrics | {"eval": w.summary | {"seconds": round(time.time() - started, 2)}} | held_out_summary
    metrics |= ctx.hooks.after_scoring(w)  # localization maps, test datasets, …: their files come first
    atomic_write_json(wdir / "metrics.json", metrics)
    ctx.hooks.before_done(w)
    layout.mark_done(wdir)
    (wdir / TRAIN_STATE).unlink(missing_ok=True)  # the window's final weights are in its checkpoint
    log_window_metrics(ctx.loggers, w.k, ctx.step_offsets[w.k] + int(w.train_metrics["train"].get("steps") or 0),
                       metrics)
    parts = ", ".join(f"{g} {v:.3f}" for g, v in w.summary["auroc"].items() if v == v)
    ctx.say(f"window {w.k + 1}/{w.n_windows} scored: AUROC {parts}")


# ------------------------------------------------------------------ validation, selection, test datasets


def _held_out_data(cfg: RunConfig, bench: Benchmark, detector, cache_dir: Path,
                   ctx: RunContext) -> tuple[RunValidation, RunTestDatasets]:
    """The run's validation rows and test datasets; refuses a selection policy the run cannot follow and a bad
    test dataset before any window trains."""
    validation = RunValidation(cfg, bench, detector, cache_dir, ctx.progress)
    check_selection(cfg, detector, validation.present)
    if validation.present:
        d = validation.describe()
        ctx.say(f"validation split ({d['origin']}, {d['split']} rows): {d['per_step']} per window; selection "
                f"{cfg.train.selection}, threshold {cfg.eval.threshold}")
    tests = RunTestDatasets(cfg, bench, detector, cache_dir, ctx.progress, ctx.say)
    tests.load()
    return validation, tests


def _window_selection(cfg: RunConfig, bench: Benchmark, detector, k: int, sampler, ctx: RunContext) -> WindowSelection:
    """The policy's callbacks and resumable state for window k (on window k's validation rows only)."""
    return WindowSelection(cfg, detector, k, sampler, ctx.validation.window_set(k), ctx.validation.branch_set(k)
                           if cfg.train.selection is Selection.BEST_VAL_ACCURACY else None, bench.inputs.train_cfg,
                           bench.inputs.eval_precision, ctx.step_offsets[k])


def _finish_selection(selection: WindowSelection, k: int, n: int, ctx: RunContext) -> dict:
    """Give the detector the policy's weights and say which they are."""
    record = selection.finish()
    line = selection.line(record)
    if line:
        ctx.say(f"window {k + 1}/{n}: {line}")
    return record


def _validation_arrays(cfg: RunConfig, k: int, train_metrics: dict, ctx: RunContext) -> tuple[dict, dict]:
    """npz arrays and metrics.json entries of window k's validation rows (scored with its final weights), its
    threshold and the selection that chose its weights."""
    from protocols.predictions import selection_arrays

    if not ctx.writer:
        return {}, {}
    arrays, summary = ctx.validation.window_arrays(k, eval_device(cfg), cfg.eval.batch_size)
    return arrays | selection_arrays(train_metrics.get("selection") or {"policy": "last"}), summary


def _score_missing_tests(cfg: RunConfig, detector, rd: RunDir, start: int, n: int, ctx: RunContext) -> None:
    """Finished windows whose test predictions are missing (a test dataset added to a finished run's config) are
    scored from their checkpoints; the caller restores the weights it continues from."""
    if not ctx.tests or not ctx.writer:
        return
    for j in range(start):
        missing = ctx.tests.missing(rd.window(j)) if tests_due(cfg, j, n) else []
        if not missing:
            continue
        load_checkpoint(detector, rd.window(j))
        ctx.say(f"window {j + 1}/{n} is done; scoring its missing test dataset(s) {[s.name for s in missing]} from "
                "its checkpoint")
        w = ctx.window_state(j, n, rd.window(j), detector)
        ctx.tests.score(j, rd.window(j), read_threshold(rd.window(j)), ctx, eval_device(cfg), only=missing,
                        written=lambda i, w=w: w.notify("test_dataset", i))
