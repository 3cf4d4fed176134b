"""Resume inside a window: periodic and on-signal training checkpoints, restored only into the same run.

`window_<k>/train_state.pt` holds the trainable weights, optimizer, LR scheduler, RNG states and the number
of global batches done, plus an identity (run id, config hash, manifest, window, detector, batch plan).
A state whose identity differs from the current run's is never restored: it is renamed aside, said so,
and the window starts from its beginning. SIGUSR1/SIGTERM ask for a checkpoint at the next batch
boundary and a clean exit with EXIT_PREEMPTED (75), which the SLURM script turns into a requeue.
"""

from __future__ import annotations

import datetime as dt
import random
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist

from common.atomic import atomic_path

TRAIN_STATE = "train_state.pt"
STATE_FORMAT = 1
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: state saved, run the same command again to continue

_requested: list[int] = []


class Preempted(Exception):
    """Stopped on a signal after saving what is needed to continue; re-run the same command to resume."""


def _on_signal(signum, frame) -> None:  # noqa: ARG001
    if not _requested:
        print(f"[genshift] received {signal.Signals(signum).name}: saving a checkpoint at the next safe point, "
              "then exiting (run the same command again to resume)", file=sys.stderr, flush=True)
    _requested.append(signum)


def install_signal_handlers() -> None:
    """SIGUSR1 and SIGTERM request a checkpoint-and-exit (Lightning adds its own SIGTERM handling in fit)."""
    _requested.clear()
    for sig in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(sig, _on_signal)


def stop_requested() -> bool:
    return bool(_requested)


def check_stop(where: str) -> None:
    """Between steps that leave nothing half done: stop now if a signal asked for it."""
    if _requested:
        raise Preempted(f"stopped on {signal.Signals(_requested[0]).name} {where}; "
                        "run the same command again to resume")


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    random.setstate(_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_train_state(path: Path, identity: dict, batches_done: int, detector: torch.nn.Module,
                     optimizer: torch.optim.Optimizer, scheduler: Any, loss_sum: float, loss_count: int,
                     extra: dict | None = None, tmp_written: Callable[[], None] | None = None) -> None:
    """Atomically write everything needed to continue training after `batches_done` global batches.

    ``extra``: more entries of the same kinds (tensors, numbers, strings, lists, dicts), e.g. the continual-learning
    strategy's state under "strategy", the selection policy's under "selection". ``tmp_written``: called when the
    file is written to its temporary name, before the rename (the engine's window hooks: crash injection)."""
    doc = {
        "format": STATE_FORMAT,
        "identity": identity,
        "batches_done": int(batches_done),
        "model": {k: v.detach().cpu().clone() for k, v in detector.trainable_state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": _rng_state(),
        "loss_sum": float(loss_sum),
        "loss_count": int(loss_count),
        "saved": dt.datetime.now().isoformat(timespec="seconds"),
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(doc, tmp)
        if tmp_written is not None:
            tmp_written()


def load_train_state(path: Path, identity: dict | None) -> dict | None:
    """The saved state if it belongs to exactly this run/config/window, else None (a stale one is moved aside).

    identity None (DDP ranks other than 0): take the file as it is; rank 0 has checked it, and the ranks'
    agreement is verified when training starts.
    """
    path = Path(path)
    if not path.is_file():
        return None
    if identity is None:
        return torch.load(path, map_location="cpu", weights_only=True)
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
        problem = None if doc.get("format") == STATE_FORMAT else f"format {doc.get('format')} != {STATE_FORMAT}"
    except Exception as e:  # a damaged file is reported and set aside, never half-restored
        doc, problem = None, f"unreadable ({type(e).__name__}: {e})"
    if problem is None:
        diff = [f"{k}: saved {doc['identity'].get(k)!r}, now {v!r}" for k, v in identity.items()
                if doc["identity"].get(k) != v]
        problem = "; ".join(diff) or None
    if problem is None:
        return doc
    stale = path.with_name(f"{path.name}.stale-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    path.rename(stale)
    print(f"[genshift] not restoring {path}: it belongs to another run or config ({problem}); "
          f"moved to {stale.name}, training window {identity['window']} from its start", file=sys.stderr, flush=True)
    return None


class WindowCheckpointer(L.Callback):
    """Restores a saved train state at the start of fit; saves every `every_n` batches and on a stop request."""

    def __init__(self, path: Path, identity: dict, every_n: int, start: int, total: int,
                 resume: dict | None, writer: bool, extra_state: Callable[[], dict] | None = None,
                 accumulate: int = 1, notify: Callable[[str, int], None] | None = None):
        self.path, self.identity, self.every_n = Path(path), identity, int(every_n or 0)
        self.notify = notify  # (what, batches done): the window hooks' file_written (train_batch, train_state_tmp)
        self.extra_state = extra_state  # more to save with each state (the strategy's, the selection's), read when saving
        self.start, self.total, self.resume, self.writer = start, total, resume, writer
        # With gradient accumulation a state is exact only between optimizer steps (no gradient half summed):
        # states are saved, and a stop request honoured, at multiples of `accumulate` batches only.
        self.accumulate = max(1, int(accumulate))
        self._stop_pending = False
        self.done = start
        self.loss_sum = resume["loss_sum"] if resume else 0.0
        self.loss_count = resume["loss_count"] if resume else 0
        self.interrupted = False
        self._saved_at = -1

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Under DDP every rank decided on its own where to resume; make sure they agree."""
        if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
            starts: list = [None] * trainer.world_size
            dist.all_gather_object(starts, self.start)
            if len(set(starts)) != 1:
                raise RuntimeError(f"DDP ranks disagree on where to resume window {self.identity['window']}: "
                                   f"batches done per rank {starts}; {self.path} changed while they started")

    def on_train_start(self, trainer, pl_module) -> None:
        if self.resume is None:
            return
        trainer.optimizers[0].load_state_dict(self.resume["optimizer"])
        if self.resume["scheduler"] is not None:
            trainer.lr_scheduler_configs[0].scheduler.load_state_dict(self.resume["scheduler"])
        _set_rng_state(self.resume["rng"])

    def _at_step_boundary(self) -> bool:
        return self.done % self.accumulate == 0 or self.done >= self.total

    def _save(self, trainer, pl_module) -> None:
        if self._saved_at == self.done or not self.writer or not self._at_step_boundary():
            return
        sched = trainer.lr_scheduler_configs[0].scheduler if trainer.lr_scheduler_configs else None
        save_train_state(self.path, self.identity, self.done, pl_module.detector, trainer.optimizers[0], sched,
                         self.loss_sum, self.loss_count, self.extra_state() if self.extra_state else None,
                         tmp_written=(lambda: self.notify("train_state_tmp", self.done)) if self.notify else None)
        self._saved_at = self.done

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.done = self.start + batch_idx + 1
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            n = len(batch[1])
            self.loss_sum += float(loss.detach()) * n
            self.loss_count += n
        if self.notify is not None:  # the train_batch crash point: before the stop check, as a real signal would be
            self.notify("train_batch", self.done)
        stop = stop_requested()
        if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
            flag = torch.tensor([1.0 if stop else 0.0], device=pl_module.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
        if self.done >= self.total:
            return
        stop = stop or self._stop_pending
        if stop and not self._at_step_boundary():  # finish the accumulation group first
            self._stop_pending = True
            return
        if stop:
            self.interrupted = True
            trainer.should_stop = True
            self._save(trainer, pl_module)
        elif self.every_n and self.done % self.every_n == 0:
            self._save(trainer, pl_module)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException) and self.start < self.done < self.total:
            self.interrupted = True
            self._save(trainer, pl_module)
