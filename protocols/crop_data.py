"""Eval datasets whose items are groups of crops: the reference pipeline (float crops) and five-crop evaluation.

An item is ``(crops, position)`` with ``crops`` of shape (n, ...) — n = 1, or 5 for five_crop (one when the
reference's fallback applies). `crop_collate` concatenates a batch's crops and repeats each position per crop,
so a batch is ``(x (sum n, ...), positions (sum n,))``, the same two fields as a single-crop batch: the detector
scores every crop, and the engine fuses the crops of a position afterwards (`protocols.predictions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmark.eval_cache import degraded_input
from benchmark.model_input import decode_crops
from benchmark.reference_eval_cache import ReferenceStore, reference_input
from protocols.cached_data import ArrayEval, read_rows


class CropBatch(NamedTuple):
    """A batch assembled by a dataset's ``__getitems__`` in one piece (one read, no per-item split and join)."""

    x: torch.Tensor
    positions: torch.Tensor


def crop_collate(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    """(all crops of the batch concatenated, the position of each crop)."""
    if len(items) == 1 and isinstance(items[0], CropBatch):
        return items[0].x, items[0].positions
    x = torch.cat([it[0] for it in items])
    pos = torch.cat([torch.full((len(it[0]),), int(it[1]), dtype=torch.long) for it in items])
    return x, pos


class _Grouped(Dataset):
    """Common parts: crop collation and, when known, where each position's crops are (`offsets`)."""

    features_in = False
    collate = staticmethod(crop_collate)
    offsets: np.ndarray | None = None  # (N + 1,) crop offsets, when known without computing the crops

    @property
    def n_crops(self) -> int | None:
        return None if self.offsets is None else int(self.offsets[-1])


class ReferenceEvalStore(_Grouped):
    """Position p: its crops from the reference eval store, float32 before normalisation (bit-exact)."""

    def __init__(self, store: ReferenceStore):
        self.store, self.offsets = store, store.offsets

    def __len__(self) -> int:
        return self.store.n_positions

    def __getitem__(self, p: int) -> tuple[torch.Tensor, int]:
        return self.store.crops([p])[0], p

    def __getitems__(self, idx: list[int]) -> list[CropBatch]:
        """The whole batch in one decode (consecutive positions read contiguous rows), already collated."""
        return [CropBatch(*self.store.crops(idx))]


class ReferenceEvalStream(_Grouped):
    """The uncached reference pipeline: decode, degrade and crop eval image p each time it is asked for."""

    def __init__(self, jobs: Sequence[tuple]):
        self.jobs = list(jobs)

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, p: int) -> tuple[torch.Tensor, int]:
        crops = reference_input(*self.jobs[p])
        kinds = np.array([k for k, _ in crops])
        u8 = [a for k, a in crops if k != 2]
        f32 = [a for k, a in crops if k == 2]
        rows, nu, nf = [], 0, 0
        for k in kinds:
            rows.append(nf if k == 2 else nu)
            nf, nu = (nf + 1, nu) if k == 2 else (nf, nu + 1)
        x = decode_crops(kinds, np.stack(u8) if u8 else None, np.stack(f32) if f32 else None, np.array(rows))
        return x, p


class GroupedRows(_Grouped):
    """Position p: rows offsets[p]:offsets[p+1] of an array (native five-crop pixels, or probe features of crops)."""

    def __init__(self, arr: np.ndarray, offsets: np.ndarray, features_in: bool = False):
        if len(arr) != int(offsets[-1]):
            raise ValueError(f"GroupedRows: {len(arr)} rows for {int(offsets[-1])} crops")
        self.arr, self.offsets, self.features_in = arr, np.asarray(offsets, dtype=np.int64), features_in

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, p: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(read_rows(self.arr, slice(int(self.offsets[p]), int(self.offsets[p + 1])))), p

    def __getitems__(self, idx: list[int]) -> list:
        """Consecutive positions (the eval order): one read of their rows, already collated."""
        lo = idx[0] if idx else 0
        if idx and idx == list(range(lo, lo + len(idx))):
            block = torch.from_numpy(read_rows(self.arr, slice(int(self.offsets[lo]), int(self.offsets[lo + len(idx)]))))
            counts = np.diff(self.offsets[lo:lo + len(idx) + 1])
            return [CropBatch(block, torch.from_numpy(np.repeat(np.asarray(idx, dtype=np.int64), counts)))]
        return [self[p] for p in idx]


class NativeMultiCropStream(_Grouped):
    """The uncached native five_crop path: eval image p decoded, degraded and cut into its crops (uint8)."""

    def __init__(self, jobs: Sequence[tuple], n_crops: int):
        self.jobs = list(jobs)
        self.offsets = np.arange(len(self.jobs) + 1, dtype=np.int64) * n_crops

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, p: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(degraded_input(*self.jobs[p])), p


def is_grouped(ds: Dataset) -> bool:
    """Whether a dataset's items are groups of crops (collate with `crop_collate`)."""
    return isinstance(ds, _Grouped)


class ReferenceCropRows(Dataset):
    """Crop i of a reference eval store (float32 before normalisation) with its crop index: one row per crop, for
    the probe's feature extraction (a feature row per crop, in crop order)."""

    features_in = False

    def __init__(self, store: ReferenceStore):
        self.store = store

    def __len__(self) -> int:
        return self.store.n_crops

    def _decode(self, rows) -> torch.Tensor:
        idx = self.store.index[rows]
        return decode_crops(idx[:, 1], self.store.u8, self.store.f32, idx[:, 2])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self._decode(slice(i, i + 1))[0], i

    def __getitems__(self, idx: list[int]) -> list[tuple[torch.Tensor, int]]:
        """Consecutive crops (the extraction order): one decode."""
        lo = idx[0] if idx else 0
        if idx and idx == list(range(lo, lo + len(idx))):
            x = self._decode(slice(lo, lo + len(idx)))
            return [(x[j], i) for j, i in enumerate(idx)]
        return [self[i] for i in idx]


class CropsOfGroups(Dataset):
    """Crop i of a grouped dataset whose crop offsets are known (a streamed five_crop or single-crop reference
    stream), with its crop index; consecutive crops of one image are computed once."""

    features_in = False

    def __init__(self, ds: _Grouped):
        if ds.offsets is None:
            raise ValueError("CropsOfGroups: the crops per image are not known before they are computed")
        self.ds, self.offsets = ds, np.asarray(ds.offsets, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitems__(self, idx: list[int]) -> list[tuple[torch.Tensor, int]]:
        out, last, crops = [], -1, None
        for i, p in zip(idx, np.searchsorted(self.offsets, idx, side="right") - 1, strict=True):
            if p != last:
                crops, last = self.ds[int(p)][0], p
            out.append((crops[int(i - self.offsets[p])], int(i)))
        return out

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.__getitems__([i])[0]


def crop_rows(ds: Dataset) -> Dataset:
    """A grouped eval dataset as one item per crop, in crop order (the probe's feature extraction, one feature row
    per crop): the rows of a native five_crop store, of the reference store, or a stream's crops. The cache plan
    keeps probe features off where the crops per image are unknown (reference five_crop, streamed)."""
    if isinstance(ds, GroupedRows):
        return ArrayEval(ds.arr)
    if isinstance(ds, ReferenceEvalStore):
        return ReferenceCropRows(ds.store)
    return CropsOfGroups(ds)
