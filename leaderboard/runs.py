"""Reading experiments for the leaderboard: genshift run directories and AI-GenBench experiment folders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from common import run_dir as layout
from leaderboard import variants as V
from leaderboard.continual import RunEvaluation, check_run, evaluate_run, load_window_npz
from leaderboard.initial import initial_path, read_initial
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
    initial: dict[str, np.ndarray] | None = None  # the untrained model's arrays (window_init), if scored
    fields: dict[str, str] = field(default_factory=dict)  # variant fields by config name (leaderboard.variants)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_full(self) -> bool:
        """A `full` run: trained once on every window, the upper bound of the continual runs."""
        return self.fields.get("benchmark.type") == "full"

    @property
    def seed(self):
        return V.run_seed(self.info)

    @property
    def configuration(self) -> str:
        """Runs with equal keys are seeds of one configuration (`leaderboard.variants.configuration_key`)."""
        return V.configuration_key(self.info, self.fields, str(self.path))

    @property
    def n_windows_done(self) -> int:
        return len(self.windows)

    @property
    def n_windows(self) -> int:
        return int(self.evaluation.auroc_matrix.shape[1])


def _contiguous(run: Path, ready) -> list[Path]:
    out = []
    for k, d in enumerate(layout.window_dirs(run)):
        if layout.window_index(d) != k:
            raise LeaderboardError(f"{run}: window directories are not contiguous (found {d.name} at k={k})")
        if not ready(d):
            break
        out.append(d)
    return out


def _read_genshift(run: Path) -> tuple[dict, list[dict[str, np.ndarray]]]:
    try:
        info = layout.read_run_json(run)
    except layout.RunJsonError as e:
        raise LeaderboardError(str(e)) from e
    done = _contiguous(run, layout.is_done)
    if not done:
        raise LeaderboardError(f"{run}: no finished window (no window_<k>/done); nothing to rank")
    windows = []
    for d in done:
        path = layout.predictions_path(d)
        arrays = load_window_npz(path)
        for key in ("manifest_checksum", "protocol_version"):
            if key in arrays and key in info and str(arrays[key]) != str(info[key]):
                raise LeaderboardError(f"{path}: {key} {str(arrays[key])!r} differs from run.json's {info[key]!r}")
        check_window_identity(info, arrays, path)
        windows.append(arrays)
    return info, windows


def check_window_identity(info: dict, arrays: dict[str, np.ndarray], path: Path) -> None:
    """A run whose run.json names its run identity accepts only windows that carry the same one (a window copied
    from another run, even of the same data, is refused). Runs written before identities existed are not checked."""
    expected = info.get("run_identity")
    if expected is None:
        return
    found = str(arrays["run_identity"]) if "run_identity" in arrays else None
    if found != str(expected):
        what = "carries no run identity" if found is None else f"has run identity {found}"
        raise LeaderboardError(
            f"{path}: window of another run: it {what}, run.json says {expected} (config hash "
            f"{info.get('config_hash')}); re-run the window here (delete its 'done') or put the file back in its run"
        )
    if "config_hash" in arrays and "config_hash" in info and str(arrays["config_hash"]) != str(info["config_hash"]):
        raise LeaderboardError(f"{path}: config hash {str(arrays['config_hash'])} differs from run.json's "
                               f"{info['config_hash']}")


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
        "eval_pipeline": "reference",  # the reference's own model input (CLIP statistics)
        "eval_normalize": "clip",
        "n_unpaired_reals_dropped": dropped,
    }
    return info, windows


def read_run(run: Path) -> RunRecord:
    """Load an experiment directory (genshift run or AI-GenBench experiment) and evaluate its windows."""
    run = Path(run)
    if not run.is_dir():
        raise LeaderboardError(f"{run}: not a directory (expected runs/<experiment> or experiment_<id>)")
    try:
        if layout.has_run_json(run):
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
        fields = V.run_fields(info, windows[0])
        initial = read_initial(run) if kind == "genshift" else None
        missing = (f"{initial_path(run)} does not exist: the model was not scored before any training, so b_j "
                   f"and FWT are unknown")
        evaluation = evaluate_run(windows, initial=initial, initial_missing=missing)
        if fields["benchmark.type"] == "full":
            evaluation = _as_upper_bound(evaluation)
    except (ValueError, FileNotFoundError) as e:
        if isinstance(e, LeaderboardError):
            raise
        raise LeaderboardError(f"{run}: {e}") from e
    return RunRecord(run, info, windows, evaluation, kind, initial, fields)


FULL_REASON = ("benchmark type full: trained once on every window, the upper bound of the continual runs; its "
               "per-window AUROC row is in the upper-bound table")


def _as_upper_bound(evaluation: RunEvaluation) -> RunEvaluation:
    """A `full` run's evaluation: the continual aggregates do not apply (they say why); its table is kept."""
    summary = evaluation.summary.copy()
    summary["value"] = float("nan")
    summary["reason"] = pd.Series([FULL_REASON] * len(summary), dtype=object)
    return RunEvaluation(evaluation.table, evaluation.auroc_matrix, summary, evaluation.initial,
                         evaluation.initial_auroc)


def _listing(values: dict[str, str]) -> str:
    return "\n  ".join(f"{name}: {v}" for name, v in values.items())


def partition(records: Sequence[RunRecord], group_by: Sequence[str] = ()) -> list[tuple[str, list[RunRecord]]]:
    """Split runs into tables: one per value of the `group_by` fields (one table without them).

    Refuses (LeaderboardError naming every differing field and each run's value) when the runs of one table
    differ in an evaluation-defining field (`leaderboard.variants.EVAL_FIELDS`); the message says which fields
    `--group-by` would separate. Also refuses duplicate run directory names.
    """
    names = [r.name for r in records]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise LeaderboardError(f"several runs share the directory name(s) {dupes}; rename one to tell them apart")
    values = {name: {str(r.path): V.field_value(name, r.info, r.windows[0]) for r in records} for name in group_by}
    for name, by_run in values.items():
        if all(v == V.MISSING for v in by_run.values()):
            raise LeaderboardError(f"--group-by {name}: no run records this field (use a config name such as "
                                   f"degradation.profile, or one of {list(V.VARIANT_FIELDS)})")
    groups: dict[tuple[str, ...], list[RunRecord]] = {}
    for r in records:
        groups.setdefault(tuple(values[n][str(r.path)] for n in group_by), []).append(r)
    problems, differing = [], []
    for members in groups.values():
        for name in V.EVAL_FIELDS:
            if name in group_by:
                continue
            by_run = {str(r.path): r.fields[name] for r in members}
            if len(set(by_run.values())) > 1:
                differing.append(name)
                problems.append(f"runs differ in {name} (evaluation-defining):\n  {_listing(by_run)}")
        versions = {r.fields["protocol_version"] for r in members}
        if len(versions) > 1 and "protocol_version" not in group_by:
            # A protocol version changes with what a number means; name the recorded fields that differ with
            # it, so a variant difference is reported by field even when it also moved the protocol version.
            for name in (n for n in V.METHOD_FIELDS if n != "detector"):  # detectors differ by design
                by_run = {str(r.path): r.fields[name] for r in members}
                if len(set(by_run.values())) > 1:
                    problems.append(f"with the protocol version, runs also differ in {name} (method-side):\n  "
                                    f"{_listing(by_run)}")
    if problems:
        fields = list(dict.fromkeys(differing))
        raise LeaderboardError(
            "these runs cannot be ranked together (they were not made on the same eval set and protocol):\n"
            + "\n".join(problems)
            + f"\nrank them apart, one table per value, with --group-by {' '.join([*group_by, *fields])}"
        )
    out = []
    for key, members in sorted(groups.items()):
        out.append((", ".join(f"{n}={v}" for n, v in zip(group_by, key, strict=True)), members))
    return out


def check_comparable(records: Sequence[RunRecord]) -> None:
    """Refuse to rank runs made on different manifests, protocol versions or other evaluation-defining fields."""
    partition(records)
