"""Test datasets: other sources scored beside the benchmark, after every window or after the last one.

    test_datasets:
      - {name: synthetic-seed1, dataset: "synthetic:default@1"}
      - {name: my-photos, dataset: "folder:/data/photos", degradation: {profile: fixed}}
    test_every: window            # or: last

Each entry's source (any kind: `synthetic`, `folder:`, `csv:`, `aigenbench:`, `landmarks:`, `videos:`) is read
with labels only: generators need no release date and every row is kept (`benchmark.sources.scan_source`,
`need_timeline=False`). Its evaluation split (a release's validation split, a folder's or CSV's `eval` rows) is
scored in id order under the run's degradation profile, or the entry's own `degradation` (`profile`, `base_seed`),
seeded by position like the benchmark's eval images. Rows the data check finds bad are refused like the
benchmark's own, or left out (and listed in run.json) with `data.skip_bad_images`.

A test dataset may overlap the benchmark's own data: images with the same bytes (sha256) as a benchmark image are
reported per row (`overlap_with_benchmark`: train, val, eval) and counted in run.json and the log, never refused.

After window k the scores go to `window_<k>/test_<name>/predictions.npz` (`protocols.predictions
.write_test_predictions`), with the threshold window k chose on its validation split. They are written before the
window's `done` marker, so a resumed run scores them again where a kill interrupted it; and at the start of every
run, a finished window whose test predictions are missing (a test dataset added to the config of a finished run:
the keys are operational) is scored from its checkpoint.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.run_dir import predictions_path
from protocols.config_model import ConfigLike, RunConfig, run_config, thawed
from protocols.window_hooks import WindowHook, WindowState

DIR_PREFIX = "test_"
from protocols.test_dataset_specs import (  # noqa: E402, F401  (re-exported: the specs live in a leaf module)
    ENTRY_KEYS,
    TestDatasetSpec,
    parse_test_datasets,
    test_datasets_problem,
)


def test_dir(window_dir: Path, name: str) -> Path:
    return Path(window_dir) / f"{DIR_PREFIX}{name}"


def due(cfg: ConfigLike, k: int, n_steps: int) -> bool:
    """Whether test datasets are scored after window k (`test_every`)."""
    return run_config(cfg).test_every == "window" or k == n_steps - 1


@dataclass
class _Loaded:
    spec: TestDatasetSpec
    manifest: object
    samples: list
    overlap: np.ndarray  # per row: "", "train", "eval", "train+eval", ...
    skipped: list = field(default_factory=list)
    scoring: object = None  # the ScoringSet, built on first use


class RunTestDatasets:
    """The run's test datasets: loaded and checked once, scored after the windows that are due."""

    def __init__(self, cfg: ConfigLike, bench, detector, cache_dir: Path, progress: bool,
                 say: Callable[[str], None]):
        self.cfg: RunConfig = run_config(cfg)
        self.bench, self.detector, self.cache_dir = bench, detector, Path(cache_dir)
        self.progress, self.say = progress, say
        self.specs = parse_test_datasets(thawed(self.cfg.test_datasets))
        self._loaded: dict[str, _Loaded] = {}

    def __bool__(self) -> bool:
        return bool(self.specs)

    def _profile(self, spec: TestDatasetSpec) -> tuple[str, int]:
        deg = self.cfg.degradation
        return (spec.profile or deg.spec, int(spec.base_seed if spec.base_seed is not None else deg.base_seed))

    def load(self) -> None:
        """Read, check and compare every test source with the benchmark's data (once per run)."""
        for spec in self.specs:
            if spec.name not in self._loaded:
                self._loaded[spec.name] = self._load(spec)

    def _load(self, spec: TestDatasetSpec) -> _Loaded:
        from benchmark.sources import SourceError, scan_source

        scan = scan_source(spec.dataset, self.cache_dir, progress=self.progress, need_timeline=False)
        for note in scan.notes:
            print(f"genshift: test dataset {spec.name}: {note}", file=sys.stderr)
        bad = [p for p in scan.errors if p.split in ("eval", "")]
        if bad:
            listed = "\n  ".join(p.line() for p in bad[:20])
            raise SourceError(f"test dataset {spec.name} ({spec.dataset}): {len(bad)} bad record(s):\n  {listed}")
        m = scan.manifest
        samples = m.split("eval")
        if not samples:
            raise SourceError(f"test dataset {spec.name} ({spec.dataset}) has no evaluation rows (a folder's eval/ "
                              "or validation/, a CSV's eval rows, a release's validation split)")
        samples, skipped = self._checked(spec, m, samples)
        overlap = self._overlap(samples)
        n_over = int(np.count_nonzero(overlap != ""))
        labels = [s.label for s in samples]
        self.say(f"test dataset {spec.name}: {len(samples)} eval rows ({labels.count(0)} real, {labels.count(1)} fake)"
                 + (f"; {n_over} share their bytes with the benchmark's data (reported, kept)" if n_over else ""))
        return _Loaded(spec, m, samples, overlap, skipped)

    def _checked(self, spec: TestDatasetSpec, m, samples: list) -> tuple[list, list]:
        """The eval rows without those the data check refuses (with data.skip_bad_images), or an error."""
        dc = self.cfg.data
        if not dc.check:
            return samples, []
        from benchmark.datacheck import check_source
        from benchmark.sources import SourceError
        from protocols.sequence_inputs import sequence_check_args

        report = check_source(m, self.cache_dir, min_side=dc.min_side, workers=1, progress=self.progress,
                              **sequence_check_args(self.cfg, m))
        bad = [p for p in report.errors if p.split == "eval" and p.id is not None]
        if not bad:
            return samples, []
        if not dc.skip_bad_images:
            listed = "\n  ".join(p.line() for p in bad[:20])
            raise SourceError(f"test dataset {spec.name} ({spec.dataset}) fails the data check on {len(bad)} eval "
                              f"row(s):\n  {listed}\nfix them, or re-run with --set data.skip_bad_images=true to leave "
                              "them out (listed in run.json)")
        drop = {p.id for p in bad}
        return [s for s in samples if s.id not in drop], sorted(drop)

    def _overlap(self, samples: list) -> np.ndarray:
        where: dict[str, set[str]] = {}
        for s in self.bench.manifest.samples:
            if s.sha256:
                where.setdefault(s.sha256, set()).add(s.split)
        return np.asarray(["+".join(sorted(where.get(s.sha256, ()))) if s.sha256 else "" for s in samples], dtype=str)

    def describe(self) -> list[dict]:
        """run.json's `test_datasets` record."""
        out = []
        for spec in self.specs:
            d = {"name": spec.name, "dataset": spec.dataset,
                 "degradation": dict(zip(("profile", "base_seed"), self._profile(spec), strict=True))}
            loaded = self._loaded.get(spec.name)
            if loaded is not None:
                counts = {v: int(n) for v, n in zip(*np.unique(loaded.overlap, return_counts=True), strict=True)}
                d |= {"manifest_checksum": loaded.manifest.checksum, "rows": len(loaded.samples),
                      "overlap_with_benchmark": {k or "none": n for k, n in counts.items()},
                      "skipped_images": loaded.skipped}
            out.append(d)
        return out

    def missing(self, window_dir: Path) -> list[TestDatasetSpec]:
        """The specs whose predictions window_dir lacks."""
        return [s for s in self.specs if not predictions_path(test_dir(window_dir, s.name)).is_file()]

    def score(self, k: int, window_dir: Path, threshold: dict[str, np.ndarray], ctx, device, only=None,
              written: Callable[[int], None] | None = None) -> dict:
        """Score the test datasets (all, or `only`) with the detector's current weights (window k's) and write
        their predictions; returns {name: {auroc, n}} for metrics.json. ``written(i)``: called after the i-th
        dataset's predictions are written (the window hooks' `file_written`)."""
        from leaderboard.metrics import roc_auc, undefined_reason
        from protocols.predictions import RunIdentity, ScoredRows, TestDatasetRows, write_test_predictions
        from protocols.scoring_sets import build_scoring_set, score_in_process

        self.load()
        inputs = self.bench.inputs
        out = {}
        for i, spec in enumerate(only if only is not None else self.specs):
            loaded = self._loaded[spec.name]
            profile, base_seed = self._profile(spec)
            if loaded.scoring is None:
                loaded.scoring = build_scoring_set(f"test dataset {spec.name}", self.cfg, self.detector, inputs,
                                                   loaded.manifest, loaded.samples, self.cache_dir, profile,
                                                   base_seed, self.progress)
            ss = loaded.scoring
            logits = score_in_process(self.detector, ss, inputs.train_cfg, inputs.eval_precision, device,
                                      self.cfg.eval.batch_size, self.progress,
                                      f"test dataset {spec.name} after window {k + 1}")
            scores, row_logits, extra = ss.rows(logits)
            scored = {s.id for s in ss.samples}  # sequence/frame rows without a segment or frame are left out
            keep = [j for j, s in enumerate(loaded.samples) if s.id in scored]
            path = predictions_path(test_dir(window_dir, spec.name))
            path.parent.mkdir(parents=True, exist_ok=True)
            rows = TestDatasetRows(spec.name, spec.dataset, loaded.manifest.checksum, loaded.manifest.root,
                                   ss.samples, loaded.overlap[keep], profile, base_seed)
            run = RunIdentity(self.bench.manifest.checksum, str(self.bench.benchmark_type), ctx.run_identity,
                              ctx.config_hash)
            write_test_predictions(path, run, rows, k, ScoredRows(row_logits, scores, extra=extra), threshold)
            y = ss.labels
            why = undefined_reason(y)
            out[spec.name] = {"n": int(y.size), "auroc": float("nan") if why else roc_auc(y, scores)}
            if written is not None:
                written(i + 1)
        return out


class ScoreTestDatasets(WindowHook):
    """The window hook that scores the test datasets after window k when due (`test_every`): their predictions
    are written before the window's metrics.json, whose `test_datasets` entry it returns."""

    def __init__(self, tests: RunTestDatasets, run, device):
        self.tests, self.run, self.device = tests, run, device  # run: the engine's RunContext (run identity)

    def after_scoring(self, w: WindowState) -> dict:
        if not due(self.tests.cfg, w.k, w.n_windows):
            return {}
        threshold = {key: v for key, v in w.held_out.items() if key.startswith("threshold")}
        out = self.tests.score(w.k, w.wdir, threshold, self.run, self.device,
                               written=lambda i: w.notify("test_dataset", i))
        w.say(f"window {w.k + 1}/{w.n_windows} test datasets: " + ", ".join(
            f"{name} AUROC {v['auroc']:.3f}" for name, v in out.items()))
        return {"test_datasets": out}


def read_threshold(window_dir: Path) -> dict[str, np.ndarray]:
    """The threshold a finished window recorded in its predictions.npz (NaN with a reason if none)."""
    from common import predictions_file

    keys = ("threshold", "threshold_rule", "threshold_source", "threshold_reason")
    try:
        arrays = predictions_file.read(predictions_path(window_dir))
    except (OSError, ValueError):
        arrays = {}
    if "threshold" in arrays:
        return {k: arrays[k] for k in keys if k in arrays}
    return {"threshold": np.float64("nan"), "threshold_rule": np.array(""), "threshold_source": np.array("none"),
            "threshold_reason": np.array("the window's predictions record no threshold")}
