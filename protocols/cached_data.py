"""Datasets over cached arrays (pixels or probe features) and the uncached, reference-style eval stream.

Items have the same types as protocols.data's (uint8 CHW tensor or float32 feature row, then label/id or
position), so the engine's samplers, collation and LightningModule see the same batches either way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmark.array_store import ChunkedArray
from benchmark.eval_cache import degraded_input
from benchmark.manifest import Manifest
from benchmark.masks import target_counts


def read_rows(arr, idx) -> np.ndarray:
    """arr[idx] as a writable array of its own: a store's rows are read fresh (no second copy), an in-memory or
    memory-mapped array is copied."""
    return arr[idx] if isinstance(arr, ChunkedArray) else np.array(arr[idx])


class ArrayEval(Dataset):
    """Row i of a cached (N, ...) array (uint8 pixels or float32 features), with its position i."""

    features_in = False

    def __init__(self, arr: np.ndarray, features_in: bool = False):
        self.arr, self.features_in = arr, features_in

    def __len__(self) -> int:
        return len(self.arr)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(read_rows(self.arr, i)), i

    def __getitems__(self, idx: list[int]) -> list[tuple[torch.Tensor, int]]:
        """One read per batch when the positions are consecutive (the eval order), else one per row."""
        lo = idx[0] if idx else 0
        if idx and idx == list(range(lo, lo + len(idx))):
            block = read_rows(self.arr, slice(lo, lo + len(idx)))
            return [(torch.from_numpy(block[j]), i) for j, i in enumerate(idx)]
        return [self[i] for i in idx]


class EvalStream(Dataset):
    """The reference-style path: decode, degrade and adapt eval image i each time it is asked for."""

    features_in = False

    def __init__(self, jobs: Sequence[tuple]):
        self.jobs = list(jobs)

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(degraded_input(*self.jobs[i])), i


class ArrayTrainCopies(Dataset):
    """Item i is copy `i % factor` of sample `ids[i // factor]` (as protocols.data.TrainCopies), read from a
    cached array whose rows for sample id s start at `rows[s]` (pixels, or probe features).

    ``masks``: the store has a 4th channel, the pixel target; items then end with (uint8 1×S×S target,
    whether it counts in the pixel loss), as TrainCopies(masks=True) yields them.
    """

    def __init__(self, arr: np.ndarray, rows: dict[int, int], manifest: Manifest, ids: Sequence[int], factor: int,
                 features_in: bool = False, masks: bool = False):
        by_id = {s.id: s for s in manifest.split("train")}
        missing = [i for i in ids if i not in rows]
        if missing:
            raise KeyError(f"training ids {missing[:5]} are missing from the cached training store")
        if masks and (features_in or arr.ndim != 4 or arr.shape[1] != 4):
            raise ValueError(f"a training store with masks must hold uint8 N×4×S×S pixels, got {arr.dtype} "
                             f"{arr.shape} (features_in={features_in})")
        self.arr, self.rows, self.factor, self.features_in, self.masks = arr, rows, factor, features_in, masks
        self.ids = [int(i) for i in ids]
        self.labels = [float(by_id[i].label) for i in self.ids]
        self.valid = [target_counts(by_id[i].label, by_id[i].mask) for i in self.ids]

    def __len__(self) -> int:
        return len(self.ids) * self.factor

    def __getitem__(self, i: int) -> tuple:
        j, copy = divmod(i, self.factor)
        return self._item(j, read_rows(self.arr, self.rows[self.ids[j]] + copy))

    def __getitems__(self, idx: list[int]) -> list[tuple]:
        """A batch's items with one (fancy-indexed) read of the store instead of one read per item."""
        pairs = [divmod(i, self.factor) for i in idx]
        block = self.arr[[self.rows[self.ids[j]] + copy for j, copy in pairs]]
        return [self._item(j, row) for (j, _), row in zip(pairs, block, strict=True)]

    def _item(self, j: int, row: np.ndarray) -> tuple:
        sid = self.ids[j]
        if self.masks:
            return (torch.from_numpy(row[:3]), torch.tensor(self.labels[j]), sid, torch.from_numpy(row[3:]),
                    torch.tensor(self.valid[j]))
        return torch.from_numpy(row), torch.tensor(self.labels[j]), sid
