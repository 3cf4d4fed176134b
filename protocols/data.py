"""Torch datasets the engine feeds to Lightning: fixed augmented training copies and cached eval inputs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmark.manifest import Manifest, Sample
from benchmark.train_cache import train_copy, train_copy_with_mask


class TrainCopies(Dataset):
    """`augmentation_factor` fixed augmented copies of each training sample.

    Item i is copy `i % factor` of sample `ids[i // factor]`; its augmentation depends only on
    (seed, sample id, copy), so it is identical in every window and after a resume. With ``masks`` (localization
    detectors) an item also carries the uint8 1×S×S pixel target aligned with the copy and whether it counts
    in the pixel loss (``benchmark.masks.training_mask``).
    """

    def __init__(
        self,
        manifest: Manifest,
        ids: Sequence[int],
        factor: int,
        size: int,
        seed: int,
        profile: str,
        resize_mode: str,
        masks: bool = False,
    ):
        if factor < 1:
            raise ValueError(f"augmentation_factor must be >= 1, got {factor}")
        by_id = {s.id: s for s in manifest.split("train")}
        self.samples: list[Sample] = [by_id[i] for i in ids]
        self.manifest, self.factor, self.size = manifest, factor, size
        self.seed, self.profile, self.resize_mode = seed, profile, resize_mode
        self.masks = bool(masks)

    def __len__(self) -> int:
        return len(self.samples) * self.factor

    def __getitem__(self, i: int) -> tuple:
        s = self.samples[i // self.factor]
        copy = i % self.factor
        if self.masks:
            x, m, valid = train_copy_with_mask(str(self.manifest.root), s.path, s.mask, s.label, s.id, copy,
                                               self.size, self.seed, self.profile, self.resize_mode)
            return torch.from_numpy(x), torch.tensor(float(s.label)), s.id, torch.from_numpy(m), torch.tensor(valid)
        x = train_copy(str(self.manifest.root), s.path, s.id, copy, self.size, self.seed, self.profile,
                       self.resize_mode)
        return torch.from_numpy(x), torch.tensor(float(s.label)), s.id


class CachedEval(Dataset):
    """Degraded, size-adapted eval inputs (uint8 N×3×S×S, possibly memory-mapped) by position."""

    def __init__(self, inputs: np.ndarray):
        self.inputs = inputs

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.array(self.inputs[i])), i
