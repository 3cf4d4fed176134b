"""Generator timeline: release dates, generator ids and the windows they are cut into (DESIGN §3.3)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path

from benchmark import strict_yaml


class TimelineError(ValueError):
    """A timeline is missing dates or does not match the dataset's generators."""


def generator_id_to_name(generators: Sequence[str]) -> list[str]:
    """Id 0 is real (''), then generator names in Python's sorted order."""
    names = sorted(set(g for g in generators if g != ""))
    return [""] + names


def make_windows(timeline: Mapping[str, dt.date], generators_per_window: int = 4) -> list[list[str]]:
    """Sort generators by date (then name) and cut into windows of `generators_per_window`.

    As in the reference, a generator whose date equals the last one taken joins the same window, so a
    window may hold more than `generators_per_window`; the last window may hold fewer.
    """
    if generators_per_window < 1:
        raise TimelineError(f"generators_per_window must be >= 1, got {generators_per_window}")
    pending = sorted(timeline, key=lambda g: (timeline[g], g))
    windows: list[list[str]] = []
    while pending:
        window: list[str] = []
        for _ in range(generators_per_window):
            if not pending:
                break
            taken = pending.pop(0)
            window.append(taken)
            while pending and timeline[pending[0]] == timeline[taken]:
                window.append(pending.pop(0))
        windows.append(window)
    return windows


def parse_date(value: object, where: str) -> dt.date:
    """A date from YAML (already a date) or an ISO string; errors name `where`."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as e:
        raise TimelineError(f"{where}: {value!r} is not a date (expected a real date as YYYY-MM-DD)") from e


def load_timeline_yaml(path: Path | str) -> dict[str, dt.date]:
    """Read a timeline YAML: a mapping `generator name: YYYY-MM-DD`."""
    path = Path(path)
    doc = strict_yaml.read_file(path, "timeline", TimelineError)  # a generator listed twice is refused
    if isinstance(doc, dict) and "generators" in doc and isinstance(doc["generators"], dict):
        doc = doc["generators"]
    if not isinstance(doc, dict) or not doc:
        raise TimelineError(f"{path}: expected a mapping 'generator: YYYY-MM-DD', got {type(doc).__name__}")
    return {str(g): parse_date(d, f"{path}: generator {g!r}") for g, d in doc.items()}


def check_timeline_covers(timeline: Mapping[str, dt.date], generators: set[str], source: str) -> None:
    """Every fake generator of the dataset must have a date."""
    missing = sorted(generators - set(timeline))
    if missing:
        raise TimelineError(
            f"{source}: generators without a release date in the timeline: {missing}; "
            "add them to the timeline YAML (generator: YYYY-MM-DD)"
        )
