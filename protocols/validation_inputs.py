"""A run's validation split at work: the rows each window validates on, their scores with the window's final
weights, and the threshold chosen on them (carried to the evaluation split and the test datasets).

The split itself (which ids, per window) is `benchmark.validation_split`; `prepare_benchmark` carves it (or takes
the source's `val` split) and this module scores it. Image rows are degraded by the run's own profile (seed
`degradation.base_seed` + position in the validation store, so a validation image looks the same in every window)
and cached like eval inputs; sequence and frame rows are read the way the run's eval rows are.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from benchmark.validation_split import (
    ValidationSplit,
    validation_rows,
)
from common.atomic import atomic_write_text
from protocols.config_model import ConfigLike, RunConfig, run_config
from protocols.scoring_sets import ScoringSet, build_scoring_set, input_kind, score_in_process

IDS_FILE = "validation_ids.csv"


class _Rows:
    """Rows `rows` of an items dataset (one item per row), with positions renumbered from 0."""

    def __init__(self, items, rows: list[int]):
        self.items, self.rows = items, rows
        self.features_in = bool(getattr(items, "features_in", False))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        return self.items[self.rows[i]][0], i


class RunValidation:
    """The validation rows of every window of a run (None split: the run has no validation split)."""

    def __init__(self, cfg: ConfigLike, bench, detector, cache_dir: Path, progress: bool = False):
        self.cfg: RunConfig = run_config(cfg)
        self.bench, self.detector, self.cache_dir, self.progress = bench, detector, cache_dir, progress
        self.split: ValidationSplit | None = getattr(bench, "validation", None)
        self._union: ScoringSet | None = None
        self._sets: dict[int, ScoringSet] = {}

    @property
    def present(self) -> bool:
        return self.split is not None

    def describe(self) -> dict | None:
        """run.json's `validation` record (None: no validation split)."""
        if self.split is None:
            return None
        return self.split.describe() | {"ids_file": IDS_FILE,
                                        "degradation": {"profile": self.cfg.degradation.spec,
                                                        "base_seed": self.cfg.degradation.base_seed},
                                        "threshold_rule": self.cfg.eval.threshold}

    def write_ids(self, run_dir: Path) -> None:
        """The run directory's list of validation rows (one per id, the steps it validates)."""
        if self.split is None:
            return
        rows = validation_rows(self.split, self.bench.manifest)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["split", "id"])
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(Path(run_dir) / IDS_FILE, buf.getvalue())

    def _samples(self, ids) -> list:
        by_id = {s.id: s for s in self.bench.manifest.split(self.split.split)}
        return [by_id[int(i)] for i in ids]

    def window_set(self, k: int) -> ScoringSet | None:
        """The scoring set of window k's validation rows (None without a validation split)."""
        if self.split is None:
            return None
        if k in self._sets:
            return self._sets[k]
        ids = self.split.per_step[k]
        deg = self.cfg.degradation
        inputs = self.bench.inputs
        if input_kind(self.detector, self.bench.manifest) == "images":
            if self._union is None:
                all_ids = sorted({i for v in self.split.per_step for i in v})
                self._union = build_scoring_set("validation", self.cfg, self.detector, inputs, self.bench.manifest,
                                                self._samples(all_ids), self.cache_dir, deg.spec, deg.base_seed,
                                                self.progress)
            row = {s.id: r for r, s in enumerate(self._union.samples)}
            rows = [row[int(i)] for i in ids]
            ss = ScoringSet(f"validation of window {k}", [self._union.samples[r] for r in rows],
                            _Rows(self._union.items, rows), None, self._union.describe)
        else:
            ss = build_scoring_set(f"validation of window {k}", self.cfg, self.detector, inputs, self.bench.manifest,
                                   self._samples(ids), self.cache_dir, deg.spec, deg.base_seed, self.progress)
        self._sets = {k: ss}  # one window at a time
        return ss

    def branch_set(self, k: int):
        """LRNet's labelled segments of window k's validation videos (best_val_accuracy), or None."""
        if self.split is None or input_kind(self.detector, self.bench.manifest) != "sequences":
            return None
        from benchmark.sequence_store import load_sequences
        from protocols.sequence_inputs import SegmentDataset, sequence_profile

        samples = self._samples(self.split.per_step[k])
        seqs = load_sequences(self.bench.manifest, samples, self.cache_dir, self.progress)
        return SegmentDataset([seqs[(s.split, s.id)] for s in samples], [s.label for s in samples],
                              [s.id for s in samples], sequence_profile(self.cfg, self.detector), train=True)

    def window_arrays(self, k: int, device, batch_size: int) -> tuple[dict[str, np.ndarray], dict]:
        """(npz arrays, metrics.json summary) of window k's validation rows scored with its final weights, and the
        threshold its rule chooses on them (`threshold_arrays`)."""
        rule = self.cfg.eval.threshold
        ss = self.window_set(k)
        if ss is None:
            return threshold_arrays(rule, None, None), {"threshold": threshold_summary(rule, None, None)}
        inputs = self.bench.inputs
        logits = score_in_process(self.detector, ss, inputs.train_cfg, inputs.eval_precision, device, batch_size,
                                  label=f"validation of window {k + 1}")
        scores, _, _ = ss.rows(logits)
        keep = np.isfinite(scores)
        labels = ss.labels
        name_to_id = {n: i for i, n in enumerate(self.bench.gen_names)}
        arrays = {
            "validation_scores": scores[keep].astype(np.float32),
            "validation_labels": labels[keep].astype(np.int64),
            "validation_identifiers": ss.ids[keep].astype(np.int64),
            "validation_generator_ids": np.asarray([name_to_id.get(s.generator, -1) if s.label else 0
                                                    for s, ok in zip(ss.samples, keep, strict=True) if ok], np.int64),
            "validation_split": np.array(self.split.split),
            "validation_origin": np.array(self.split.origin),
        }
        arrays |= threshold_arrays(rule, arrays["validation_labels"], arrays["validation_scores"])
        from protocols.selection import validation_metrics

        summary = {"validation": validation_metrics(arrays["validation_scores"], arrays["validation_labels"]),
                   "threshold": threshold_summary(rule, arrays["validation_labels"], arrays["validation_scores"])}
        return arrays, summary


def threshold_arrays(rule: str, labels, scores) -> dict[str, np.ndarray]:
    """`threshold` (NaN when it cannot be chosen), `threshold_rule`, `threshold_source` (validation | fixed |
    none) and `threshold_reason` of a window: its rule applied to its validation rows."""
    t = threshold_summary(rule, labels, scores)
    return {"threshold": np.float64(t["value"]), "threshold_rule": np.array(rule),
            "threshold_source": np.array(t["source"]), "threshold_reason": np.array(t.get("reason", ""))}


def threshold_summary(rule: str, labels, scores) -> dict:
    from leaderboard.metrics import parse_threshold_rule, threshold_by_rule, undefined_reason

    kind, value = parse_threshold_rule(rule)
    if kind == "fixed":
        return {"rule": rule, "value": float(value), "source": "fixed"}
    if labels is None:
        return {"rule": rule, "value": float("nan"), "source": "none",
                "reason": f"no validation split to choose a {rule} threshold on (accuracy at 0.5 is reported beside)"}
    reason = undefined_reason(np.asarray(labels))
    if reason:
        return {"rule": rule, "value": float("nan"), "source": "none", "reason": f"validation rows: {reason}"}
    return {"rule": rule, "value": float(threshold_by_rule(labels, scores, rule)), "source": "validation"}
