"""The one way genshift builds a Lightning Trainer: a window's training, DDP scoring, probe feature extraction and
the speed benchmark all take theirs from `build_trainer` (or from `run_trainer`, which reads the run's hardware
settings), so a setting such as determinism or the distributed sampler is decided in one place."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence

import lightning as L

from protocols.config_model import ConfigLike, RunConfig, run_config
from protocols.speed import uses_cuda


def quiet_lightning() -> None:
    """Lightning's notices that say nothing to a genshift user (one-process loaders, probes in eval mode, …)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*`srun` command is available.*")  # one task: no srun needed
    warnings.filterwarnings("ignore", message=".*custom batch sampler `EvalBatches`.*")  # it returns every index
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training.*")  # probes


# What every genshift Trainer has: one epoch (a window's batch sampler holds all its epochs), no Lightning
# checkpoints, summaries or sanity steps, deterministic algorithms, genshift's own batch samplers.
TRAINER_DEFAULTS = {
    "accelerator": "auto",
    "devices": 1,
    "use_distributed_sampler": False,  # genshift's samplers split batches across ranks without padding
    "max_epochs": 1,  # the window's batch sampler already holds all `train.epochs` epochs back to back
    "enable_checkpointing": False,
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
    "deterministic": True,
}


def build_trainer(precision: str, callbacks: Sequence = (), loggers: list | bool = False, progress: bool = False,
                  n_batches: int = 10, **lightning) -> L.Trainer:
    """A Trainer for one fit or predict with `TRAINER_DEFAULTS`; ``lightning``: more of Trainer's own arguments
    by their own names (accelerator, devices, num_nodes, strategy, sync_batchnorm, plugins, gradient_clip_val,
    accumulate_grad_batches), which override the defaults. Logs every min(10, `n_batches`) steps."""
    return L.Trainer(**(TRAINER_DEFAULTS | {"precision": precision, "callbacks": list(callbacks), "logger": loggers,
                                            "enable_progress_bar": progress,
                                            "log_every_n_steps": max(1, min(10, n_batches))} | lightning))


def run_trainer(cfg: ConfigLike, precision: str, progress: bool, loggers: list | bool = False, n_batches: int = 10,
                callbacks: Sequence = (), accumulate: int = 1) -> L.Trainer:
    """`build_trainer` with the run's hardware (accelerator, devices, nodes, DDP, SLURM) and gradient clipping."""
    rc = run_config(cfg)
    world = rc.world_size
    strategy = str(rc.strategy)
    return build_trainer(
        precision, callbacks, loggers, progress, n_batches, accelerator=str(rc.accelerator),
        devices=rc.devices, num_nodes=rc.num_nodes,
        strategy="ddp" if strategy == "auto" and world > 1 else strategy, sync_batchnorm=_sync_batchnorm(rc, world),
        plugins=_cluster_plugins(), gradient_clip_val=rc.train.grad_clip, accumulate_grad_batches=accumulate)


def _cluster_plugins() -> list:
    """Under SLURM, never let Lightning requeue or checkpoint by itself (genshift's script and callback do)."""
    if "SLURM_JOB_ID" not in os.environ:
        return []
    from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment

    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return [SLURMEnvironment(auto_requeue=False)]  # srun started one task per device
    return [LightningEnvironment()]  # one task; Lightning starts the other local processes itself


def _sync_batchnorm(rc: RunConfig, world: int) -> bool:
    """BatchNorm statistics over the global batch under DDP; torch supports this on GPUs only."""
    if world == 1 or not rc.sync_batchnorm:
        return False
    if uses_cuda(rc):
        return True
    warnings.warn("sync_batchnorm: SyncBatchNorm needs GPUs; on CPU each DDP process normalises with its own "
                  "part of the batch (results differ from one process for detectors that train BatchNorm)",
                  stacklevel=3)
    return False
