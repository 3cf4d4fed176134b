"""Training sets per benchmark type and the eval pairing, checked against the reference's recipe."""

import random
from collections import Counter

import numpy as np
import pytest

from benchmark.eval_plan import make_eval_plan
from benchmark.manifest import Sample
from benchmark.windows_plan import BenchmarkType, own_window_sets, training_sets

WINDOWS = [["g1", "g2"], ["g3"], ["g4", "g5"]]
NAMES = ["", "g1", "g2", "g3", "g4", "g5"]


def make_split(split, n_real, fakes_per_gen, shuffle_seed=0):
    rows = [("", 0)] * n_real + [(g, 1) for g in NAMES[1:] for _ in range(fakes_per_gen)]
    random.Random(shuffle_seed).shuffle(rows)
    return [Sample(id=i, split=split, label=lab, generator=g, path=f"{i}.png", width=8, height=8)
            for i, (g, lab) in enumerate(rows)]


def reference_windows(train, windows, seed=1337):
    """The reference's make_sliding_windows, restated from its description (DESIGN §3.4)."""
    gens = [s.generator for s in train]
    available = {i for i, g in enumerate(gens) if g == ""}
    out = []
    for w, wg in enumerate(windows):
        fakes = [i for i, g in enumerate(gens) if g in set(wg)]
        random.seed(seed + w)
        reals = random.sample(sorted(available), len(fakes))
        out.append(reals + fakes)
        available -= set(reals)
    return out


def test_own_window_sets_match_reference_and_never_reuse_reals():
    train = make_split("train", 60, 5)
    own = own_window_sets(train, WINDOWS)
    assert own == reference_windows(train, WINDOWS)
    reals = [i for w in own for i in w if train[i].label == 0]
    assert len(reals) == len(set(reals))
    for w, ids in zip(WINDOWS, own, strict=True):
        labels = Counter(train[i].label for i in ids)
        assert labels[0] == labels[1] == 5 * len(w)
        assert {train[i].generator for i in ids if train[i].label} == set(w)


def test_benchmark_types():
    train = make_split("train", 60, 5)
    own = own_window_sets(train, WINDOWS)
    cum = training_sets(train, WINDOWS, BenchmarkType.parse("cumulative"))
    assert cum[0] == own[0] and cum[1] == own[1] + own[0] and cum[2] == own[2] + own[1] + own[0]
    assert training_sets(train, WINDOWS, BenchmarkType.parse("continual")) == own
    rep = training_sets(train, WINDOWS, BenchmarkType.parse("replay:0.5"))
    assert rep[0] == own[0]
    assert rep[2][: len(own[2])] == own[2]
    assert len(rep[2]) == len(own[2]) + round(0.5 * len(own[0])) + round(0.5 * len(own[1]))
    assert set(rep[2]) <= set(cum[2])
    assert rep == training_sets(train, WINDOWS, BenchmarkType.parse("replay:0.5"))  # seeded
    full = training_sets(train, WINDOWS, BenchmarkType.parse("full"))
    assert len(full) == 1
    assert sorted(i for i in full[0] if train[i].label == 1) == sorted(i for i in cum[2] if train[i].label == 1)
    assert sum(train[i].label == 0 for i in full[0]) == 25 and len(set(full[0])) == 50


@pytest.mark.parametrize("spec", ["replay", "replay:0", "replay:x", "cumul"])
def test_bad_benchmark_type(spec):
    with pytest.raises(ValueError, match="benchmark type|replay"):
        BenchmarkType.parse(spec)


def test_too_few_reals_is_an_error():
    train = make_split("train", 12, 5)
    with pytest.raises(ValueError, match="unused real"):
        own_window_sets(train, WINDOWS)


@pytest.mark.parametrize("n_real", [25, 40])  # balanced (the reference crashes there) and more reals
def test_eval_pairing_one_real_per_fake_for_every_generator(n_real):
    ev = make_split("eval", n_real, 5, shuffle_seed=3)
    plan = make_eval_plan(ev, NAMES)
    assert len(plan.sample_ids) == 50 and len(set(plan.sample_ids.tolist())) == 50
    fakes = Counter(plan.generator_ids[plan.labels == 1].tolist())
    paired = Counter(plan.pairing[plan.labels == 0].tolist())
    assert fakes == paired == {g: 5 for g in range(1, 6)}
    assert (plan.pairing[plan.labels == 1] == -1).all()
    assert np.array_equal(make_eval_plan(ev, NAMES).pairing, plan.pairing)  # deterministic


def test_eval_plan_follows_reference_recipe():
    ev = make_split("eval", 40, 5, shuffle_seed=4)
    plan = make_eval_plan(ev, NAMES)
    gens = [s.generator for s in ev]
    real_rows = [i for i, g in enumerate(gens) if g == ""]
    fake_rows = [i for i, g in enumerate(gens) if g != ""]
    random.seed(1338)
    subset = random.sample(real_rows, len(fake_rows)) + fake_rows
    perm = np.random.default_rng(1340).permutation(len(subset))
    ordered = [subset[p] for p in perm]
    assert plan.sample_ids.tolist() == ordered
    real_pos = [i for i, r in enumerate(ordered) if gens[r] == ""]
    fake_pos = [i for i, r in enumerate(ordered) if gens[r] != ""]
    random.seed(1341)
    random.shuffle(real_pos)
    for f, r in zip(fake_pos, real_pos, strict=True):
        assert plan.pairing[r] == NAMES.index(gens[ordered[f]])
