"""The strategy contract: what a continual-learning method may change, and when it is asked.

A `Strategy` is a plain object with Lightning-callback-style hooks, all optional:

- ``before_training(window)``: window k is about to train; the detector holds window k−1's final weights
  (e.g. snapshot a teacher).
- ``training_batches(window)``: return a `BatchExtension` to append items of other data (a memory) to every
  global training batch, or None.
- ``training_loss(step)``: extra loss terms for one training step, as ``{name: scalar tensor}``; the key
  ``"base"`` replaces the plain BCE (use ``step.mean`` for per-image terms: it is exact under DDP).
- ``after_training(window)``: window k's weights are final (e.g. compute importances, update a memory).
- ``after_scoring(window)``: window k's predictions are written.
- ``state_dict()`` / ``load_state_dict(state)``: everything the strategy carries from window to window (and
  within a window), as tensors, numbers, strings, lists and dicts (saved with torch.save, restored with
  ``weights_only=True``). The engine saves it with the window's resumable train state and after each window, and
  restores it exactly on resume; a strategy must not keep state anywhere else.

Every hook must be deterministic (seeded from ``window.seed`` and the window index); under DDP every process
runs every hook on the same data and must reach the same state (only global rank 0 writes files).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset


class Strategy:
    """Base class of continual-learning strategies; `naive` fine-tuning is this class with no hook overridden.

    Subclasses declare every parameter with its default in ``DEFAULTS`` (built-ins take theirs from
    `registry.BUILTINS`); ``self.params`` holds the resolved values.
    """

    DEFAULTS: ClassVar[dict[str, Any]] = {}
    name: str = ""

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params = {**self.DEFAULTS, **dict(params or {})}

    # ----------------------------------------------------------------- hooks (all optional)
    def before_training(self, window: WindowContext) -> None:
        """Window k is about to train; the detector holds window k−1's final weights."""

    def training_batches(self, window: WindowContext) -> BatchExtension | None:
        """Items to append to every global training batch of window k (after `before_training`), or None."""
        return None

    def training_loss(self, step: TrainStep) -> dict[str, torch.Tensor]:
        """Extra loss terms of one step ({name: scalar}); key "base" replaces the plain BCE."""
        return {}

    def after_training(self, window: WindowContext) -> None:
        """Window k's weights are final."""

    def after_scoring(self, window: WindowContext) -> None:
        """Window k's predictions are written."""

    def state_dict(self) -> dict[str, Any]:
        """What to save to continue exactly after a kill: tensors, numbers, strings, lists, dicts."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    # ----------------------------------------------------------------- what the engine asks
    @property
    def changes_loss(self) -> bool:
        """Whether the training step must call `training_loss` (naive: no, and the step is exactly the plain one)."""
        return type(self).training_loss is not Strategy.training_loss

    def describe(self) -> dict[str, Any]:
        """The resolved form recorded in run.json and the npz: ``{"name": ..., **params}``."""
        return {"name": self.name, **{k: self.params[k] for k in sorted(self.params)}}


@dataclass
class BatchExtension:
    """Items appended to each global training batch: ``indices(i, n)`` gives, for global batch i of n new items,
    indices into ``dataset``. The engine marks those rows with negative ids (row of item j: id ``-(j + 1)``)
    so that `TrainStep.from_memory` and `TrainStep.memory_index` find them."""

    dataset: Dataset
    indices: Callable[[int, int], list[int]]


@dataclass
class WindowContext:
    """What a strategy may use around window k's training (built by the engine, one per window)."""

    k: int
    n_windows: int
    seed: int
    detector: torch.nn.Module
    sample_ids: list[int]  # the window's training images (sample ids, as the benchmark type hands them)
    samples: Mapping[int, Any]  # sample id -> benchmark.manifest.Sample of every training image (label, generator)
    dataset: Dataset  # the window's training items, sample after sample (see `item_counts`)
    factor: int  # augmentation copies per image (items per sample of image datasets)
    make_dataset: Callable[[list[int]], Dataset]  # the same kind of dataset for other training images
    batch_size: int
    device: torch.device
    workers: Callable[[Dataset], int]  # DataLoader workers for a dataset (0 for in-memory arrays)
    say: Callable[[str], None] = print
    module: Any = None  # the window's DetectorModule, set once it exists (before `after_training`)
    extras: dict = field(default_factory=dict)

    def logits(self, x: torch.Tensor, detector: torch.nn.Module | None = None) -> torch.Tensor:
        """The training step's forward (normalisation, cached probe features, channels-last) of the window's
        detector, or of another model with the same input contract (a teacher)."""
        return self.module.logits(x, detector)

    @contextmanager
    def evaluating(self) -> Iterator[torch.nn.Module]:
        """The detector in eval mode on ``device`` for a pass over data (importances, stored logits); afterwards
        every submodule is back in its former mode and on the CPU, as the engine expects between phases."""
        modes = {m: m.training for m in self.module.modules()}
        self.module.to(self.device).eval()
        try:
            yield self.detector
        finally:
            for m, training in modes.items():
                m.training = training
            self.module.to("cpu")

    def items(self, ids: Sequence[int] | None = None) -> tuple[Dataset, np.ndarray]:
        """The training dataset of the window (or of ``ids``) and how many items each of its samples has."""
        ids = self.sample_ids if ids is None else list(ids)
        ds = self.dataset if ids is self.sample_ids else self.make_dataset(ids)
        return ds, item_counts(ds, len(ids), self.factor)

    def first_copies(self, ids: Sequence[int] | None = None) -> Dataset:
        """The first item of each sample (of the window, or of ``ids``): copy 0 of an image, the first segment or
        frame of a video; samples without items are left out."""
        ds, counts = self.items(ids)
        starts = np.cumsum(counts) - counts
        return Subset(ds, starts[counts > 0].tolist())

    def batches(self, ds: Dataset, batch_size: int | None = None) -> Iterator[list]:
        """``ds`` in order, in batches moved to ``device`` (a fixed generator: the global RNG is not touched)."""
        base = ds.dataset if isinstance(ds, Subset) else ds  # in-memory arrays are read without workers
        loader = DataLoader(ds, batch_size=batch_size or self.batch_size, shuffle=False,
                            num_workers=self.workers(base), generator=torch.Generator().manual_seed(0))
        for batch in loader:
            yield [b.to(self.device) if isinstance(b, torch.Tensor) else b for b in batch]


@dataclass
class TrainStep:
    """One training step as a strategy's `training_loss` sees it (this process's part of the global batch)."""

    x: torch.Tensor  # pixels (uint8) or cached probe features
    y: torch.Tensor  # labels, float 0/1
    ids: torch.Tensor  # sample ids; negative for rows a BatchExtension added (row of extension item j: -(j + 1))
    logits: torch.Tensor  # the detector's (N,) logits, fp32
    loss: torch.Tensor  # the plain loss (mean BCE over every row of the global batch)
    window: int
    forward: Callable[..., torch.Tensor]  # forward(x, detector): logits of another model on this batch's inputs
    world: int = 1
    weights: torch.Tensor | None = None  # per-row class weights of the plain loss (benchmark.real_sampling=weighted)
    own_loss: bool = False  # the detector trains with its own loss (LRNet's per-branch NLL), not BCE on `logits`

    @property
    def from_memory(self) -> torch.Tensor:
        """Bool mask of rows added by the strategy's BatchExtension."""
        return self.ids < 0

    @property
    def memory_index(self) -> torch.Tensor:
        """Index into the extension's dataset of each added row (meaningless for the other rows)."""
        return -self.ids - 1

    def mean(self, values: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of per-row ``values`` over the selected ``rows`` of the *global* batch (all rows when None).

        Under DDP each process holds part of the batch and DDP averages gradients over processes; the sum here is
        scaled so that the averaged gradient is that of the global mean (as the plain loss is). Rows: bool mask.
        """
        if rows is not None:
            values = values[rows]
        if self.world == 1:
            return values.mean() if values.numel() else values.sum() * 0.0
        n = torch.tensor([float(values.numel())], device=values.device)
        dist.all_reduce(n)
        if n.item() == 0:
            return values.sum() * 0.0
        return values.sum() * (self.world / n.item())


def item_counts(ds: Dataset, n_samples: int, factor: int) -> np.ndarray:
    """Items of each of the ``n_samples`` samples a training dataset was built from, whose items come sample after
    sample: ``ds.items_per_sample()`` where the dataset defines it (a video's segments or frames), else ``factor``
    fixed augmented copies of each image."""
    own = getattr(ds, "items_per_sample", None)
    counts = np.asarray(own(), dtype=np.int64) if own is not None else np.full(n_samples, int(factor), np.int64)
    if counts.shape != (n_samples,) or int(counts.sum()) != len(ds):
        raise RuntimeError(f"training dataset {type(ds).__name__}: {len(ds)} items do not split into {n_samples} "
                           f"samples as {'its items_per_sample()' if own is not None else f'{factor} copies each'}")
    return counts


def trainable_named_parameters(detector: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The parameters a window trains (the head only for probes), by name."""
    return {n: p for n, p in detector.named_parameters() if p.requires_grad}
