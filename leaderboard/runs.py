"""Reading experiments for the leaderboard: genshift run directories and AI-GenBench experiment folders."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leaderboard.continual import RunEvaluation, check_run, evaluate_run, load_window_npz
from leaderboard.crops import pipeline_of
from leaderboard.reference import (
    eval_set_digest,
    find_reference_file,
    is_reference_experiment,
    load_reference_window,
)

REFERENCE_PROTOCOL = "aigenbench-reference"


class LeaderboardError(ValueError):
    """Runs cannot be read or compared; the message names the run and what differs."""


@dataclass
class RunRecord:
    """One experiment: identity (run.json, or a stand-in for reference folders) and its evaluation."""

    path: Path
    info: dict
    windows: list[dict[str, np.ndarray]]
    evaluation: RunEvaluation
    kind: str  # "genshift" or "aigenbench-reference"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def pipeline(self) -> dict:
        """The input pipeline the run was scored with ({'pipeline', 'input', 'normalize', 'size'})."""
        if self.kind == REFERENCE_PROTOCOL:
            return {"pipeline": "reference", "input": "?", "normalize": "clip", "size": None}
        return pipeline_of(self.windows[0], self.info)

    @property
    def n_windows_done(self) -> int:
        return len(self.windows)

    @property
    def n_windows(self) -> int:
        return int(self.evaluation.auroc_matrix.shape[1])


def _window_index(d: Path) -> int | None:
    name = d.name
    if not name.startswith("window_") or not name[7:].isdigit():
        return None
    return int(name[7:])


def _contiguous(run: Path, ready) -> list[Path]:
    dirs = sorted((d for d in run.iterdir() if d.is_dir() and _window_index(d) is not None), key=_window_index)
    out = []
    for k, d in enumerate(dirs):
        if _window_index(d) != k:
            raise LeaderboardError(f"{run}: window directories are not contiguous (found {d.name} at k={k})")
        if not ready(d):
            break
        out.append(d)
    return out


def _read_genshift(run: Path) -> tuple[dict, list[dict[str, np.ndarray]]]:
    info_path = run / "run.json"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LeaderboardError(f"{info_path}: unreadable run.json ({e})") from e
    done = _contiguous(run, lambda d: (d / "done").is_file())
    if not done:
        raise LeaderboardError(f"{run}: no finished window (no window_<k>/done); nothing to rank")
    windows = []
    for d in done:
        arrays = load_window_npz(d / "predictions.npz")
        for key in ("manifest_checksum", "protocol_version"):
            if key in arrays and key in info and str(arrays[key]) != str(info[key]):
                raise LeaderboardError(
                    f"{d / 'predictions.npz'}: {key} {str(arrays[key])!r} differs from run.json's {info[key]!r}"
                )
        windows.append(arrays)
    return info, windows


def _read_reference(run: Path) -> tuple[dict, list[dict[str, np.ndarray]]]:
    dirs = _contiguous(run, lambda d: find_reference_file(d) is not None)
    windows = [load_reference_window(find_reference_file(d), k) for k, d in enumerate(dirs)]
    dropped = int(sum(int(w["n_unpaired_reals_dropped"]) for w in windows[:1]))
    info = {
        "protocol_version": REFERENCE_PROTOCOL,
        "manifest_checksum": eval_set_digest(windows[0]),
        "benchmark_type": "aigenbench",
        "detector": {"name": f"aigenbench:{run.name}", "mode": "?"},
        "config": {},
        "n_unpaired_reals_dropped": dropped,
    }
    return info, windows


def read_run(run: Path) -> RunRecord:
    """Load an experiment directory (genshift run or AI-GenBench experiment) and evaluate its windows."""
    run = Path(run)
    if not run.is_dir():
        raise LeaderboardError(f"{run}: not a directory (expected runs/<experiment> or experiment_<id>)")
    try:
        if (run / "run.json").is_file():
            kind = "genshift"
            info, windows = _read_genshift(run)
        elif is_reference_experiment(run):
            kind = "aigenbench-reference"
            info, windows = _read_reference(run)
        else:
            raise LeaderboardError(
                f"{run}: neither a genshift run (run.json) nor an AI-GenBench experiment "
                f"(window_0/predictions_validate_all.npz)"
            )
        check_run(windows)
        evaluation = evaluate_run(windows)
    except (ValueError, FileNotFoundError) as e:
        if isinstance(e, LeaderboardError):
            raise
        raise LeaderboardError(f"{run}: {e}") from e
    return RunRecord(run, info, windows, evaluation, kind)


def check_comparable(records: Sequence[RunRecord]) -> None:
    """Refuse to rank runs made on different manifests or protocol versions, naming each run's value."""
    problems = []
    for key in ("manifest_checksum", "protocol_version"):
        values = {str(r.path): r.info.get(key) for r in records}
        if len(set(values.values())) > 1:
            listing = "\n  ".join(f"{name}: {v}" for name, v in values.items())
            problems.append(f"runs differ in {key}:\n  {listing}")
    pipelines = {str(r.path): r.pipeline["pipeline"] for r in records}
    if len(set(pipelines.values())) > 1:
        listing = "\n  ".join(f"{name}: {v}" for name, v in pipelines.items())
        problems.append(f"runs differ in their input pipeline (eval.pipeline; a native and a reference-exact model "
                        f"input are different protocol variants):\n  {listing}")
    if problems:
        raise LeaderboardError(
            "these runs cannot be ranked together (they were not made on the same eval set and protocol):\n"
            + "\n".join(problems)
        )
    names = [r.name for r in records]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise LeaderboardError(f"several runs share the directory name(s) {dupes}; rename one to tell them apart")
