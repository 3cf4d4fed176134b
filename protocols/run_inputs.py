"""What the engine feeds its windows: eval and training datasets from the caches (or streamed like the
reference when a cache is switched off), plus the precision and memory format resolved for this machine.

Switches (config `cache.*`): `eval_inputs` (decoded + degraded eval pixels), `train_inputs` (decoded +
augmented training copies), `probe_features` (a probe's frozen-backbone features of both). With every switch
off the run decodes, degrades/augments and runs the backbone again in every window, like the reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmark.array_store import key_digest
from benchmark.eval_cache import build_or_load_eval_inputs, eval_cache_key, eval_jobs
from benchmark.images import crops_per_image
from benchmark.reference_eval_cache import build_or_load_reference_inputs, reference_eval_key
from benchmark.reference_train_augment import NAME as REFERENCE_AUGMENTATION
from benchmark.train_cache import build_or_load_train_inputs, train_cache_key
from protocols.allocator import keep_large_allocations
from protocols.cached_data import ArrayEval, ArrayTrainCopies, EvalStream
from protocols.config import ConfigError, cache_switches
from protocols.crop_data import (
    GroupedRows,
    NativeMultiCropStream,
    ReferenceEvalStore,
    ReferenceEvalStream,
    is_grouped,
)
from protocols.data import ReferenceTrainCopies, TrainCopies
from protocols.feature_cache import cached_features
from protocols.pipeline import InputPipeline, resolve_pipeline
from protocols.speed import resolve_precision, resolve_train_cfg, uses_cuda


@dataclass
class RunInputs:
    """Eval dataset (len() = number of eval items) and a per-window training dataset factory.

    Sequence runs (protocols/sequence_inputs.py) score segments: ``fuse(item logits)`` turns them into the
    per-video (scores, logits, extra npz arrays); ``callbacks(k, ids, sampler)`` adds Lightning callbacks to a
    window's training (best-validation selection).
    """

    eval_ds: Dataset
    make_train: Callable[..., Dataset]  # (ids, window) -> training copies
    train_cfg: dict
    eval_precision: str
    eval_key: dict
    describe: dict = field(default_factory=dict)
    pipeline: InputPipeline | None = None  # the resolved eval.pipeline / eval.input / eval.normalize
    fuse: Callable | None = None
    callbacks: Callable | None = None

    weighted: object | None = None  # the manifest when benchmark.real_sampling=weighted (class-weighted loss)

    def window_callbacks(self, k: int, ids: list[int], sampler) -> list:
        out = list(self.callbacks(k, ids, sampler)) if self.callbacks else []
        if self.weighted is not None:
            from benchmark.windows_plan import class_weights
            from protocols.module import ClassWeights

            by_id = {s.id: s.label for s in self.weighted.split("train")}
            out.append(ClassWeights(class_weights([by_id[int(i)] for i in ids])))
        return out

    def __len__(self) -> int:
        return len(self.eval_ds)

    def eval_dataset(self) -> Dataset:
        return self.eval_ds

    def train_dataset(self, ids: list[int], window: int = 0) -> Dataset:
        """Training copies of window `window`'s subset `ids` (in the subset's order)."""
        return self.make_train(ids, window)

    def workers(self, ds: Dataset) -> int:
        return loader_workers(ds, self.train_cfg)


def loader_workers(ds: Dataset, train_cfg: dict) -> int:
    """DataLoader workers: none for in-memory arrays (workers would only add copies), the configured number for
    datasets that decode images."""
    in_memory = (ArrayEval, ArrayTrainCopies, ReferenceEvalStore, GroupedRows)
    return 0 if isinstance(ds, in_memory) else int(train_cfg["num_workers"])


def eval_pixels(cfg: dict, bench, pipe: InputPipeline, cache_dir: Path, cached: bool, workers: int,
                progress: bool) -> tuple[Dataset, dict]:
    """The eval dataset of the run's input pipeline (cached or streamed) and its cache key for run.json.

    Native single-crop: (uint8 3×S×S, position) items. Native five_crop and the reference pipeline: groups of
    crops per position (`protocols.crop_data`), the reference's as float32 tensors restored bit for bit.
    """
    m, plan = bench.manifest, bench.plan
    prof, base_seed = cfg["degradation"]["profile"], cfg["degradation"]["base_seed"]
    args = (m, plan.sample_ids, prof, base_seed, pipe.size, pipe.input)
    if pipe.pipeline == "reference":
        if cached:
            store, ekey = build_or_load_reference_inputs(*args, cache_dir, workers=workers, progress=progress)
            return ReferenceEvalStore(store), ekey
        ekey = reference_eval_key(*args)
        ekey = ekey | {"digest": key_digest(ekey), "path": None, "hit": False}
        stream = ReferenceEvalStream(eval_jobs(*args))
        if not pipe.multi_crop:  # one crop per position, known without computing it
            stream.offsets = np.arange(len(stream) + 1, dtype=np.int64)
        return stream, ekey
    n_crops = crops_per_image(pipe.input)
    if cached:
        arr, ekey = build_or_load_eval_inputs(*args, cache_dir, workers=workers, progress=progress)
        if n_crops > 1:
            flat = arr.reshape(len(arr) * n_crops, *arr.shape[2:])
            return GroupedRows(flat, np.arange(len(arr) + 1, dtype=np.int64) * n_crops), ekey
        return ArrayEval(arr), ekey
    ekey = eval_cache_key(*args)
    ekey = ekey | {"digest": key_digest(ekey), "path": None, "hit": False}
    jobs = eval_jobs(*args)
    return (NativeMultiCropStream(jobs, n_crops) if n_crops > 1 else EvalStream(jobs)), ekey


def features_in(ds: Dataset) -> bool:
    """Whether a dataset yields probe features (the head alone runs) rather than pixels."""
    return bool(getattr(ds, "features_in", False))


def prepare_run_inputs(cfg: dict, bench, detector, cache_dir: Path, progress: bool, say: Callable[[str], None],
                       world: int = 1) -> RunInputs:
    """Build or load every cache this run uses and return the datasets the windows read."""
    inputs = _prepare(cfg, bench, detector, cache_dir, progress, say, world)
    if str(cfg["benchmark"].get("real_sampling") or "unique") == "weighted":
        inputs.weighted = bench.manifest
    return inputs


def _prepare(cfg: dict, bench, detector, cache_dir: Path, progress: bool, say: Callable[[str], None],
             world: int = 1) -> RunInputs:
    video = getattr(detector.meta, "input_kind", "image") != "image" or any(s.kind != "image"
                                                                             for s in bench.manifest.samples)
    if video and (cfg.get("eval") or {}).get("pipeline") == "reference":
        raise ConfigError("eval.pipeline: reference is AI-GenBench's model input for image datasets; this run reads "
                          "videos or landmark sequences (the video track's inputs are its own): use "
                          "eval.pipeline=native")
    if getattr(detector.meta, "input_kind", "image") != "image":  # the video track: landmark segments
        from protocols.sequence_inputs import prepare_sequence_inputs

        return prepare_sequence_inputs(cfg, bench, detector, cache_dir, progress, say)
    if any(s.kind != "image" for s in bench.manifest.samples):  # frames sampled from videos, image detector
        from protocols.frame_inputs import prepare_frame_inputs

        return prepare_frame_inputs(cfg, bench, detector, cache_dir, progress, say)
    sw = cache_switches(cfg)
    meta = detector.meta
    tc = resolve_train_cfg(cfg, detector)
    if tc["channels_last"]:
        detector.to(memory_format=torch.channels_last)
    eval_precision = resolve_precision(cfg["eval"]["precision"], cfg, "eval.precision")
    pipe = resolve_pipeline(cfg, meta)
    workers = max(1, int(tc["num_workers"]))
    m = bench.manifest
    eval_px, ekey = eval_pixels(cfg, bench, pipe, cache_dir, sw["eval_inputs"], workers, progress)
    ekey["cached"] = sw["eval_inputs"]

    factor, seed = int(tc["augmentation_factor"]), int(cfg["seed"])
    union = sorted({int(i) for ids in bench.train_sets for i in ids})
    targs = (factor, meta.input_size, seed, tc["augmentation"], meta.eval_resize)
    masks = bool(getattr(meta, "has_localization", False))  # training copies carry their aligned pixel targets
    reference_aug = tc["augmentation"] == REFERENCE_AUGMENTATION
    if reference_aug:
        if masks:
            raise ConfigError(f"train.augmentation {REFERENCE_AUGMENTATION} has no pixel-target variant; "
                              f"{meta.name} trains a localization head: choose light or baseline")
        aug_seed = int(tc.get("augmentation_base_seed", 4321))
        tkey = {"augmentation": REFERENCE_AUGMENTATION, "augmentation_base_seed": aug_seed, "digest": "streamed",
                "path": None, "hit": False,
                "not_cached": "copies are seeded by position in each window's training subset, which changes "
                              "from window to window: they are streamed (decoded and augmented) in every window"}

        def train_px(ids: list[int], window: int = 0) -> Dataset:
            return ReferenceTrainCopies(m, ids, factor, meta.input_size, seed, window, aug_seed)
    elif sw["train_inputs"]:
        tarr, rows, tkey = build_or_load_train_inputs(m, union, *targs, cache_dir, workers=workers,
                                                      progress=progress, with_masks=masks)

        def train_px(ids: list[int], window: int = 0) -> Dataset:
            return ArrayTrainCopies(tarr, rows, m, ids, factor, masks=masks)
    else:
        tkey = train_cache_key(m, union, *targs, with_masks=masks)
        tkey = tkey | {"digest": key_digest(tkey), "path": None, "hit": False}

        def train_px(ids: list[int], window: int = 0) -> Dataset:
            return TrainCopies(m, ids, factor, meta.input_size, seed, tc["augmentation"], meta.eval_resize,
                               masks=masks)
    tkey["cached"] = sw["train_inputs"] and not reference_aug
    caches = {"switches": sw, "eval_inputs": ekey, "train_inputs": tkey,
              "runtime": {"malloc": keep_large_allocations(), "train_precision": tc["precision"],
                          "eval_precision": eval_precision,
                          "channels_last": tc["channels_last"]}}
    crops = f" as {ekey['crops']} crops" if ekey.get("crops") is not None else ""
    say(f"inputs ready: eval {len(eval_px)}{crops} "
        f"({'cache ' + ekey['digest'] if sw['eval_inputs'] else 'streamed'}; {pipe.pipeline} pipeline, "
        f"{pipe.input}, {pipe.normalize} statistics), training copies of {len(union)} images × {factor} "
        f"({'cache ' + tkey['digest'] if tkey['cached'] else 'streamed'}); precision train {tc['precision']}, "
        f"eval {eval_precision}; channels-last {tc['channels_last']}")
    plain = RunInputs(eval_px, train_px, tc, eval_precision, ekey, caches, pipe)
    if not (sw["probe_features"] and detector.is_probe):
        return plain
    if masks:
        caches["probe_features_skipped"] = ("localization detector: its decoder trains on the backbone's feature "
                                            "pyramid, which the probe feature cache (pooled features) does not hold")
        say(f"probe feature cache off: {caches['probe_features_skipped']}")
        return plain
    if world > 1:
        say("probe feature cache off: it is built by a single process (this run has several)")
        return plain
    if is_grouped(eval_px) and eval_px.offsets is None:
        caches["probe_features_skipped"] = ("five_crop of the reference pipeline with cache.eval_inputs off: the "
                                            "crops per image are known only once the images are degraded")
        say(f"probe feature cache off: {caches['probe_features_skipped']}")
        return plain

    accelerator = str(cfg.get("accelerator", "auto") or "auto")
    device = "cuda" if uses_cuda(cfg) else "cpu"
    bs = int(cfg["eval"]["batch_size"])
    efeat, fkey_e = cached_features(cache_dir, detector, eval_px, ekey["digest"], tc, eval_precision, accelerator,
                                    device, bs, progress, loader_workers(eval_px, tc))
    eval_feats = GroupedRows(efeat, eval_px.offsets, features_in=True) if is_grouped(eval_px) \
        else ArrayEval(efeat, features_in=True)
    if reference_aug:  # training copies change every window: the backbone runs on them in every window
        caches |= {"eval_features": fkey_e}
        say(f"probe features ready: eval {efeat.shape} (cache {fkey_e['digest']}); training copies are streamed "
            f"({REFERENCE_AUGMENTATION}), so windows run the frozen backbone on them")
        return RunInputs(eval_feats, train_px, tc, eval_precision, ekey, caches, pipe)
    all_copies = train_px(union)
    tfeat, fkey_t = cached_features(cache_dir, detector, all_copies, tkey["digest"], tc, tc["precision"],
                                    accelerator, device, bs, progress,
                                    loader_workers(all_copies, tc))
    frows = {i: r * factor for r, i in enumerate(union)}

    def train_feats(ids: list[int], window: int = 0) -> Dataset:
        return ArrayTrainCopies(tfeat, frows, m, ids, factor, features_in=True)

    caches |= {"eval_features": fkey_e, "train_features": fkey_t}
    say(f"probe features ready: eval {efeat.shape} (cache {fkey_e['digest']}), training copies {tfeat.shape} "
        f"(cache {fkey_t['digest']}); windows train the head only")
    return RunInputs(eval_feats, train_feats, tc, eval_precision, ekey, caches, pipe)
