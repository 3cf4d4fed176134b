"""Ranks, samplers and gathering for single- and multi-process runs (Lightning DDP, SLURM tasks).

Training: one fixed sequence of *global* batches per window (the permutation of a single-process run),
each split across ranks, so a resumed run can start at any batch and DDP sees the same global batches.
Evaluation: whole batches are dealt round-robin to ranks (no padding, no duplicates), then every rank's
(position, logit) pairs are gathered and put back in position order.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from protocols.config_model import (
    ConfigLike,
    run_config,
    world_size,  # noqa: F401  (re-exported: it reads the config only)
)


def rank_world() -> tuple[int, int]:
    """(global rank, world size) of this process once the process group exists, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launch_rank(cfg: ConfigLike) -> int:
    """This process's global rank as known *before* the process group exists (for who writes files).

    Lightning's launcher gives its children LOCAL_RANK/NODE_RANK; `srun` gives SLURM_PROCID; torchrun RANK.
    """
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        return int(os.environ["SLURM_PROCID"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    node = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0")))
    return node * run_config(cfg).devices + local


class TrainBatches(Sampler[list[int]]):
    """The global batches of one window (all epochs back to back), from batch `start` on, this rank's share.

    Epoch e's order is the e-th `torch.randperm(n, generator)` of a generator seeded with `seed` — what
    `BatchSampler(RandomSampler(generator=...))` yields — cut into consecutive batches of `batch_size`
    (the last one of an epoch may be short; with `drop_last` it is dropped, as the reference's loader does).
    Each global batch is split into `world` contiguous parts.
    ``extend(i, batch)``: a continual-learning strategy's items appended to global batch i before the split
    (protocols/strategies; indices past `n` point into its part of the dataset).
    """

    def __init__(self, n: int, batch_size: int, epochs: int, seed: int, start: int = 0,
                 extend: Callable[[int, list[int]], list[int]] | None = None, drop_last: bool = False):
        if n < 1 or batch_size < 1 or epochs < 1:
            raise ValueError(f"TrainBatches: n={n}, batch_size={batch_size}, epochs={epochs} must all be >= 1")
        self.n, self.batch_size, self.epochs, self.seed = n, batch_size, epochs, seed
        self.per_epoch = n // batch_size if drop_last else math.ceil(n / batch_size)
        if not 0 <= start <= self.total:
            raise ValueError(f"TrainBatches: start batch {start} outside 0..{self.total}")
        self.start = start
        self.extend = extend

    @property
    def total(self) -> int:
        return self.per_epoch * self.epochs

    def global_batches(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed)
        for _ in range(self.epochs):
            order = torch.randperm(self.n, generator=g).tolist()
            for b in range(self.per_epoch):
                yield order[b * self.batch_size:(b + 1) * self.batch_size]

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = rank_world()
        for i, batch in enumerate(self.global_batches()):
            if i < self.start:
                continue
            if self.extend is not None:
                batch = self.extend(i, batch)
            if len(batch) < world:
                raise RuntimeError(
                    f"training batch {i} has {len(batch)} samples, fewer than the {world} processes; "
                    "choose train.batch_size so that no batch (including an epoch's last) is that small")
            m = len(batch)
            yield batch[rank * m // world:(rank + 1) * m // world]


class EvalBatches(Sampler[list[int]]):
    """Eval batches of `batch_size` in position order; rank r gets batches r, r+world, … (no padding)."""

    def __init__(self, n: int, batch_size: int):
        self.n, self.batch_size = n, batch_size
        self.n_batches = math.ceil(n / batch_size)

    def __len__(self) -> int:
        rank, world = rank_world()
        return len(range(rank, self.n_batches, world))

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = rank_world()
        for b in range(rank, self.n_batches, world):
            yield list(range(b * self.batch_size, min(self.n, (b + 1) * self.batch_size)))


def gather_predictions(outputs: list, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits in position order from every rank's predict outputs [(logits, positions), …].

    Every position 0..n-1 must come back exactly once; anything else is an error, never padded or averaged.
    """
    logits, pos = gather_crop_predictions(outputs, n)
    if len(pos) != n:
        raise RuntimeError(f"evaluation returned {len(pos)} predictions for {n} images ({len(pos) - n} duplicated; "
                           "images scored as several crops are gathered by gather_crop_predictions)")
    return logits, pos


def gather_crop_predictions(outputs: list, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop logits and their positions, in position order (a position's crops in scoring order), from every rank.

    A position may come back several times (its crops: five_crop), all from one batch; every position 0..n-1 must
    come back at least once. Nothing is padded or averaged here (the fusion is `protocols.predictions`').
    """
    logits = torch.cat([o[0] for o in outputs]).float().cpu() if outputs else torch.empty(0)
    pos = torch.cat([o[1] for o in outputs]).long().cpu() if outputs else torch.empty(0, dtype=torch.long)
    _, world = rank_world()
    if world > 1:
        parts: list = [None] * world
        dist.all_gather_object(parts, (logits.numpy(), pos.numpy()))
        all_logits = np.concatenate([p[0] for p in parts])
        all_pos = np.concatenate([p[1] for p in parts])
    else:
        all_logits, all_pos = logits.numpy(), pos.numpy()
    order = np.argsort(all_pos, kind="stable")
    all_pos, all_logits = all_pos[order], all_logits[order]
    if not np.array_equal(np.unique(all_pos), np.arange(n)):
        missing = np.setdiff1d(np.arange(n), all_pos)
        raise RuntimeError(f"evaluation returned predictions for {len(np.unique(all_pos))} of {n} images "
                           f"({len(missing)} missing)")
    return all_logits.astype(np.float32), all_pos
