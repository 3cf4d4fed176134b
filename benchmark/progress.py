"""The progress bar of long counted work (cache builds, scoring): description, bar, done/total, time left."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def counted_progress(enabled: bool) -> Progress:
    """A transient rich Progress (gone when the work is done); `enabled=False` draws nothing."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, disable=not enabled, transient=True)
