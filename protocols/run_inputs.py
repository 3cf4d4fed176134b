"""What the engine feeds its windows: eval and training datasets from the caches (or streamed like the
reference when a cache is switched off), plus the precision and memory format resolved for this machine.

Which stores a run keeps is decided first, from their estimated sizes (protocols/cache_plan.py): eval inputs
(decoded + degraded eval pixels), training copies (decoded + augmented; cached, one window's at a time, or
streamed), a probe's frozen-backbone features of both. With every store off the run decodes, degrades/augments
and runs the backbone again in every window, like the reference. Every choice gives the same predictions.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmark.array_store import key_digest
from benchmark.eval_cache import build_or_load_eval_inputs, eval_cache_key, eval_jobs
from benchmark.images import crops_per_image
from benchmark.reference_eval_cache import build_or_load_reference_inputs, reference_eval_key
from benchmark.reference_train_augment import NAME as REFERENCE_AUGMENTATION
from benchmark.train_cache import build_or_load_train_inputs
from protocols.allocator import keep_large_allocations
from protocols.cache_plan import CachePlan, human_bytes, plan_caches
from protocols.cached_data import ArrayEval, ArrayTrainCopies, EvalStream
from protocols.config import ConfigError
from protocols.config_enums import EvalPipeline, RealSampling
from protocols.config_model import ConfigLike, RunConfig, cache_switches, run_config
from protocols.crop_data import (
    GroupedRows,
    NativeMultiCropStream,
    ReferenceEvalStore,
    ReferenceEvalStream,
    crop_rows,
    is_grouped,
)
from protocols.data import ReferenceTrainCopies, TrainCopies
from protocols.feature_cache import Extraction, cached_features
from protocols.format_inputs import prepare_format_inputs
from protocols.frame_inputs import prepare_frame_inputs
from protocols.pipeline import InputPipeline, resolve_pipeline
from protocols.sequence_inputs import prepare_sequence_inputs
from protocols.speed import resolve_precision, resolve_train_cfg, uses_cuda
from protocols.window_inputs import (  # noqa: F401  (re-exported: the engine and cache_build import them from here)
    RunInputs,
    features_in,
    loader_workers,
    stop_between_chunks,
)


def eval_pixels(cfg: ConfigLike, bench, pipe: InputPipeline, cache_dir: Path | None, cached: bool, workers: int,
                progress: bool, store_opts: dict | None = None) -> tuple[Dataset, dict]:
    """The eval dataset of the run's input pipeline (cached or streamed, as the cache plan decided) and its cache key
    for run.json (`cache_dir=None`: built in memory).

    Native single-crop: (uint8 3×S×S, position) items. Native five_crop and the reference pipeline: groups of
    crops per position (`protocols.crop_data`), the reference's as float32 tensors restored bit for bit. The native
    stores, the reference's included (benchmark/reference_eval_cache.py), are chunked stores (array_store.py).
    """
    m, ids = bench.manifest, bench.plan.sample_ids
    deg = run_config(cfg).degradation
    prof, base_seed = deg.spec, deg.base_seed
    args = (m, ids, prof, base_seed, pipe.size, pipe.input)
    if pipe.pipeline == "reference":
        if cached:
            store, ekey = build_or_load_reference_inputs(*args, cache_dir, workers=workers, progress=progress,
                                                         **(store_opts or {}))
            return ReferenceEvalStore(store), ekey
        ekey = reference_eval_key(*args)
        ekey = ekey | {"digest": key_digest(ekey), "path": None, "hit": False}
        stream = ReferenceEvalStream(eval_jobs(*args))
        if not pipe.multi_crop:  # one crop per position, known without computing it
            stream.offsets = np.arange(len(stream) + 1, dtype=np.int64)
        return stream, ekey
    n_crops = crops_per_image(pipe.input)
    if cached:
        arr, ekey = build_or_load_eval_inputs(*args, cache_dir, workers=workers, progress=progress,
                                              **(store_opts or {}))
        if n_crops > 1:  # the store's rows are the crops, a position's n_crops in order
            return GroupedRows(arr, np.arange(len(ids) + 1, dtype=np.int64) * n_crops), ekey
        return ArrayEval(arr), ekey
    ekey = eval_cache_key(*args)
    ekey = ekey | {"digest": key_digest(ekey), "path": None, "hit": False}
    jobs = eval_jobs(*args)
    return (NativeMultiCropStream(jobs, n_crops) if n_crops > 1 else EvalStream(jobs)), ekey


def prepare_run_inputs(cfg: ConfigLike, bench, detector, cache_dir: Path, progress: bool, say: Callable[[str], None],
                       world: int = 1, plan: CachePlan | None = None) -> RunInputs:
    """Build or load every cache this run uses and return the datasets the windows read."""
    cfg = run_config(cfg)
    inputs = _track_inputs(cfg, bench, detector, cache_dir, progress, say)
    if inputs is None:
        inputs = _image_inputs(cfg, bench, detector, cache_dir, progress, say,
                               plan or plan_caches(cfg, bench, detector, cache_dir, world))
    if cfg.benchmark.real_sampling is RealSampling.WEIGHTED:
        inputs.weighted = bench.manifest
    return inputs


def _track_inputs(cfg: RunConfig, bench, detector, cache_dir: Path, progress: bool,
                  say: Callable[[str], None]) -> RunInputs | None:
    """The inputs of the video track and of the format-only baseline (their own builders); None for images."""
    kind = getattr(detector.meta, "input_kind", "image")
    video = kind != "image" or any(s.kind != "image" for s in bench.manifest.samples)
    if video and cfg.eval.pipeline is EvalPipeline.REFERENCE:
        raise ConfigError("eval.pipeline: reference is AI-GenBench's model input for image datasets; this run reads "
                          "videos or landmark sequences (the video track's inputs are its own): use "
                          "eval.pipeline=native")
    if kind == "format":  # the format-only baseline: no pixels
        return prepare_format_inputs(cfg, bench, detector, say)
    if kind != "image":  # the video track: landmark segments
        return prepare_sequence_inputs(cfg, bench, detector, cache_dir, progress, say)
    if video:  # frames sampled from videos, image detector
        return prepare_frame_inputs(cfg, bench, detector, cache_dir, progress, say)
    return None


@dataclass
class _Build:
    """Where and how the stores are built: the cache directory, a progress bar, the log line, the stores' options
    (verification, chunk size, the stop check between chunks)."""

    cache_dir: Path
    progress: bool
    say: Callable[[str], None]
    store_opts: dict


@dataclass
class _Copies:
    """A run's training copies: the per-window dataset factory, its streamed twin, run.json's key, the release of
    a per-window store, and the images of every window (`union`)."""

    make: Callable[..., Dataset]
    streamed: Callable[..., Dataset]
    key: dict
    release: Callable[[], None]
    union: list[int]
    policy: str


def _image_inputs(cfg: RunConfig, bench, detector, cache_dir: Path, progress: bool, say: Callable[[str], None],
                  plan: CachePlan) -> RunInputs:
    """Image runs: eval pixels and training copies as the cache plan decided, then a probe's features of both."""
    sw = cache_switches(cfg)
    tc = resolve_train_cfg(cfg, detector)
    if tc["channels_last"]:
        detector.to(memory_format=torch.channels_last)
    eval_precision = resolve_precision(cfg.eval.precision, cfg, "eval.precision")
    pipe = resolve_pipeline(cfg, detector.meta)
    workers = max(1, int(tc["num_workers"]))
    store_opts = {"verify": sw["verify"], "chunk_bytes": int(float(sw["chunk_mb"]) * (1 << 20)),
                  "should_stop": stop_between_chunks}
    say(plan.summary())
    eval_px, ekey = eval_pixels(cfg, bench, pipe, cache_dir, plan.policy("eval_inputs") == "cached", workers,
                                progress, store_opts)
    ekey["cached"] = sw["eval_inputs"]
    build = _Build(cache_dir, progress, say, store_opts)
    copies = _training_copies(cfg, bench, detector.meta, tc, plan, build)
    tkey, factor = copies.key, int(tc["augmentation_factor"])
    caches = {"switches": sw, "plan": plan.to_dict(), "eval_inputs": ekey, "train_inputs": tkey,
              "runtime": {"malloc": keep_large_allocations(), "train_precision": tc["precision"],
                          "eval_precision": eval_precision,
                          "channels_last": tc["channels_last"]}}
    tdesc = {"cached": f"cache {tkey['digest']}", "per_window": "one window's store at a time",
             "stream": f"streamed by {int(tc['num_workers'])} worker(s)"}[copies.policy]
    crops = f" as {ekey['crops']} crops" if ekey.get("crops") is not None else ""
    say(f"inputs ready: eval {len(eval_px)}{crops} "
        f"({'cache ' + ekey['digest'] if sw['eval_inputs'] else 'streamed'}; {pipe.pipeline} pipeline, "
        f"{pipe.input}, {pipe.normalize} statistics), training copies of {len(copies.union)} images × {factor} "
        f"({tdesc}); precision train {tc['precision']}, eval {eval_precision}; channels-last {tc['channels_last']}")
    plain = RunInputs(eval_px, copies.make, tc, eval_precision, ekey, caches, copies.release, pipe)
    if "eval_features" not in plan.stores:
        skipped = plan.stores.get("probe_features")
        if skipped is not None and sw["probe_features"]:
            caches["probe_features_skipped"] = skipped.reason
            say(f"probe feature cache off: {skipped.reason}")
        return plain
    return _probe_feature_inputs(cfg, bench, detector, plain, copies, "train_features" in plan.stores, build)


def _training_copies(cfg: RunConfig, bench, meta, tc: dict, plan: CachePlan, build: _Build) -> _Copies:
    """The training copies as the plan decided: one cached store of every window's images, one window's store at a
    time, or streamed (always streamed for the reference's own augmentation, seeded by position)."""
    m, workers = bench.manifest, max(1, int(tc["num_workers"]))
    cache_dir, progress, store_opts = build.cache_dir, build.progress, build.store_opts
    factor, seed = int(tc["augmentation_factor"]), cfg.seed
    union = sorted({int(i) for ids in bench.train_sets for i in ids})
    targs = (factor, meta.input_size, seed, tc["augmentation"], meta.eval_resize)
    masks = bool(getattr(meta, "has_localization", False))  # training copies carry their aligned pixel targets
    reference_aug = tc["augmentation"] == REFERENCE_AUGMENTATION
    tpolicy = plan.policy("train_inputs")
    tspec = plan.stores["train_inputs"].spec
    tkey = tspec.key | {"digest": tspec.digest, "path": None, "hit": False}
    release: Callable[[], None] = lambda: None  # noqa: E731

    def streamed(ids: list[int], window: int = 0) -> Dataset:
        return TrainCopies(m, ids, factor, meta.input_size, seed, tc["augmentation"], meta.eval_resize, masks=masks)

    if reference_aug:
        if masks:
            raise ConfigError(f"train.augmentation {REFERENCE_AUGMENTATION} has no pixel-target variant; "
                              f"{meta.name} trains a localization head: choose light or baseline")
        aug_seed = cfg.train.augmentation_base_seed
        tkey = {"augmentation": REFERENCE_AUGMENTATION, "augmentation_base_seed": aug_seed, "digest": "streamed",
                "path": None, "hit": False, "not_cached": plan.stores["train_inputs"].reason}

        def train_px(ids: list[int], window: int = 0) -> Dataset:
            return ReferenceTrainCopies(m, ids, factor, meta.input_size, seed, window, aug_seed)
    elif tpolicy == "cached":
        tarr, rows, tkey = build_or_load_train_inputs(m, union, *targs, cache_dir, workers=workers,
                                                      progress=progress, with_masks=masks, **store_opts)

        def train_px(ids: list[int], window: int = 0) -> Dataset:
            return ArrayTrainCopies(tarr, rows, m, ids, factor, masks=masks)
    elif tpolicy == "per_window":
        held: dict = {}

        def release() -> None:
            path = held.pop("path", None)
            if path:
                shutil.rmtree(path, ignore_errors=True)

        def train_px(ids: list[int], window: int = 0) -> Dataset:
            warr, wrows, wkey = build_or_load_train_inputs(m, ids, *targs, cache_dir, workers=workers,
                                                           progress=progress, with_masks=masks, **store_opts)
            if held.get("path") not in (None, wkey["path"]):
                release()
            held["path"] = wkey["path"]
            held.setdefault("digests", []).append(wkey["digest"])
            return ArrayTrainCopies(warr, wrows, m, ids, factor, masks=masks)
    else:
        train_px = streamed
    tkey["cached"] = tpolicy == "cached" and not reference_aug
    tkey["policy"] = tpolicy
    return _Copies(train_px, streamed, tkey, release, union, tpolicy)


def _probe_feature_inputs(cfg: RunConfig, bench, detector, plain: RunInputs, copies: _Copies, train_features: bool,
                          build: _Build) -> RunInputs:
    """A probe's frozen-backbone features of the eval inputs and (unless the reference's augmentation streams new
    copies every window) of every training copy: windows then train and score the head only."""
    tc, caches, eval_px, ekey = plain.train_cfg, plain.describe, plain.eval_ds, plain.eval_key
    cache_dir, progress, say = build.cache_dir, build.progress, build.say
    factor = int(tc["augmentation_factor"])
    accelerator = str(cfg.accelerator)
    device = "cuda" if uses_cuda(cfg) else "cpu"
    bs = cfg.eval.batch_size
    fopts = {k: build.store_opts[k] for k in ("verify", "chunk_bytes", "should_stop")}
    erows = crop_rows(eval_px) if is_grouped(eval_px) else eval_px  # one feature row per crop
    efeat, fkey_e = cached_features(cache_dir, detector, erows, ekey["digest"],
                                    Extraction(tc, plain.eval_precision, accelerator, device, bs, progress,
                                               loader_workers(erows, tc)), **fopts)
    eval_feats = GroupedRows(efeat, eval_px.offsets, features_in=True) if is_grouped(eval_px) \
        else ArrayEval(efeat, features_in=True)
    if not train_features:  # aigenbench-baseline: copies change every window
        caches |= {"eval_features": fkey_e}
        say(f"probe features ready: eval {tuple(efeat.shape)} (cache {fkey_e['digest']}); training copies are "
            f"streamed ({REFERENCE_AUGMENTATION}), so windows run the frozen backbone on them")
        return RunInputs(eval_feats, copies.make, tc, plain.eval_precision, ekey, caches, copies.release, plain.pipeline)
    union = copies.union
    all_copies = copies.make(union) if copies.policy == "cached" else copies.streamed(union)
    tfeat, fkey_t = cached_features(cache_dir, detector, all_copies, copies.key["digest"],
                                    Extraction(tc, tc["precision"], accelerator, device, bs, progress,
                                               loader_workers(all_copies, tc)), **fopts)
    frows = {i: r * factor for r, i in enumerate(union)}

    def train_feats(ids: list[int], window: int = 0) -> Dataset:
        return ArrayTrainCopies(tfeat, frows, bench.manifest, ids, factor, features_in=True)

    caches |= {"eval_features": fkey_e, "train_features": fkey_t}
    say(f"probe features ready: eval {tuple(efeat.shape)} (cache {fkey_e['digest']}), training copies "
        f"{tuple(tfeat.shape)} (cache {fkey_t['digest']}, {human_bytes(fkey_t['bytes'])}); windows train the head only")
    return RunInputs(eval_feats, train_feats, tc, plain.eval_precision, ekey, caches, pipeline=plain.pipeline)
