"""`replay` and `der++`: a fixed-size memory of training images, mixed into every training batch.

The memory holds at most ``memory_size`` images (a count, whatever the dataset's size). It is filled by
reservoir sampling balanced over groups: the reals are one group and each generator's fakes another. Every image
gets a fixed random key from (run seed, sample id) — a splitmix64 hash, so the key never depends on the order
in which images arrive — and each group keeps the images with the largest keys that its capacity allows: a
uniform random sample of every image of the group offered so far (reservoir sampling with random keys, as
Avalanche's ReservoirSamplingBuffer). Capacities: ``real_share`` of the memory for the reals (every window
trains on as many reals as fakes), the rest shared equally by the generators seen so far (a generator with fewer
images keeps all of them and its unused share goes to the others); integer remainders go to the earlier groups.

After window k trains, its images are offered to the memory. While window k+1 trains, every global batch of n
new images gets ``round(ratio * n)`` memory images appended (drawn without replacement when the memory is large
enough), each as one of its fixed augmented copies drawn at random; the draw is seeded by (seed, window, batch
index), so a resumed window draws the same. Plain `replay` trains on the joined batch with the plain loss
(experience replay); `der++` also stores the model's logits of every copy of an image when it enters the memory
and adds alpha * MSE to them and beta * BCE on the memory rows, the plain BCE then covering the new rows only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from protocols.strategies.base import BatchExtension, Strategy, TrainStep, WindowContext
from protocols.strategies.registry import BUILTINS, StrategyConfigError

REAL_GROUP = "real"
_KEY_DOMAIN = 0x5EED_2E5E_7701  # separates reservoir keys from any other use of the run seed
_DRAW_DOMAIN = 0x0D2A_77E2


def reservoir_keys(seed: int, ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Uniform [0, 1) key of each sample id under ``seed`` (splitmix64 of the pair; float64 with 53 bits)."""
    x = np.asarray(ids, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = x ^ (np.uint64(seed & 0xFFFF_FFFF_FFFF_FFFF) * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64(_KEY_DOMAIN)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def balanced_capacities(total: int, available: Sequence[int]) -> list[int]:
    """Split ``total`` slots equally over groups holding ``available`` items each (water-filling).

    A group with fewer items than its equal share keeps all of them and the rest is split again among the
    others; integer remainders go to the earliest groups still short (Avalanche's group lengths when every group
    has enough items: total // n each, the first total % n groups one more).
    """
    caps = [0] * len(available)
    left = total
    open_groups = [i for i, a in enumerate(available) if a > 0]
    while left > 0 and open_groups:
        share, extra = divmod(left, len(open_groups))
        small = [i for i in open_groups if available[i] - caps[i] <= share]
        if small and share > 0:  # these groups cannot take a full share: give them everything they have
            for i in small:
                left -= available[i] - caps[i]
                caps[i] = available[i]
            open_groups = [i for i in open_groups if i not in small]
            continue
        for rank, i in enumerate(open_groups):
            take = min(available[i] - caps[i], share + (1 if rank < extra else 0))
            caps[i] += take
            left -= take
        open_groups = [i for i in open_groups if caps[i] < available[i]]
        if share == 0:
            break
    return caps


class GroupReservoir:
    """The memory: per group the sample ids with the largest reservoir keys its capacity allows.

    Groups are kept in the order first seen (the reals first); `ids` lists the memory group after group, each
    by decreasing key. `offer` takes the images of one window; offering an image twice changes nothing.
    """

    def __init__(self, size: int, seed: int, real_share: float = 0.5) -> None:
        if size < 0:
            raise ValueError(f"memory size must be >= 0, got {size}")
        if not 0.0 <= real_share <= 1.0:
            raise ValueError(f"real_share must be in [0, 1], got {real_share}")
        self.size, self.seed, self.real_share = int(size), int(seed), float(real_share)
        self.groups: list[str] = []
        self.kept: dict[str, list[int]] = {}  # group -> kept ids, by decreasing key
        self.seen: dict[str, int] = {}  # group -> images offered so far (distinct)
        self._offered: set[int] = set()

    @property
    def ids(self) -> list[int]:
        return [i for g in self.groups for i in self.kept[g]]

    def __len__(self) -> int:
        return sum(len(v) for v in self.kept.values())

    def capacities(self) -> dict[str, int]:
        """Capacity of every group from the images seen so far (see the module docstring).

        A group's capacity never grows once it has dropped an image (it grows only while it keeps every image it
        was offered), so keeping the top keys of the images kept so far is exact reservoir sampling.
        """
        fakes = [g for g in self.groups if g != REAL_GROUP]
        n_real = self.seen.get(REAL_GROUP, 0)
        real_cap = min(n_real, round(self.real_share * self.size) if fakes else self.size)
        fake_caps = balanced_capacities(self.size - real_cap, [self.seen[g] for g in fakes])
        caps = dict(zip(fakes, fake_caps, strict=True))
        if REAL_GROUP in self.seen:
            caps[REAL_GROUP] = min(n_real, self.size - sum(fake_caps))  # the reals take what fakes cannot fill
        return caps

    def offer(self, ids: Sequence[int], groups: Sequence[str]) -> list[int]:
        """Offer images (sample ids with their groups); returns the ids that entered the memory."""
        fresh = [(int(i), g) for i, g in zip(ids, groups, strict=True) if int(i) not in self._offered]
        new_groups = list(dict.fromkeys(g for _, g in fresh if g not in self.seen))
        if REAL_GROUP in new_groups:  # the reals come first
            new_groups.remove(REAL_GROUP)
            self.groups.insert(0, REAL_GROUP)
        self.groups += new_groups
        for g in self.groups:
            self.seen.setdefault(g, 0)
            self.kept.setdefault(g, [])
        by_group: dict[str, list[int]] = {}
        for i, g in fresh:
            by_group.setdefault(g, []).append(i)
            self.seen[g] += 1
            self._offered.add(i)
        before = set(self.ids)
        caps = self.capacities()
        for g in self.groups:
            pool = self.kept[g] + by_group.get(g, [])
            if not pool:
                continue
            keys = reservoir_keys(self.seed, pool)
            order = np.lexsort((np.asarray(pool), -keys))  # by decreasing key (ties: by id)
            self.kept[g] = [pool[j] for j in order[: caps.get(g, 0)]]
        return [i for i in self.ids if i not in before]

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "seed": self.seed, "real_share": self.real_share, "groups": list(self.groups),
                "kept": [list(self.kept[g]) for g in self.groups], "seen": [self.seen[g] for g in self.groups],
                "offered": torch.tensor(sorted(self._offered), dtype=torch.int64)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.size, self.seed, self.real_share = int(state["size"]), int(state["seed"]), float(state["real_share"])
        self.groups = [str(g) for g in state["groups"]]
        self.kept = {g: [int(i) for i in ids] for g, ids in zip(self.groups, state["kept"], strict=True)}
        self.seen = {g: int(n) for g, n in zip(self.groups, state["seen"], strict=True)}
        self._offered = {int(i) for i in state["offered"].tolist()}


def group_of(sample) -> str:
    """Memory group of a training image: the reals, or its generator's fakes."""
    return REAL_GROUP if int(sample.label) == 0 else f"fake:{sample.generator}"


def draw_memory(seed: int, k: int, batch: int, n_new: int, ratio: float, n_images: int, factor: int,
                counts: Sequence[int] | np.ndarray | None = None) -> list[int]:
    """Memory items appended to global batch ``batch`` of window ``k``: ``round(ratio * n_new)`` images,
    without replacement when the memory has that many, each as a random one of its ``factor`` copies
    (index = image slot * factor + copy). ``counts``: items per memory sample when they differ (a video's segments
    or frames; indices then run sample after sample, and samples without items are never drawn)."""
    m = int(round(ratio * n_new))
    if m <= 0 or n_images == 0:
        return []
    rng = np.random.default_rng([_DRAW_DOMAIN, int(seed), int(k), int(batch)])
    if counts is None or (len(set(np.asarray(counts).tolist())) == 1 and int(counts[0]) == factor):
        slots = rng.choice(n_images, size=m, replace=m > n_images)
        copies = rng.integers(0, factor, size=m)
        return (slots * factor + copies).tolist()
    counts = np.asarray(counts, dtype=np.int64)
    eligible = np.flatnonzero(counts)
    if eligible.size == 0:
        return []
    slots = eligible[rng.choice(eligible.size, size=m, replace=m > eligible.size)]
    copies = rng.integers(0, counts[slots])
    starts = np.cumsum(counts) - counts
    return (starts[slots] + copies).tolist()


class Replay(Strategy):
    """Experience replay from a fixed-size memory, balanced over the reals and each generator's fakes."""

    DEFAULTS = BUILTINS["replay"].defaults

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        p = self.params
        if p["memory_size"] < 1:
            raise StrategyConfigError(f"cl_strategy.memory_size ({self.name or 'replay'}): must be >= 1, "
                                      f"got {p['memory_size']}")
        if p["ratio"] <= 0:
            raise StrategyConfigError(f"cl_strategy.ratio: memory images per new image in a batch must be > 0, "
                                      f"got {p['ratio']}")
        if not 0.0 <= p["real_share"] <= 1.0:
            raise StrategyConfigError(f"cl_strategy.real_share must be in [0, 1], got {p['real_share']}")
        self.memory: GroupReservoir | None = None
        self.window_ids: list[int] = []  # the memory as this window replays it
        self.window_counts: np.ndarray = np.zeros(0, np.int64)  # items of each of them in the replayed dataset
        self.entered: list[int] = []  # the images that entered the memory after the last window

    def _memory(self, window: WindowContext) -> GroupReservoir:
        if self.memory is None:
            self.memory = GroupReservoir(self.params["memory_size"], window.seed, self.params["real_share"])
        return self.memory

    def training_batches(self, window: WindowContext) -> BatchExtension | None:
        memory = self._memory(window)
        self.window_ids = memory.ids
        if not self.window_ids:
            return None
        n, factor, ratio, seed, k = len(self.window_ids), window.factor, self.params["ratio"], window.seed, window.k
        window.say(f"replay: {n} memory images ({len(memory.groups)} groups), {ratio:g} per new image in a batch")
        ds, counts = window.items(self.window_ids)
        self.window_counts = counts
        return BatchExtension(ds, lambda i, n_new: draw_memory(seed, k, i, n_new, ratio, n, factor, counts))

    def after_training(self, window: WindowContext) -> None:
        memory = self._memory(window)
        ids = list(window.sample_ids)
        self.entered = memory.offer(ids, [group_of(window.samples[i]) for i in ids])

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict()} if self.memory is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "memory" in state:
            self.memory = GroupReservoir(0, 0)
            self.memory.load_state_dict(state["memory"])


class DERPlusPlus(Replay):
    """Dark Experience Replay++: replay with the logits stored when an image entered the memory."""

    DEFAULTS = BUILTINS["der++"].defaults

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self.stored: dict[int, torch.Tensor] = {}  # sample id -> logits of its items (an image's copies)
        self._window_logits: torch.Tensor | None = None

    def training_batches(self, window: WindowContext) -> BatchExtension | None:
        if getattr(getattr(window.detector, "meta", None), "has_localization", False):
            raise StrategyConfigError(f"der++ replaces the plain loss by image-level terms and would drop the pixel "
                                      f"loss of {window.detector.meta.name}; use replay, ewc, mas or lwf with "
                                      "localization detectors")
        if hasattr(window.detector, "training_loss"):
            raise StrategyConfigError(f"der++ replaces the plain loss by BCE terms and would drop the own training "
                                      f"loss of {window.detector.meta.name}; use replay, ewc, mas or lwf with it")
        ext = super().training_batches(window)
        if ext is not None:
            stored = [self.stored[i] for i in self.window_ids]
            got = [len(t) for t in stored]
            if got != self.window_counts.tolist():
                raise RuntimeError(f"der++: the memory's stored logits cover {sum(got)} items, the memory's dataset "
                                   f"has {int(self.window_counts.sum())}; its state is not this run's")
            self._window_logits = torch.cat(stored)
        return ext

    def training_loss(self, step: TrainStep) -> dict[str, torch.Tensor]:
        if self._window_logits is None:
            return {}
        mem = step.from_memory
        bce = F.binary_cross_entropy_with_logits(step.logits, step.y.float(), reduction="none")
        stored = self._window_logits.to(step.logits.device)[step.memory_index.clamp(min=0)]
        new = ~mem
        weighted = bce if step.weights is None else bce * step.weights  # the window's class weights: new rows only
        return {
            "base": step.mean(weighted, new),
            "der_logits": self.params["alpha"] * step.mean((step.logits - stored) ** 2, mem),
            "der_labels": self.params["beta"] * step.mean(bce, mem),
        }

    @torch.no_grad()
    def after_training(self, window: WindowContext) -> None:
        super().after_training(window)
        kept = set(self.memory.ids)
        self.stored = {i: v for i, v in self.stored.items() if i in kept}
        if not self.entered:
            return
        ds, counts = window.items(self.entered)  # every item of each entering sample, sample after sample
        out = []
        with window.evaluating():
            for batch in window.batches(ds):
                out.append(window.logits(batch[0]).float().cpu())
        logits = torch.cat(out).split(counts.tolist())
        for i, row in zip(self.entered, logits, strict=True):
            self.stored[i] = row.clone()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.stored:
            ids = sorted(self.stored)
            state["stored_ids"] = torch.tensor(ids, dtype=torch.int64)
            state["stored_counts"] = torch.tensor([len(self.stored[i]) for i in ids], dtype=torch.int64)
            state["stored_logits"] = torch.cat([self.stored[i] for i in ids])
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.stored = {}
        if "stored_ids" in state:
            rows = state["stored_logits"].split(state["stored_counts"].tolist())
            self.stored = {int(i): row.clone() for i, row in zip(state["stored_ids"].tolist(), rows, strict=True)}
