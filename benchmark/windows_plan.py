"""Training sets per window for each benchmark type (DESIGN §3.4), as lists of train sample ids."""

from __future__ import annotations

import difflib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from benchmark.manifest import Sample


class BenchmarkKind(StrEnum):
    """How each window's training set is made (DESIGN §3.4)."""

    CUMULATIVE = "cumulative"  # the fakes and reals of windows 0..k (the reference)
    CONTINUAL = "continual"  # the own window only
    REPLAY = "replay"  # the own window plus a seeded fraction of each earlier one (`replay:<r>`)
    FULL = "full"  # one window with every generator (an upper bound)


BENCHMARK_TYPES = ("cumulative", "continual", "replay:<r>", "full")


@dataclass(frozen=True)
class BenchmarkType:
    """Parsed benchmark type: its kind and, for replay, the fraction replayed."""

    kind: BenchmarkKind
    replay_fraction: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> BenchmarkType:
        if spec in ("cumulative", "continual", "full"):
            return cls(BenchmarkKind(spec))
        if spec.startswith("replay:"):
            try:
                r = float(spec.split(":", 1)[1])
            except ValueError as e:
                raise ValueError(f"benchmark type {spec!r}: replay fraction is not a number") from e
            if not 0.0 < r <= 1.0:
                raise ValueError(f"benchmark type {spec!r}: replay fraction must be in (0, 1]")
            return cls(BenchmarkKind.REPLAY, r)
        close = difflib.get_close_matches(str(spec).partition(":")[0], [k.value for k in BenchmarkKind], n=1)
        hint = f"; did you mean {close[0] + (':<r>' if close[0] == 'replay' else '')}?" if close else ""
        raise ValueError(f"unknown benchmark type {spec!r}; expected one of {', '.join(BENCHMARK_TYPES)}{hint}")

    def __str__(self) -> str:
        return f"replay:{self.replay_fraction:g}" if self.kind is BenchmarkKind.REPLAY else self.kind.value


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


REAL_SAMPLINGS = ("unique", "repeat", "weighted")


def shared_real_sets(train: Sequence[Sample], steps: Sequence[Sequence[str]], repeat: bool) -> list[list[int]]:
    """Per training step: the fakes of its generators plus every train real (not consumed across steps).

    ``repeat`` (LRNet's FF_all): the reals are listed once per generator of the step, as LRNet reads its Origin
    folder once per manipulation method to balance the classes; otherwise once (`weighted`: the loss balances
    the classes instead, see class_weights).
    """
    reals = [s.id for s in train if s.label == 0]
    out = []
    for gens in steps:
        gen_set = set(gens)
        fakes = [s.id for s in train if s.label == 1 and s.generator in gen_set]
        n = len({s.generator for s in train if s.label == 1 and s.generator in gen_set}) if repeat else 1
        out.append(reals * max(n, 1) + fakes)
    return out


def class_weights(labels: Sequence[int]) -> tuple[float, float]:
    """(w_real, w_fake) that give both classes the same total weight: n / (2 n_class)."""
    n1 = sum(1 for y in labels if int(y) == 1)
    n0 = len(labels) - n1
    if not n0 or not n1:
        raise ValueError(f"a training set needs reals and fakes to weight them, has {n0} reals and {n1} fakes")
    n = n0 + n1
    return n / (2 * n0), n / (2 * n1)


def training_sets(
    train: Sequence[Sample],
    windows: Sequence[Sequence[str]],
    benchmark_type: BenchmarkType,
    real_seed: int = 1337,
    replay_seed: int = 7,
    real_sampling: str = "unique",
) -> list[list[int]]:
    """Train sample ids per training step for the benchmark type.

    `full` returns one set (all generators, real sampling as for a single window). ``real_sampling``:
    `unique` (the reference: each window draws as many unused reals as it has fakes), `repeat` (LRNet: every
    train real in every step, listed once per generator of the step) or `weighted` (every train real once per
    step; the loss weights the classes, `class_weights`).
    """
    if real_sampling not in REAL_SAMPLINGS:
        raise ValueError(f"benchmark.real_sampling: unknown value {real_sampling!r}; expected one of "
                         f"{REAL_SAMPLINGS}")
    sorted_train = sorted(train, key=lambda s: s.id)
    if real_sampling != "unique":
        kind = benchmark_type.kind
        if kind == "replay":
            raise ValueError("benchmark.real_sampling repeat/weighted works with cumulative, continual and full; "
                             "replay draws fractions of each window's own (unique) set")
        if kind == "full":
            steps = [[g for w in windows for g in w]]
        elif kind == "continual":
            steps = [list(w) for w in windows]
        else:
            steps = [[g for w in windows[:k + 1] for g in w] for k in range(len(windows))]
        return shared_real_sets(sorted_train, steps, repeat=real_sampling == "repeat")
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
