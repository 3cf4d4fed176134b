"""What a run sets up before its first window, import-light (neither torch nor Lightning at import): the dataset
and its benchmark (windows, training sets, eval plan), the data check, the detector, and the cache plan whose
budget is checked before any image is decoded — from the detector's declared (or remembered) description before
torch is even imported (protocols/detector_memo.py), then in full.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.eval_plan import EvalPlan, make_eval_plan
from benchmark.manifest import Manifest
from benchmark.sources import SourceError, load_source
from benchmark.timeline import generator_id_to_name, make_windows
from benchmark.windows_plan import BenchmarkType, training_sets
from protocols.config_model import ConfigLike, run_config

if TYPE_CHECKING:
    from protocols.run_inputs import RunInputs


@dataclass
class Benchmark:
    """Everything about the data that a run needs, derived once from the manifest and config."""

    manifest: Manifest
    windows: list[list[str]]
    gen_names: list[str]
    train_sets: list[list[int]]
    plan: EvalPlan
    benchmark_type: BenchmarkType
    inputs: RunInputs | None = None  # set by _run_locked: cached/streamed datasets and resolved speed settings
    validation: object | None = None  # benchmark.validation_split.ValidationSplit: held out of training, or `val`


def checked_manifest(manifest: Manifest, cfg: ConfigLike, cache_dir: Path, progress: bool) -> Manifest:
    """Refuse a dataset that fails `genshift data check`, or drop its bad images when told to.

    The check decodes every image once and is cached per manifest checksum. With `data.skip_bad_images`
    the listed images are left out; the skipped ids go into run.json and the manifest checksum changes.
    """
    rc = run_config(cfg)
    if not rc.data.check:
        return manifest
    from benchmark.datacheck import apply_skips, check_source, format_report
    from protocols.sequence_inputs import sequence_check_args

    report = check_source(manifest, cache_dir, min_side=rc.data.min_side,
                          workers=rc.train.num_workers or 1, progress=progress,
                          **sequence_check_args(rc, manifest))
    if report.ok:
        return manifest
    if not rc.data.skip_bad_images:
        raise SourceError(
            f"dataset {rc.dataset} fails the data check:\n{format_report(report)}\n"
            "fix the listed images, or re-run with --set data.skip_bad_images=true to leave them out "
            "(the skipped ids are recorded in run.json)"
        )
    return apply_skips(manifest, report)


def benchmark_of(manifest: Manifest, cfg: ConfigLike) -> Benchmark:
    """Windows, training sets and eval plan of a manifest under `cfg` (no image is read)."""
    b = run_config(cfg).benchmark
    windows = make_windows(manifest.timeline, b.generators_per_window)
    gen_names = generator_id_to_name(manifest.timeline)
    sets = training_sets(manifest.split("train"), windows, b.type, b.real_sampling_seed, b.replay_seed,
                         real_sampling=b.real_sampling.value)
    plan = make_eval_plan(manifest.split("eval"), gen_names, b.eval_balance_seed, b.eval_shuffle_seed,
                          b.eval_pairing_seed)
    sets, validation = split_validation(cfg, manifest, sets)  # held out of the training sets, or the source's val
    return Benchmark(manifest, windows, gen_names, sets, plan, b.type, validation=validation)


def split_validation(cfg: ConfigLike, manifest: Manifest, train_sets: list[list[int]]) -> tuple[list[list[int]], object]:
    """(training sets, validation split): carved out of the training sets when `train.validation` is set, else the
    source's own `val` split where it has one (training sets unchanged), else none."""
    from benchmark.validation_split import carve_validation, parse_validation, source_validation

    tc = run_config(cfg).train
    value = parse_validation(tc.validation)
    if value:
        return carve_validation(manifest.split("train"), train_sets, value, tc.validation_seed)
    return train_sets, source_validation(manifest, train_sets)


def prepare_benchmark(cfg: ConfigLike, progress: bool = True, manifest: Manifest | None = None) -> Benchmark:
    """Load the dataset (unless given, as loaded by `prepare_run`), check it (`data.check`) and derive the
    benchmark."""
    rc = run_config(cfg)
    cache_dir = rc.cache_path
    from protocols.selection import require_validation

    raw = manifest if manifest is not None else load_source(rc.dataset, cache_dir, progress=progress)
    bench = benchmark_of(checked_manifest(raw, rc, cache_dir, progress), rc)
    require_validation(rc, bench.validation is not None)  # before any run directory or input is made
    return bench


def seed_generators(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators as Lightning's seed_everything does (without importing it)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def create_run_detector(cfg: ConfigLike):
    """(detector, factory init kwargs): the run's detector, created right after seeding every generator."""
    from detectors import create_detector, init_seed_kwargs

    rc = run_config(cfg)
    seed_generators(rc.seed)
    kwargs = init_seed_kwargs(rc.detector, rc.seed)
    return create_detector(rc.detector, pretrained=rc.pretrained, **kwargs), kwargs


def uses_image_stores(meta, manifest: Manifest) -> bool:
    """Whether a run reads its inputs through the image stores (eval inputs, training copies, probe features):
    an image detector (`meta`: its DetectorMeta or description) on a dataset of images. Landmark sequences and
    frames sampled from videos are prepared by protocols/sequence_inputs.py and protocols/frame_inputs.py."""
    return getattr(meta, "input_kind", "image") == "image" and all(s.kind == "image" for s in manifest.samples)


@dataclass
class Prepared:
    """What `prepare_run` made before the run starts: the detector (and its init kwargs), the dataset as loaded
    (before the data check) and the cache plan that fitted."""

    detector: object
    detector_kwargs: dict
    manifest: Manifest
    plan: object


def prepare_run(cfg: ConfigLike, progress: bool = True, features: bool = True) -> Prepared:
    """Load the dataset, create the detector and check that the run's caches fit (CacheBudgetError if not): all
    before any image is decoded and before Lightning is imported. From the detector's declared metadata (every
    named built-in) or a remembered description the budget is checked before torch is imported too, so a run over
    its budget is refused within seconds."""
    from protocols.cache_plan import plan_caches, refuse_over_budget
    from protocols.detector_memo import check_declared, describe_detector, remember_meta

    rc = run_config(cfg)
    cache_dir = rc.cache_path
    manifest = load_source(rc.dataset, cache_dir, progress=progress)
    try:
        unchecked = benchmark_of(manifest, rc)
    except ValueError:  # e.g. rows the data check will drop unbalance the eval split: planned after the check
        unchecked = None
    described = describe_detector(rc, cache_dir)
    if described is not None and unchecked is not None and uses_image_stores(described.meta, manifest):
        refuse_over_budget(rc, unchecked, described, cache_dir, rc.world_size, features)
    detector, kwargs = create_run_detector(rc)
    check_declared(detector)
    remember_meta(rc, cache_dir, detector)
    if unchecked is None or not uses_image_stores(detector.meta, manifest):  # the video track: its own caches
        return Prepared(detector, kwargs, manifest, None)
    plan = plan_caches(rc, unchecked, detector, cache_dir, rc.world_size, features=features)
    return Prepared(detector, kwargs, manifest, plan)
