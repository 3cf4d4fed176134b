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


class ReferenceTrainCopies(Dataset):
    """``aigenbench-baseline`` copies of one window's training subset, streamed (benchmark/reference_train_augment.py).

    Item i is copy `i % factor` of the sample at position `i // factor` of `ids` (the window's training subset in
    the reference's order); its deterministic part is seeded by (position, copy) as the reference seeds it, its
    rot90/flip/resize by (run seed, window, position, copy). Items are float32 3×S×S in [0, 1]; the detector module
    normalises them. A sample's copies differ from window to window (its position moves), so nothing is cached.
    """

    def __init__(self, manifest: Manifest, ids: Sequence[int], factor: int, size: int, run_seed: int, window: int,
                 base_seed: int):
        if factor < 1:
            raise ValueError(f"augmentation_factor must be >= 1, got {factor}")
        by_id = {s.id: s for s in manifest.split("train")}
        self.samples: list[Sample] = [by_id[i] for i in ids]
        self.manifest, self.factor, self.size = manifest, factor, size
        self.run_seed, self.window, self.base_seed = run_seed, window, base_seed

    def __len__(self) -> int:
        return len(self.samples) * self.factor

    def __getitem__(self, i: int) -> tuple:
        from benchmark.imagestore import read_image
        from benchmark.reference_train_augment import training_copy

        position, copy = divmod(i, self.factor)
        s = self.samples[position]
        x = training_copy(read_image(str(self.manifest.root), s.path), position, copy, self.size, self.run_seed,
                          self.window, self.base_seed)
        return x, torch.tensor(float(s.label)), s.id
