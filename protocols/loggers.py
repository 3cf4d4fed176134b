"""Experiment loggers chosen in config (`loggers: [csv, tensorboard, wandb]`), one continuous step axis.

Step = global optimizer steps since the start of window 0 (window k's steps are offset by the steps of
windows 0..k-1), so curves of all windows — and of a resumed attempt — line up on one axis. Per-window
evaluation metrics are logged at the last step of their window. W&B runs offline unless `wandb.mode` is
`online`; it resumes the same W&B run id (the genshift run id) after a restart.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from protocols.config_enums import Logger
from protocols.config_model import ConfigLike, WandbConfig, run_config

KNOWN = tuple(Logger)


def step_offsets(n_train: list[int], batch_size: int, epochs: int) -> list[int]:
    """Global step at which each window starts (window k starts after all steps of windows 0..k-1)."""
    out, total = [], 0
    for n in n_train:
        out.append(total)
        total += math.ceil(n / batch_size) * epochs
    return out


def _attempt_version(root: Path) -> str:
    """A new CSV version per attempt (a resumed run never overwrites the logs of the attempt before it)."""
    i = 0
    while (root / f"attempt_{i}").exists():
        i += 1
    return f"attempt_{i}"


def make_loggers(cfg: ConfigLike, run_dir: Path, run_id: str, experiment: str) -> list:
    """Lightning logger objects for this process (created once per run, shared by every window's Trainer)."""
    from lightning.pytorch import loggers as pl_loggers

    rc = run_config(cfg)
    names = rc.loggers
    out = []
    logs = Path(run_dir) / "logs"
    for name in names:
        if name == "csv":
            out.append(pl_loggers.CSVLogger(logs, name="csv", version=_attempt_version(logs / "csv")))
        elif name == "tensorboard":
            try:
                import tensorboard  # noqa: F401
            except ImportError as e:
                raise ValueError("loggers: tensorboard is asked for but not installed; pip install tensorboard") from e
            out.append(pl_loggers.TensorBoardLogger(logs, name="tensorboard", version="run",
                                                    default_hp_metric=False))
        elif name == "wandb":
            out.append(_wandb_logger(rc.wandb, logs, run_id, experiment))
        else:
            raise ValueError(f"loggers: unknown logger {name!r}; expected any of {', '.join(KNOWN)}")
    return out


def _wandb_logger(wcfg: WandbConfig, logs: Path, run_id: str, experiment: str):
    try:
        import wandb  # noqa: F401
    except ImportError as e:
        raise ValueError("loggers: wandb is asked for but not installed; pip install wandb") from e
    from lightning.pytorch import loggers as pl_loggers

    mode = wcfg.mode.value
    logs.mkdir(parents=True, exist_ok=True)
    if mode != "online":
        os.environ["WANDB_MODE"] = mode  # never touch the network unless online mode is asked for
    return pl_loggers.WandbLogger(
        save_dir=str(logs), project=wcfg.project, entity=wcfg.entity or None,
        name=experiment, id=run_id, resume="allow", offline=mode != "online", mode=mode,
    )


def log_window_metrics(loggers: list, k: int, step: int, metrics: dict) -> None:
    """Scalars of a finished window (AUROC per group, train loss/time) at the window's last global step."""
    flat = {"window": float(k)}
    for group, v in (metrics.get("eval", {}).get("auroc") or {}).items():
        if v is not None and v == v:
            flat[f"eval/auroc_{group}"] = float(v)
    train = metrics.get("train", {})
    for key in ("loss_mean", "seconds", "images_per_second"):
        if isinstance(train.get(key), (int, float)):
            flat[f"window/{key}"] = float(train[key])
    for lg in loggers:
        lg.log_metrics(flat, step=step)
        lg.save()
