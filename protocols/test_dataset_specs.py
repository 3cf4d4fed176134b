"""The `test_datasets` config entries as specs (protocols/test_datasets.py scores them): a leaf module, so config
validation (protocols/config_schema.py) checks the entries without importing the scoring side."""

from __future__ import annotations

from dataclasses import dataclass

from protocols.value_checks import DEGRADATION_PROFILES, dataset_problem, safe_name_problem

ENTRY_KEYS = ("name", "dataset", "degradation")


@dataclass(frozen=True)
class TestDatasetSpec:
    """One `test_datasets` entry; profile/base_seed None = the run's."""

    name: str
    dataset: str
    profile: str | None = None
    base_seed: int | None = None


def parse_test_datasets(value) -> list[TestDatasetSpec]:
    """The entries as specs; ValueError naming the entry and what is expected."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"expected a list of {{name: ..., dataset: ...}} entries, got {type(value).__name__}")
    out, names = [], set()
    for i, entry in enumerate(value):
        where = f"entry {i}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a mapping {{name: NAME, dataset: SPEC}}, got {entry!r}")
        unknown = sorted(set(map(str, entry)) - set(ENTRY_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; an entry has {', '.join(ENTRY_KEYS)}")
        name, spec = entry.get("name"), entry.get("dataset")
        if not isinstance(name, str) or safe_name_problem(name):
            raise ValueError(f"{where}: name {name!r}: {safe_name_problem(str(name)) or 'expected a string'}")
        if name in names:
            raise ValueError(f"{where}: name {name!r} is used twice")
        names.add(name)
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(f"{where} ({name}): dataset must be a source spec such as folder:/data/x")
        problem = dataset_problem(spec)
        if problem:
            raise ValueError(f"{where} ({name}): dataset {spec!r}: {problem}")
        deg = entry.get("degradation") or {}
        if not isinstance(deg, dict) or set(deg) - {"profile", "base_seed"}:
            raise ValueError(f"{where} ({name}): degradation must be a mapping with profile and/or base_seed")
        profile = deg.get("profile")
        if profile is not None and profile not in DEGRADATION_PROFILES:
            raise ValueError(f"{where} ({name}): degradation profile {profile!r}; expected one of "
                             f"{', '.join(DEGRADATION_PROFILES)}")
        seed = deg.get("base_seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31):
            raise ValueError(f"{where} ({name}): degradation base_seed must be an integer in [0, 2^31)")
        out.append(TestDatasetSpec(name, spec, profile, seed))
    return out


def test_datasets_problem(value) -> str | None:
    """For the config schema: what is wrong with `test_datasets` (None when fine)."""
    try:
        parse_test_datasets(value)
    except ValueError as e:
        return str(e)
    return None
