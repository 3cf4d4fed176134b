"""Training sets per window for each benchmark type (DESIGN §3.4), as lists of train sample ids."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from benchmark.manifest import Sample

BENCHMARK_TYPES = ("cumulative", "continual", "replay:<r>", "full")


@dataclass(frozen=True)
class BenchmarkType:
    """Parsed benchmark type: kind in {cumulative, continual, replay, full}, replay fraction."""

    kind: str
    replay_fraction: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> BenchmarkType:
        if spec in ("cumulative", "continual", "full"):
            return cls(spec)
        if spec.startswith("replay:"):
            try:
                r = float(spec.split(":", 1)[1])
            except ValueError as e:
                raise ValueError(f"benchmark type {spec!r}: replay fraction is not a number") from e
            if not 0.0 < r <= 1.0:
                raise ValueError(f"benchmark type {spec!r}: replay fraction must be in (0, 1]")
            return cls("replay", r)
        raise ValueError(f"unknown benchmark type {spec!r}; expected one of {BENCHMARK_TYPES}")

    def __str__(self) -> str:
        return f"replay:{self.replay_fraction:g}" if self.kind == "replay" else self.kind


def own_window_sets(
    train: Sequence[Sample], windows: Sequence[Sequence[str]], real_seed: int = 1337
) -> list[list[int]]:
    """Per window: reals drawn from the unused pool (as many as fakes) + all the window's fakes.

    Reference semantics: `random.seed(real_seed + w)`, `random.sample(sorted(pool), n_fakes)`; drawn
    reals leave the pool, so no real image serves two windows. Ids are train sample ids.
    """
    pool = {s.id for s in train if s.label == 0}
    out: list[list[int]] = []
    for w, gens in enumerate(windows):
        gen_set = set(gens)
        fakes = [s.id for s in train if s.label == 1 and s.generator in gen_set]
        if len(fakes) > len(pool):
            raise ValueError(
                f"window {w}: needs {len(fakes)} unused real train images but only {len(pool)} remain; "
                "the dataset has too few real training images for this timeline"
            )
        random.seed(real_seed + w)
        reals = random.sample(sorted(pool), len(fakes))
        pool.difference_update(reals)
        out.append(reals + fakes)
    return out


def training_sets(
    train: Sequence[Sample],
    windows: Sequence[Sequence[str]],
    benchmark_type: BenchmarkType,
    real_seed: int = 1337,
    replay_seed: int = 7,
) -> list[list[int]]:
    """Train sample ids per training step for the benchmark type.

    `full` returns one set (all generators, real sampling as for a single window).
    """
    sorted_train = sorted(train, key=lambda s: s.id)
    if benchmark_type.kind == "full":
        all_gens = [g for w in windows for g in w]
        return own_window_sets(sorted_train, [all_gens], real_seed)
    own = own_window_sets(sorted_train, windows, real_seed)
    if benchmark_type.kind == "continual":
        return own
    if benchmark_type.kind == "cumulative":
        return [[i for j in range(k, -1, -1) for i in own[j]] for k in range(len(own))]
    sets = []
    for k in range(len(own)):
        ids = list(own[k])
        for j in range(k):
            rng = random.Random(replay_seed * 1_000_003 + k * 1009 + j)
            n = round(benchmark_type.replay_fraction * len(own[j]))
            ids += sorted(rng.sample(own[j], n))
        sets.append(ids)
    return sets
