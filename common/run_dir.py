"""The run-directory layout (docs/design.md, runs on disk) and its `run.json`: the names of its files, where a
window's files lie, the `done` marker, and the one read and write of run.json. The engine writes through it
(`protocols.rundir` adds the lock and the config checks), the leaderboard and the tools read through it.

    runs/<experiment>/
      run.json                 # the run's record (RUN_JSON)
      window_<k>/              # window_dir(run, k)
        predictions.npz        # common.predictions_file
        checkpoint.*           # detectors.checkpoint
        metrics.json           # online metrics of the window
        done                   # DONE, written last: the window is complete
      window_init/predictions.npz   # the untrained model (INITIAL_DIR), no done marker
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_json, atomic_write_text
from common.predictions_file import FILE_NAME as PREDICTIONS
from common.predictions_file import SCHEMA_VERSION

RUN_JSON = "run.json"
WINDOW_PREFIX = "window_"
INITIAL_DIR = "window_init"
DONE = "done"
LOCK = ".lock"
VERSION_KEY = "schema_version"  # run.json records the predictions schema its run writes


class RunJsonError(ValueError):
    """run.json is unreadable or not a JSON object; the message names the file."""


def window_dir(run: Path | str, k: int) -> Path:
    """`run/window_<k>`."""
    return Path(run) / f"{WINDOW_PREFIX}{k}"


def window_index(path: Path | str) -> int | None:
    """k of a `window_<k>` directory, None for any other name (`window_init` included)."""
    suffix = Path(path).name.removeprefix(WINDOW_PREFIX)
    return int(suffix) if Path(path).name.startswith(WINDOW_PREFIX) and suffix.isdigit() else None


def window_dirs(run: Path | str) -> list[Path]:
    """The run's `window_<k>` directories, by k (finished or not)."""
    found = [d for d in Path(run).iterdir() if d.is_dir() and window_index(d) is not None]
    return sorted(found, key=window_index)


def initial_dir(run: Path | str) -> Path:
    """Where the untrained model's predictions lie (no done marker: the rename of the npz is the commit)."""
    return Path(run) / INITIAL_DIR


def predictions_path(wdir: Path | str) -> Path:
    """A window's (or the untrained model's, or a test dataset's) predictions file."""
    return Path(wdir) / PREDICTIONS


def is_done(wdir: Path | str) -> bool:
    """Whether the window's `done` marker exists (it is written last)."""
    return (Path(wdir) / DONE).is_file()


def done_marker(wdir: Path | str) -> Path:
    return Path(wdir) / DONE


def mark_done(wdir: Path | str, text: str | None = None) -> None:
    """Write the window's `done` marker atomically (the time by default): the window is complete."""
    atomic_write_text(done_marker(wdir), (text if text is not None else
                                          dt.datetime.now().isoformat(timespec="seconds")) + "\n")


def run_json_path(run: Path | str) -> Path:
    return Path(run) / RUN_JSON


def has_run_json(run: Path | str) -> bool:
    return run_json_path(run).is_file()


def read_run_json(run: Path | str) -> dict[str, Any] | None:
    """The parsed run.json of `run` (None when there is none); unreadable or not an object: RunJsonError."""
    path = run_json_path(run)
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunJsonError(f"{path}: unreadable run.json ({e})") from e
    if not isinstance(doc, dict):
        raise RunJsonError(f"{path}: run.json must hold a JSON object, found {type(doc).__name__}")
    return doc


def write_run_json(run: Path | str, doc: dict[str, Any]) -> Path:
    """Write run.json atomically, stamped with the predictions schema version its windows are written in (unless
    the record names one already)."""
    path = run_json_path(run)
    atomic_write_json(path, doc if VERSION_KEY in doc else {**doc, VERSION_KEY: SCHEMA_VERSION})
    return path
