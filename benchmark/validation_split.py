"""A validation split for model selection and thresholds, never read by the evaluation (DESIGN §9).

Two origins, recorded as `origin`:

- ``carved`` (`train.validation: <fraction or count>`): images held out of the training data. Every train id of
  the benchmark's training sets belongs to the group (first training step that lists it, class, generator); in
  each group of n >= 2 images a seeded choice of images is held out (at least one, never all: one image of the
  group stays in training), a group of one image is never held out. A fraction f holds out round-half-up(f·n)
  images per group, clamped to [1, n − 1]. A count c is per training step: the c images are shared among the
  step's new groups in proportion to their size (largest remainders), then clamped the same way, so a step
  with more groups than c holds out one image per group. Held-out images leave every training set (a
  cumulative window never trains on an image that an earlier window held out), and the validation set of step
  k is the held-out images that step k's training set listed: windows 0..k for `cumulative`, window k for
  `continual`. The choice is seeded per group (`train.validation_seed`, the step, class and generator), so
  adding a generator leaves the other groups' choices alone.
- ``source`` (a source with a `val` split, such as LRNet's landmark layout): step k validates on the `val` fakes
  of the generators it trains on plus every `val` real.

The evaluation split is never part of either: the carved images are train images (a duplicate of an eval image
among them is a `duplicate` error of `genshift data check`, like any train image), and a source's `val` split is
checked against the eval split the same way.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmark.manifest import Manifest, Sample

ROUNDING = ("fraction f: round-half-up(f * n) images of each (first step, class, generator) group of n >= 2, "
            "at least 1 and at most n - 1; count c: per training step, shared among its new groups by largest "
            "remainders, then the same bounds; groups of one image stay in training")


@dataclass
class ValidationSplit:
    """Held-out ids and the validation ids of every training step (all ids of split `split`)."""

    origin: str  # "carved" | "source"
    split: str  # the manifest split the ids belong to: "train" (carved) or "val" (source)
    per_step: list[list[int]]  # validation ids of training step k, ascending
    held_out: list[int] = field(default_factory=list)  # carved: every held-out train id, ascending
    first_step: dict[int, int] = field(default_factory=dict)  # carved: held-out id -> the step whose data it was
    spec: float | int = 0
    seed: int = 0

    def describe(self) -> dict:
        """What run.json records (the ids themselves go to the run directory's validation file)."""
        out = {"origin": self.origin, "split": self.split, "per_step": [len(v) for v in self.per_step]}
        if self.origin == "carved":
            out |= {"spec": self.spec, "seed": self.seed, "held_out": len(self.held_out), "rounding": ROUNDING}
        else:
            out |= {"rule": "the val fakes of the step's generators plus every val real"}
        return out


def parse_validation(value: float | int | None) -> float | int:
    """`train.validation` as 0 (none), a fraction in (0, 1) or a count >= 1; anything else is a ValueError."""
    if value is None or value == 0:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"train.validation: expected 0, a fraction in (0, 1) or a count >= 1, got {value!r}")
    if 0 < value < 1:
        return float(value)
    if float(value).is_integer():
        return int(value)
    raise ValueError(f"train.validation: {value!r} is neither a fraction in (0, 1) nor a whole count")


def validation_problem(value) -> str | None:
    """For the config schema: what is wrong with a `train.validation` value (None when fine)."""
    try:
        parse_validation(value)
    except ValueError as e:
        return str(e).partition(": ")[2]
    return None


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _bounded(k: int, n: int) -> int:
    return 0 if n < 2 else min(n - 1, max(1, k))


def _fraction_counts(sizes: dict[tuple, int], f: float) -> dict[tuple, int]:
    return {g: _bounded(_round_half_up(f * n), n) for g, n in sizes.items()}


def _count_counts(sizes: dict[tuple, int], c: int, step: int) -> dict[tuple, int]:
    """c images over the groups in proportion to their sizes (largest remainders, ties by group order)."""
    total = sum(sizes.values())
    room = sum(n - 1 for n in sizes.values() if n >= 2)
    if c > room:
        raise ValueError(f"train.validation={c}: training step {step} adds {total} images in {len(sizes)} "
                         f"(class, generator) groups and can hold out at most {room} (one image of each group stays "
                         "in training); use a smaller count or a fraction")
    quotas = {g: c * n / total for g, n in sizes.items()}
    counts = {g: int(math.floor(q)) for g, q in quotas.items()}
    left = c - sum(counts.values())
    for g in sorted(sizes, key=lambda g: (-(quotas[g] - counts[g]), g))[:left]:
        counts[g] += 1
    return {g: _bounded(k, sizes[g]) for g, k in counts.items()}


def carve_validation(train: Sequence[Sample], train_sets: Sequence[Sequence[int]], value: float | int,
                     seed: int) -> tuple[list[list[int]], ValidationSplit]:
    """(training sets without the held-out ids, the split) — see the module docstring for the rule."""
    spec = parse_validation(value)
    if spec == 0:
        raise ValueError("carve_validation: train.validation is 0 (no validation split)")
    by_id = {s.id: s for s in train}
    first: dict[int, int] = {}
    for k, ids in enumerate(train_sets):
        for i in ids:
            first.setdefault(int(i), k)
    groups: dict[tuple[int, int, str], list[int]] = {}
    for i, k in first.items():
        s = by_id[i]
        groups.setdefault((k, int(s.label), s.generator), []).append(i)
    held: set[int] = set()
    for k in range(len(train_sets)):
        sizes = {g[1:]: len(v) for g, v in groups.items() if g[0] == k}
        if not sizes:
            continue
        counts = _fraction_counts(sizes, spec) if isinstance(spec, float) else _count_counts(sizes, spec, k)
        for (label, gen), n in sorted(counts.items()):
            if n:
                rng = random.Random(f"genshift-validation:{seed}:{k}:{label}:{gen}")
                held.update(rng.sample(sorted(groups[(k, label, gen)]), n))
    new_sets = [[i for i in ids if int(i) not in held] for ids in train_sets]
    per_step = [sorted({int(i) for i in ids} & held) for ids in train_sets]
    for k, ids in enumerate(new_sets):
        if not ids:
            raise ValueError(f"train.validation={value}: training step {k} keeps no training image")
    split = ValidationSplit("carved", "train", per_step, sorted(held), {i: first[i] for i in sorted(held)}, spec,
                            int(seed))
    return new_sets, split


def source_validation(manifest: Manifest, train_sets: Sequence[Sequence[int]]) -> ValidationSplit | None:
    """The source's own `val` split per training step (module docstring), or None when it has none."""
    val = manifest.split("val")
    if not val:
        return None
    train = {s.id: s for s in manifest.split("train")}
    per_step = []
    for ids in train_sets:
        gens = {train[int(i)].generator for i in ids if train[int(i)].label == 1}
        per_step.append([s.id for s in val if s.label == 0 or s.generator in gens])
    return ValidationSplit("source", "val", per_step)


def validation_rows(split: ValidationSplit, manifest: Manifest) -> list[dict]:
    """One row per held-out (carved) or validation (source) id: what the run directory's validation file lists."""
    by_id = {s.id: s for s in manifest.split(split.split)}
    ids = split.held_out if split.origin == "carved" else sorted({i for v in split.per_step for i in v})
    member = [set(v) for v in split.per_step]
    steps = {i: [k for k, v in enumerate(member) if i in v] for i in ids}
    return [{"split": split.split, "id": i, "label": by_id[i].label, "generator": by_id[i].generator,
             "path": by_id[i].path, "held_out_from_step": split.first_step.get(i, ""),
             "validates_steps": " ".join(str(k) for k in steps[i])} for i in ids]
