"""The engine: train a detector window after window and score the whole eval split after each."""

from __future__ import annotations

import datetime as dt
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmark.atomic import atomic_write_json, atomic_write_text
from benchmark.eval_cache import build_or_load_eval_inputs
from benchmark.eval_plan import EvalPlan, make_eval_plan
from benchmark.manifest import Manifest
from benchmark.sources import default_cache_dir, load_source
from benchmark.timeline import generator_id_to_name, make_windows
from benchmark.windows_plan import BenchmarkType, training_sets
from detectors import create_detector
from protocols.checkpoints import load_checkpoint, save_checkpoint
from protocols.config import PROTOCOL_VERSION, config_hash
from protocols.data import CachedEval, TrainCopies
from protocols.module import DetectorModule
from protocols.predictions import SCHEMA_VERSION, window_summary, write_predictions
from protocols.provenance import git_commit, host_info, package_versions
from protocols.rundir import RunDir


@dataclass
class Benchmark:
    """Everything about the data that a run needs, derived once from the manifest and config."""

    manifest: Manifest
    windows: list[list[str]]
    gen_names: list[str]
    train_sets: list[list[int]]
    plan: EvalPlan
    benchmark_type: BenchmarkType


def prepare_benchmark(cfg: dict, progress: bool = True) -> Benchmark:
    cache_dir = Path(cfg["cache_dir"]).expanduser() if cfg.get("cache_dir") else default_cache_dir()
    manifest = load_source(cfg["dataset"], cache_dir, progress=progress)
    b = cfg["benchmark"]
    windows = make_windows(manifest.timeline, b["generators_per_window"])
    gen_names = generator_id_to_name(manifest.timeline)
    btype = BenchmarkType.parse(str(b["type"]))
    sets = training_sets(manifest.split("train"), windows, btype, b["real_sampling_seed"], b["replay_seed"])
    plan = make_eval_plan(
        manifest.split("eval"), gen_names, b["eval_balance_seed"], b["eval_shuffle_seed"], b["eval_pairing_seed"]
    )
    return Benchmark(manifest, windows, gen_names, sets, plan, btype)


def experiment_name(cfg: dict) -> str:
    if cfg.get("experiment"):
        return str(cfg["experiment"])
    ds = str(cfg["dataset"]).replace(":", "-").replace("/", "_").strip("-_")[-40:]
    det = str(cfg["detector"]).replace(":", "-").replace("/", "_")
    return f"{ds}__{det}__{cfg['benchmark']['type'].replace(':', '')}__seed{cfg['seed']}"


def _say(msg: str, t0: float) -> None:
    elapsed = time.time() - t0
    print(f"[genshift {int(elapsed // 60):02d}:{int(elapsed % 60):02d}] {msg}", flush=True)


def _quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def _loggers(cfg: dict, run_dir: Path, k: int) -> list:
    from lightning.pytorch import loggers as pl_loggers

    out = []
    for name in cfg["loggers"]:
        if name == "csv":
            out.append(pl_loggers.CSVLogger(run_dir / "logs", name="csv", version=f"window_{k}"))
        elif name == "tensorboard":
            out.append(pl_loggers.TensorBoardLogger(run_dir / "logs", name="tensorboard", version=f"window_{k}"))
        elif name == "wandb":
            out.append(pl_loggers.WandbLogger(save_dir=str(run_dir / "logs"), name=f"{run_dir.name}-w{k}",
                                              offline=True))
        else:
            raise ValueError(f"loggers: unknown logger {name!r}; expected csv, tensorboard or wandb")
    return out


def _trainer(cfg: dict, precision: str, progress: bool, loggers: list | bool, n_batches: int = 10) -> L.Trainer:
    return L.Trainer(
        accelerator="auto",
        devices=1,
        max_epochs=int(cfg["train"]["epochs"]),
        precision=precision,
        gradient_clip_val=cfg["train"]["grad_clip"],
        logger=loggers,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(10, n_batches)),
        deterministic=True,
    )


def run_experiment(cfg: dict, force_new: bool = False, progress: bool = True) -> Path:
    """Run (or resume) the whole benchmark described by `cfg`; returns the run directory."""
    t0 = time.time()
    _quiet_lightning()
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    bench = prepare_benchmark(cfg, progress)
    rd = RunDir(Path(cfg["runs_dir"]) / experiment_name(cfg))
    rd.lock()
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
        return _run_locked(cfg, bench, rd, t0, progress)
    finally:
        rd.unlock()


def _run_locked(cfg: dict, bench: Benchmark, rd: RunDir, t0: float, progress: bool) -> Path:
    seed = int(cfg["seed"])
    L.seed_everything(seed, workers=True, verbose=False)
    detector = create_detector(cfg["detector"], pretrained=cfg["pretrained"])
    meta = detector.meta
    strategy = cfg["eval"]["input"] or meta.eval_resize
    cache_dir = Path(cfg["cache_dir"]).expanduser() if cfg.get("cache_dir") else default_cache_dir()
    n_steps = len(bench.train_sets)
    K = len(bench.windows)
    _say(
        f"{bench.manifest.name}: {K} windows of generators, {n_steps} training step(s) "
        f"({bench.benchmark_type}), {len(bench.plan.sample_ids)} eval images; detector {meta.name}",
        t0,
    )
    inputs, cache_key = build_or_load_eval_inputs(
        bench.manifest, bench.plan.sample_ids, cfg["degradation"]["profile"], cfg["degradation"]["base_seed"],
        meta.input_size, strategy, cache_dir, workers=int(cfg["train"]["num_workers"]) or 1, progress=progress,
    )
    _say(f"eval inputs ready ({inputs.shape[0]}×{inputs.shape[2]}×{inputs.shape[3]}, cache {cache_key['digest']})",
         t0)
    previous = rd.read_run_json() or {}
    rd.write_run_json(
        {
            "config": cfg,
            "config_hash": config_hash(cfg),
            "protocol_version": PROTOCOL_VERSION,
            "schema_version": SCHEMA_VERSION,
            "manifest_checksum": bench.manifest.checksum,
            "dataset": {"name": bench.manifest.name, "spec": cfg["dataset"], "root": str(bench.manifest.root)},
            "windows": bench.windows,
            "benchmark_type": str(bench.benchmark_type),
            "seeds": {"seed": seed, **{k: v for k, v in cfg["benchmark"].items() if k.endswith("seed")},
                      "degradation_base_seed": cfg["degradation"]["base_seed"]},
            "detector": meta.to_dict() | {"eval_input": strategy},
            "eval_cache_key": cache_key,
            "packages": package_versions(),
            "host": host_info(),
            "git_commit": git_commit(),
            "created": previous.get("created", dt.datetime.now().isoformat(timespec="seconds")),
            "updated": dt.datetime.now().isoformat(timespec="seconds"),
        }
    )
    start = 0
    while start < n_steps and rd.is_done(start):
        start += 1
    if start > 0:
        load_checkpoint(detector, rd.window(start - 1))
        _say(f"resuming: windows 0..{start - 1} are done, continuing at window {start}", t0)
    for k in range(start, n_steps):
        train_metrics = _train_window(cfg, bench, detector, rd, k, t0, progress)
        _score_window(cfg, bench, detector, inputs, rd, k, t0, progress, train_metrics)
    _say(f"all {n_steps} window(s) done in {rd.path}", t0)
    return rd.path


def _train_window(cfg, bench: Benchmark, detector, rd: RunDir, k: int, t0: float, progress: bool) -> dict:
    tc = cfg["train"]
    meta = detector.meta
    ids = bench.train_sets[k]
    gens = bench.windows[k] if bench.benchmark_type.kind != "full" else ["all generators"]
    _say(f"window {k + 1}/{len(bench.train_sets)}: training on {len(ids)} images × {tc['augmentation_factor']} "
         f"copies (new generators: {', '.join(gens)})", t0)
    ds = TrainCopies(bench.manifest, ids, int(tc["augmentation_factor"]), meta.input_size, int(cfg["seed"]),
                     tc["augmentation"], meta.eval_resize)
    g = torch.Generator().manual_seed(int(cfg["seed"]) * 1_000_003 + k)
    loader = DataLoader(ds, batch_size=int(tc["batch_size"]), shuffle=True, generator=g,
                        num_workers=int(tc["num_workers"]), drop_last=False,
                        persistent_workers=False, pin_memory=torch.cuda.is_available())
    total_steps = len(loader) * int(tc["epochs"])
    torch.manual_seed(int(cfg["seed"]) * 7919 + k)
    module = DetectorModule(detector, tc, total_steps)
    trainer = _trainer(cfg, tc["precision"], progress, _loggers(cfg, rd.path, k), len(loader))
    started = time.time()
    trainer.fit(module, train_dataloaders=loader)
    loss = trainer.callback_metrics.get("train/loss_epoch")
    wdir = rd.window(k)
    wdir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(detector, wdir, {"window": k, "config": cfg})
    return {
        "window": k,
        "train": {
            "n_images": len(ids),
            "n_copies": len(ds),
            "steps": total_steps,
            "seconds": round(time.time() - started, 2),
            "loss_epoch": float(loss) if loss is not None else None,
            "images_per_second": round(len(ds) * int(tc["epochs"]) / max(time.time() - started, 1e-9), 1),
        },
    }


def _score_window(cfg, bench: Benchmark, detector, inputs: np.ndarray, rd: RunDir, k: int, t0: float,
                  progress: bool, train_metrics: dict) -> None:
    wdir = rd.window(k)
    started = time.time()
    loader = DataLoader(CachedEval(inputs), batch_size=int(cfg["eval"]["batch_size"]), shuffle=False,
                        num_workers=0)
    module = DetectorModule(detector, cfg["train"], 1)
    trainer = _trainer(cfg, cfg["eval"]["precision"], progress, False)
    outputs = trainer.predict(module, dataloaders=loader)
    logits = torch.cat([o[0] for o in outputs]).float().numpy()
    positions = torch.cat([o[1] for o in outputs]).numpy()
    if not np.array_equal(positions, np.arange(len(inputs))):
        raise RuntimeError("evaluation returned predictions out of order or incomplete")
    write_predictions(
        wdir / "predictions.npz", logits, bench.plan, bench.gen_names, bench.windows, k,
        manifest_checksum=bench.manifest.checksum, benchmark_type=str(bench.benchmark_type),
    )
    summary = window_summary(wdir / "predictions.npz")
    metrics = train_metrics | {"eval": summary | {"seconds": round(time.time() - started, 2)}}
    atomic_write_json(wdir / "metrics.json", metrics)
    atomic_write_text(wdir / "done", dt.datetime.now().isoformat(timespec="seconds") + "\n")
    parts = ", ".join(f"{g} {v:.3f}" for g, v in summary["auroc"].items() if v == v)
    _say(f"window {k + 1}/{len(bench.train_sets)} scored: AUROC {parts}", t0)
