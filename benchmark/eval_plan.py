"""Evaluation order and real/fake pairing (DESIGN §3.5), reference-compatible.

The eval split is balanced (reals subsampled with `random.seed(1338)` when there are more reals than
fakes; fakes subsampled stratified by generator with scikit-learn's `train_test_split(random_state=1338)`
when there are more fakes than reals), shuffled like `datasets.Dataset.shuffle(seed=1340)` (numpy default_rng permutation), and every
real is paired with one generator: reals shuffled with `random.seed(1341)` and zipped with the fakes
in shuffled order. The balanced case (equal counts) works; the reference crashes there.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from benchmark.manifest import Sample


@dataclass(frozen=True)
class EvalPlan:
    """Eval samples in scoring order; position i is degraded with seed base_seed + i."""

    sample_ids: np.ndarray  # (N,) eval sample id at each position
    labels: np.ndarray  # (N,)
    generator_ids: np.ndarray  # (N,) 0 for reals
    pairing: np.ndarray  # (N,) paired generator id for reals, -1 for fakes


def make_eval_plan(
    eval_samples: Sequence[Sample],
    gen_id_to_name: Sequence[str],
    balance_seed: int = 1338,
    shuffle_seed: int = 1340,
    pairing_seed: int = 1341,
) -> EvalPlan:
    """Balance, shuffle and pair the eval split."""
    samples = sorted(eval_samples, key=lambda s: s.id)
    name_to_id = {n: i for i, n in enumerate(gen_id_to_name)}
    unknown = sorted({s.generator for s in samples if s.label == 1 and s.generator not in name_to_id})
    if unknown:
        raise ValueError(f"eval split has generators missing from the timeline: {unknown}")
    real_rows = [i for i, s in enumerate(samples) if s.label == 0]
    fake_rows = [i for i, s in enumerate(samples) if s.label == 1]
    if not real_rows or not fake_rows:
        raise ValueError(
            f"eval split needs reals and fakes; has {len(real_rows)} reals, {len(fake_rows)} fakes"
        )
    if len(real_rows) > len(fake_rows):
        random.seed(balance_seed)
        subset = random.sample(real_rows, len(fake_rows)) + fake_rows
    elif len(fake_rows) > len(real_rows):
        subset = real_rows + stratified_fake_subset(samples, fake_rows, len(real_rows), balance_seed)
    else:
        subset = real_rows + fake_rows
    perm = np.random.default_rng(shuffle_seed).permutation(len(subset))
    ordered = [samples[subset[p]] for p in perm]
    real_pos = [i for i, s in enumerate(ordered) if s.label == 0]
    fake_pos = [i for i, s in enumerate(ordered) if s.label == 1]
    random.seed(pairing_seed)
    random.shuffle(real_pos)
    gen_ids = np.array([name_to_id[s.generator] if s.label == 1 else 0 for s in ordered], dtype=np.int64)
    pairing = np.full(len(ordered), -1, dtype=np.int64)
    for f, r in zip(fake_pos, real_pos, strict=True):
        pairing[r] = gen_ids[f]
    return EvalPlan(
        sample_ids=np.array([s.id for s in ordered], dtype=np.int64),
        labels=np.array([s.label for s in ordered], dtype=np.int64),
        generator_ids=gen_ids,
        pairing=pairing,
    )


def stratified_fake_subset(
    samples: Sequence[Sample], fake_rows: list[int], n_keep: int, seed: int
) -> list[int]:
    """The reference's fake subsampling: `train_test_split(fake_rows, train_size=n_keep,
    stratify=generators, random_state=seed)`; returns the kept rows in the order sklearn gives them."""
    from sklearn.model_selection import train_test_split

    generators = [samples[i].generator for i in fake_rows]
    try:
        kept, _ = train_test_split(fake_rows, train_size=n_keep, stratify=generators, random_state=seed)
    except ValueError as e:
        raise ValueError(
            f"eval split: cannot subsample {len(fake_rows)} fakes to {n_keep} (the number of reals) "
            f"stratified by generator: {e}. Add real eval images (or fakes of the rare generators)"
        ) from e
    return [int(i) for i in kept]
