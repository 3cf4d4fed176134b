"""Evaluation groups (DESIGN §3.5): boolean sample masks over one window's predictions arrays.

A group is "the fakes of a set of generators plus the reals paired to those generators". Named groups
after training window k of K select the generators of a range of windows:

    next       k+1        (undefined at k = K-1)
    current    k
    seen       0..k
    seen_next  0..k+1     (undefined at k = K-1: there is no window k+1; never replaced by `seen`)
    past       0..k-1     (undefined at k = 0)
    future     k+1..K-1   (undefined at k = K-1)
    all        0..K-1

plus `window:<j>` (the generators of window j; R[k, j] of the continual matrix) and
`generator:<name>` (one generator and its paired reals). An undefined group has mask None and a reason;
it is never silently replaced by another group.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

NAMED_GROUPS: tuple[str, ...] = ("next", "current", "seen", "seen_next", "past", "future", "all")
WINDOW_PREFIX = "window:"
GENERATOR_PREFIX = "generator:"
REQUIRED_KEYS: tuple[str, ...] = (
    "fused_scores",
    "fused_labels",
    "fused_generator_ids",
    "pairing",
    "generator_id_to_name",
    "windows_timeline",
)


@dataclass(frozen=True)
class Group:
    """A named sample selection; `mask` is None (and `reason` set) when the group is undefined."""

    name: str
    mask: np.ndarray | None
    reason: str | None
    generator_ids: np.ndarray  # generator ids whose fakes (and paired reals) the group holds


def _fail(source: str, message: str) -> ValueError:
    return ValueError(f"{source}: {message}")


def window_generator_ids(
    generator_id_to_name: np.ndarray, windows_timeline: np.ndarray, source: str = "arrays"
) -> list[np.ndarray]:
    """Generator ids of each window, from the (K, L) timeline of names padded with ''."""
    names = np.asarray(generator_id_to_name)
    timeline = np.asarray(windows_timeline)
    if names.ndim != 1 or names.dtype.kind != "U":
        raise _fail(
            source, f"generator_id_to_name must be a 1-D unicode array, got {names.dtype} {names.shape}"
        )
    if names.size == 0 or names[0] != "":
        raise _fail(source, "generator_id_to_name[0] must be '' (the real class)")
    if len(set(names.tolist())) != names.size:
        raise _fail(source, "generator_id_to_name has duplicate names")
    if timeline.ndim != 2 or timeline.dtype.kind != "U" or timeline.shape[0] == 0:
        raise _fail(
            source,
            f"windows_timeline must be a 2-D unicode array (K, L) with K >= 1, "
            f"got {timeline.dtype} {timeline.shape}",
        )
    name_to_id = {name: i for i, name in enumerate(names.tolist())}
    out: list[np.ndarray] = []
    seen: dict[str, int] = {}
    for w, row in enumerate(timeline.tolist()):
        members = [n for n in row if n != ""]
        if not members:
            raise _fail(source, f"windows_timeline row {w} has no generator")
        unknown = [n for n in members if n not in name_to_id]
        if unknown:
            raise _fail(
                source,
                f"windows_timeline row {w} names generators absent from generator_id_to_name: {unknown}",
            )
        for n in members:
            if n in seen:
                raise _fail(source, f"generator {n!r} appears in windows {seen[n]} and {w}")
            seen[n] = w
        out.append(np.array(sorted(name_to_id[n] for n in members), dtype=np.int64))
    return out


def validate_eval_arrays(arrays: Mapping[str, np.ndarray], source: str = "arrays") -> None:
    """Check keys, shapes and label/generator/pairing consistency; raise ValueError naming `source`."""
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise _fail(source, f"missing keys {missing} (required: {list(REQUIRED_KEYS)})")
    gen = np.asarray(arrays["fused_generator_ids"])
    if gen.ndim != 1 or gen.dtype.kind not in "iu":
        raise _fail(source, f"fused_generator_ids must be a 1-D integer array, got {gen.dtype} {gen.shape}")
    n = gen.shape[0]
    for key in ("fused_scores", "fused_labels", "pairing"):
        a = np.asarray(arrays[key])
        if a.shape != (n,):
            raise _fail(source, f"{key} has shape {a.shape}, expected ({n},) like fused_generator_ids")
    scores = np.asarray(arrays["fused_scores"])
    if scores.dtype.kind != "f":
        raise _fail(source, f"fused_scores must be a float array of P(fake), got {scores.dtype}")
    bad_score = ~np.isfinite(scores) | (scores < 0) | (scores > 1)
    if bad_score.any():
        i = int(np.flatnonzero(bad_score)[0])
        raise _fail(
            source,
            f"fused_scores must be finite probabilities in [0, 1]; {int(bad_score.sum())} are not, "
            f"first index {i}: {scores[i]!r}",
        )
    pairing = np.asarray(arrays["pairing"])
    if pairing.dtype.kind not in "iu":
        raise _fail(source, f"pairing must be an integer array, got {pairing.dtype}")
    n_gen = len(arrays["generator_id_to_name"]) - 1
    windows = window_generator_ids(arrays["generator_id_to_name"], arrays["windows_timeline"], source)
    if n and (gen.min() < 0 or gen.max() > n_gen):
        raise _fail(source, f"fused_generator_ids outside 0..{n_gen} (range {gen.min()}..{gen.max()})")
    labels = np.asarray(arrays["fused_labels"])
    wrong = labels != (gen != 0)
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        raise _fail(
            source,
            f"fused_labels disagree with fused_generator_ids at {int(wrong.sum())} sample(s), "
            f"first index {i}: label {labels[i]!r}, generator id {gen[i]} (label must be 1 "
            f"exactly for generator id != 0)",
        )
    real = gen == 0
    bad_real = real & ((pairing < 1) | (pairing > n_gen))
    if bad_real.any():
        i = int(np.flatnonzero(bad_real)[0])
        raise _fail(
            source,
            f"{int(bad_real.sum())} real sample(s) lack a valid paired generator id in 1..{n_gen}, "
            f"first index {i} has pairing {pairing[i]}",
        )
    bad_fake = ~real & (pairing != -1)
    if bad_fake.any():
        i = int(np.flatnonzero(bad_fake)[0])
        raise _fail(
            source, f"{int(bad_fake.sum())} fake sample(s) have pairing != -1, first index {i}: {pairing[i]}"
        )
    in_timeline = np.concatenate(windows)
    orphan = ~real & ~np.isin(gen, in_timeline)
    if orphan.any():
        ids = sorted(set(gen[orphan].tolist()))
        raise _fail(source, f"fakes of generator ids {ids} belong to no window of windows_timeline")


def group_mask(fused_generator_ids: np.ndarray, pairing: np.ndarray, generator_ids: np.ndarray) -> np.ndarray:
    """Boolean mask: fakes of `generator_ids` plus reals (id 0) paired to one of them."""
    gen = np.asarray(fused_generator_ids)
    ids = np.asarray(generator_ids)
    if (ids == 0).any():
        raise ValueError("generator_ids of a group must not contain 0 (the real class)")
    return np.isin(sample_owner(gen, pairing), ids, kind="table") if ids.size else np.zeros(gen.shape, dtype=bool)


def named_group_windows(name: str, k: int, n_windows: int) -> tuple[list[int] | None, str | None]:
    """Window indices of a named group after training window k of n_windows, or (None, reason)."""
    last = n_windows - 1
    if not 0 <= k <= last:
        raise ValueError(f"window k={k} out of range 0..{last}")
    if name == "next":
        return ([k + 1], None) if k < last else (None, f"no next window after the last window k={k}")
    if name == "current":
        return [k], None
    if name == "seen":
        return list(range(k + 1)), None
    if name == "seen_next":
        if k == last:
            return None, f"no window k+1 after the last window k={k} (seen_next is not replaced by seen)"
        return list(range(k + 2)), None
    if name == "past":
        return (list(range(k)), None) if k > 0 else (None, "no past window before window 0")
    if name == "future":
        return (
            (list(range(k + 1, n_windows)), None)
            if k < last
            else (None, f"no future window after the last window k={k}")
        )
    if name == "all":
        return list(range(n_windows)), None
    raise ValueError(f"unknown group {name!r}; named groups are {list(NAMED_GROUPS)}")


def _window_group(
    arrays: Mapping[str, np.ndarray],
    windows: list[np.ndarray],
    name: str,
    members: list[int] | None,
    reason: str | None,
) -> Group:
    if members is None:
        return Group(name, None, reason, np.zeros(0, dtype=np.int64))
    ids = np.concatenate([windows[w] for w in members])
    return Group(name, group_mask(arrays["fused_generator_ids"], arrays["pairing"], ids), None, ids)


def named_group(arrays: Mapping[str, np.ndarray], name: str, k: int) -> Group:
    """One named group (see module doc) after training window k."""
    windows = window_generator_ids(arrays["generator_id_to_name"], arrays["windows_timeline"])
    members, reason = named_group_windows(name, k, len(windows))
    return _window_group(arrays, windows, name, members, reason)


def window_group(arrays: Mapping[str, np.ndarray], j: int) -> Group:
    """The fakes of window j plus their paired reals (column j of the continual matrix)."""
    windows = window_generator_ids(arrays["generator_id_to_name"], arrays["windows_timeline"])
    if not 0 <= j < len(windows):
        raise ValueError(f"window j={j} out of range 0..{len(windows) - 1}")
    return _window_group(arrays, windows, f"{WINDOW_PREFIX}{j}", [j], None)


def generator_group(arrays: Mapping[str, np.ndarray], generator_name: str) -> Group:
    """The fakes of one generator plus the reals paired to it."""
    names = np.asarray(arrays["generator_id_to_name"]).tolist()
    if generator_name == "" or generator_name not in names:
        raise ValueError(f"unknown generator {generator_name!r}; known: {names[1:]}")
    ids = np.array([names.index(generator_name)], dtype=np.int64)
    mask = group_mask(arrays["fused_generator_ids"], arrays["pairing"], ids)
    return Group(f"{GENERATOR_PREFIX}{generator_name}", mask, None, ids)


def sample_owner(fused_generator_ids: np.ndarray, pairing: np.ndarray) -> np.ndarray:
    """The generator each sample belongs to: its own for a fake, the one it is paired to for a real."""
    gen = np.asarray(fused_generator_ids)
    return np.where(gen == 0, np.asarray(pairing), gen)


def group_specs(arrays: Mapping[str, np.ndarray], k: int) -> list[tuple[str, np.ndarray | None, str | None]]:
    """(name, generator ids or None, reason) of every group after window k, in `all_groups` order."""
    windows = window_generator_ids(arrays["generator_id_to_name"], arrays["windows_timeline"])
    out: list[tuple[str, np.ndarray | None, str | None]] = []
    for name in NAMED_GROUPS:
        members, reason = named_group_windows(name, k, len(windows))
        out.append((name, None if members is None else np.concatenate([windows[w] for w in members]), reason))
    out += [(f"{WINDOW_PREFIX}{j}", windows[j], None) for j in range(len(windows))]
    names = np.asarray(arrays["generator_id_to_name"]).tolist()
    out += [(f"{GENERATOR_PREFIX}{name}", np.array([g], dtype=np.int64), None) for g, name in enumerate(names)
            if g > 0]
    return out


def all_groups(arrays: Mapping[str, np.ndarray], k: int) -> list[Group]:
    """Every group after training window k: named groups, then window:<j>, then generator:<name>."""
    out = []
    for name, ids, reason in group_specs(arrays, k):
        if ids is None:
            out.append(Group(name, None, reason, np.zeros(0, dtype=np.int64)))
        else:
            out.append(Group(name, group_mask(arrays["fused_generator_ids"], arrays["pairing"], ids), None, ids))
    return out
