"""Which stores a run keeps on disk, how large they will be, and whether they fit: decided before any image is
decoded, recorded in run.json (`caches.plan`), refused in one line when they do not fit.

Stores: eval inputs (`cache.eval_inputs`), training copies (`cache.train_inputs`: cached | per_window | stream |
auto), a probe's features of both (`cache.probe_features`). Their sizes follow from the data and the detector's
input alone (benchmark/array_store.py: StoreSpec.estimate_bytes). The run's stores must fit `cache.max_bytes`
(all of them, including those already built) and the free disk of the cache directory (what is still to be
written). `auto` keeps the training copies cached when they fit, else builds one window's copies at a time when
that is smaller and fits, else streams them (decoded and augmented by DataLoader workers, the same copies).

With `eval.pipeline: reference` the eval inputs are the reference's own chunked store (`eval_reference/`: each
crop uint8 or float32, benchmark/reference_eval_cache.py), counted by its upper bound (every crop float32) until it
is complete, then by its size on disk. `train.augmentation: aigenbench-baseline` copies are
always streamed (a probe then caches its eval features only).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.array_store import META, REFERENCE_KIND, StoreSpec, make_spec, store_dir, store_progress
from protocols.config import ConfigError
from protocols.config_enums import EvalPipeline
from protocols.config_model import ConfigLike, cache_switches, run_config


class CacheBudgetError(ConfigError):
    """The stores a run needs do not fit its budget or the free disk; the message lists the choices."""


LABELS = {"eval_inputs": "eval inputs", "train_inputs": "training copies", "eval_features": "eval features",
          "train_features": "training-copy features", "probe_features": "probe features"}


def human_bytes(n: float | None) -> str:
    """1.08 GB, 17.3 GB, 512 MB (decimal units, as disks are sold and `df -H` shows)."""
    if n is None:
        return "unlimited"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


@dataclass
class StorePlan:
    """One store of the run: kept (`cached`, `per_window`) or not (`stream`, `off`), why, and its size."""

    name: str
    policy: str
    reason: str
    spec: StoreSpec | None = None
    bytes: int = 0  # on disk while the run holds it (per_window: the largest window's store)
    present: int = 0  # bytes of it already on disk (finished chunks)
    window_specs: list[StoreSpec] = field(default_factory=list)

    @property
    def stored(self) -> bool:
        return self.policy in ("cached", "per_window")

    def to_dict(self) -> dict:
        out = {"policy": self.policy, "reason": self.reason, "bytes": self.bytes, "present_bytes": self.present}
        if self.spec is not None:
            out["digest"] = self.spec.digest
            out["chunks"] = self.spec.n_chunks
        return out


@dataclass
class CachePlan:
    stores: dict[str, StorePlan]
    settings: dict
    cache_dir: Path
    free_bytes: int
    presence_known: bool = True  # False in the early budget check: what is already on disk is not looked up

    @property
    def total(self) -> int:
        return sum(s.bytes for s in self.stores.values() if s.stored)

    @property
    def to_write(self) -> int:
        return sum(max(0, s.bytes - s.present) for s in self.stores.values() if s.stored)

    def policy(self, name: str) -> str:
        s = self.stores.get(name)
        return s.policy if s is not None else "off"

    def to_dict(self) -> dict:
        return {"stores": {n: s.to_dict() for n, s in self.stores.items()}, "total_bytes": self.total,
                "to_write_bytes": self.to_write, "max_bytes": self.settings["max_bytes"],
                "free_bytes": self.free_bytes, "cache_dir": str(self.cache_dir)}

    def summary(self) -> str:
        parts = [f"{LABELS[n]} {s.policy}" + (f" {human_bytes(s.bytes)}" if s.stored else "")
                 for n, s in self.stores.items()]
        return (f"caches: {', '.join(parts)}; {human_bytes(self.total)} in all "
                f"({human_bytes(self.to_write)} to write, {human_bytes(self.free_bytes)} free, budget "
                f"{human_bytes(self.settings['max_bytes'])})")


def free_disk(path: Path) -> int:
    """Free bytes of the file system that holds `path` (or its nearest existing parent)."""
    p = Path(path).expanduser().resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return int(shutil.disk_usage(p).free)


def _present(cache_dir: Path, spec: StoreSpec) -> int:
    return store_progress(store_dir(cache_dir, spec.kind, spec.key), spec)[1]


def _complete(cache_dir: Path, spec: StoreSpec) -> bool:
    """Whether the store of `spec` is complete on disk (its meta.json, written last, is there)."""
    return (store_dir(cache_dir, spec.kind, spec.key) / META).is_file()


def eval_pipeline(cfg: ConfigLike) -> EvalPipeline:
    """`eval.pipeline` (native | reference; checked by protocols/pipeline.py before any work)."""
    return run_config(cfg).eval.pipeline


def eval_strategy(cfg: ConfigLike, meta) -> str:
    """The eval input (protocols.pipeline.resolve_pipeline's, without its imports): `eval.input`, else the
    reference pipeline's resize or the detector's own."""
    ec = run_config(cfg).eval
    if ec.input is not None:
        return ec.input.value
    return "resize" if ec.pipeline is EvalPipeline.REFERENCE else meta.eval_resize


def eval_crops(cfg: ConfigLike, meta) -> int:
    """Crops per eval image (benchmark.images.crops_per_image, without its imports): 5 for five_crop, else 1; for
    the reference pipeline an upper bound (its FiveCrop falls back to one centre crop on small images)."""
    return 5 if eval_strategy(cfg, meta) == "five_crop" else 1


def reference_training(cfg: ConfigLike) -> bool:
    """Training copies of `train.augmentation: aigenbench-baseline`: seeded by position in each window's subset,
    so they are streamed in every window, never stored (benchmark/reference_train_augment.py)."""
    return run_config(cfg).train.reference_augmentation


def pixel_specs(cfg: ConfigLike, bench, meta, chunk_bytes: int,
                keyed: bool = True) -> tuple[StoreSpec, StoreSpec, list[StoreSpec]]:
    """(eval store, training-copy store of the union of every window's images, one store per window).

    The eval store is the native pipeline's store (kind `eval`), or the reference pipeline's (kind
    `eval_reference`, sized by store_layouts.reference_upper_bound: as if every crop were float32).
    `keyed=False`: the layouts only, with empty keys (sizes need no key; keys need the image libraries)."""
    from benchmark.store_layouts import eval_fields, reference_eval_fields, train_fields

    rc = run_config(cfg)
    m = bench.manifest
    masks = bool(getattr(meta, "has_localization", False))
    factor, size = rc.train.augmentation_factor, int(meta.input_size)
    union = sorted({int(i) for ids in bench.train_sets for i in ids})
    n_eval, n_crops, strategy = len(bench.plan.sample_ids), eval_crops(rc, meta), eval_strategy(rc, meta)
    reference = rc.eval.pipeline is EvalPipeline.REFERENCE
    efields = reference_eval_fields(size, n_crops) if reference else eval_fields(size, n_crops)
    ekind = REFERENCE_KIND if reference else "eval"
    if not keyed:
        tfields = train_fields(size, factor, masks)
        return (make_spec(ekind, {}, n_eval, efields, chunk_bytes),
                make_spec("train_inputs", {}, len(union), tfields, chunk_bytes),
                [make_spec("train_inputs", {}, len(set(ids)), tfields, chunk_bytes) for ids in bench.train_sets])
    from benchmark.eval_cache import eval_store_spec
    from benchmark.train_cache import train_store_spec

    deg = rc.degradation
    if reference:
        from benchmark.reference_eval_cache import reference_store_spec

        espec = reference_store_spec(m, bench.plan.sample_ids, deg.spec, deg.base_seed, size, strategy, chunk_bytes)
    else:
        espec = eval_store_spec(m, bench.plan.sample_ids, deg.spec, deg.base_seed, size, strategy, chunk_bytes)
    targs = (factor, size, rc.seed, rc.train.augmentation.value, meta.eval_resize)
    tspec = train_store_spec(m, union, *targs, with_masks=masks, chunk_bytes=chunk_bytes)
    windows = [train_store_spec(m, ids, *targs, with_masks=masks, chunk_bytes=chunk_bytes)
               for ids in bench.train_sets]
    return espec, tspec, windows


def feature_specs(cfg: ConfigLike, detector, espec: StoreSpec, tspec: StoreSpec, chunk_bytes: int,
                  world: int = 1, keyed: bool = True) -> tuple[StoreSpec, StoreSpec] | str:
    """The probe's feature stores of the eval inputs and of every training copy, or why there are none.

    `keyed=False`: `detector` may be a description (`meta`, `is_probe`); the stores get empty keys."""
    from protocols.feature_keys import feature_store_spec

    rc = run_config(cfg)
    meta = detector.meta
    if not detector.is_probe:
        return "a tune detector trains its backbone: nothing to cache"
    if getattr(meta, "has_localization", False):
        return ("localization detector: its decoder trains on the backbone's feature pyramid, which the probe "
                "feature cache (pooled features) does not hold")
    if world > 1:
        return "built by a single process (this run has several)"
    if espec.kind == REFERENCE_KIND and eval_crops(rc, meta) > 1 and not rc.cache.eval_inputs:
        return ("five_crop of the reference pipeline with cache.eval_inputs off: the crops per image are known only "
                "once the images are degraded")
    bs = rc.eval.batch_size
    n_train = tspec.n_items * rc.train.augmentation_factor
    n_eval = espec.n_items * eval_crops(rc, meta)  # one feature row per crop (reference five_crop: at most)
    if not keyed:
        return (feature_store_spec({}, n_eval, meta.feature_dim, bs, chunk_bytes),
                feature_store_spec({}, n_train, meta.feature_dim, bs, chunk_bytes))
    from protocols.feature_keys import feature_key
    from protocols.speed import resolve_precision, resolve_train_cfg, uses_cuda

    tc = resolve_train_cfg(rc, detector)
    device = "cuda" if uses_cuda(rc) else "cpu"
    eprec = resolve_precision(rc.eval.precision, rc, "eval.precision")
    norm = tc.get("normalize")
    ek = feature_key(detector, espec.digest, eprec, bool(tc["channels_last"]), device, norm)
    tk = feature_key(detector, tspec.digest, tc["precision"], bool(tc["channels_last"]), device, norm)
    return (feature_store_spec(ek, n_eval, meta.feature_dim, bs, chunk_bytes),
            feature_store_spec(tk, n_train, meta.feature_dim, bs, chunk_bytes))


def plan_caches(cfg: ConfigLike, bench, detector, cache_dir: Path, world: int = 1, features: bool = True) -> CachePlan:
    """Decide every store of this run and check that they fit; raise CacheBudgetError (nothing built) if not.

    `features=False` leaves the probe feature stores out (`genshift cache build` without --features).
    """
    cache_dir = Path(cache_dir)
    return _plan(cfg, bench, detector, cache_dir, world, features, keyed=True, free=free_disk(cache_dir),
                 present=lambda spec: _present(cache_dir, spec), complete=lambda spec: _complete(cache_dir, spec))


def refuse_over_budget(cfg: ConfigLike, bench, described, cache_dir: Path, world: int = 1, features: bool = True) -> None:
    """Before the detector is built (from its remembered description, protocols/detector_memo.py): raise
    CacheBudgetError if the run's stores cannot fit `cache.max_bytes` whatever the disk holds.

    Only the budget is decided here: the stores' sizes follow from their layouts, and the budget counts stores
    already built, so neither the keys (the image libraries, the backbone's weights) nor the disk are needed.
    A run this lets through is planned in full once its detector exists (`plan_caches`), disk included."""
    if run_config(cfg).cache.max_bytes is None:
        return
    _plan(cfg, bench, described, Path(cache_dir), world, features, keyed=False, free=free_disk(cache_dir),
          present=lambda spec: 0, complete=lambda spec: False)


def _plan(cfg: ConfigLike, bench, detector, cache_dir: Path, world: int, features: bool, keyed: bool, free: int,
          present: Callable[[StoreSpec], int], complete: Callable[[StoreSpec], bool]) -> CachePlan:
    """The plan (see plan_caches). `keyed=False`: the early budget check, which decides on the budget alone and
    says nothing about what is still to be written (presence is not looked up)."""
    rc = run_config(cfg)
    sw = cache_switches(rc)
    chunk = rc.cache.chunk_bytes
    espec, tspec, wspecs = pixel_specs(cfg, bench, detector.meta, chunk, keyed)
    fixed = {"eval_inputs": _eval_inputs_plan(sw, espec, present, complete),
             **_feature_plans(cfg, sw, detector, espec, tspec, chunk, world, features, keyed, present)}
    options = _train_options(tspec, wspecs, present)
    features_planned = "train_features" in fixed
    per_window_useful = (not features_planned and len(wspecs) > 1
                         and options["per_window"].bytes < options["cached"].bytes)

    def fits(candidate: StorePlan) -> bool:
        trial = CachePlan(fixed | {"train_inputs": candidate}, sw, cache_dir, free)
        return (sw["max_bytes"] is None or trial.total <= sw["max_bytes"]) and (not keyed or trial.to_write <= free)

    if reference_training(cfg):
        train = options["stream"]
        train.reason = ("aigenbench-baseline: copies are seeded by position in each window's training subset, which "
                        "changes from window to window: streamed (decoded and augmented) in every window")
    else:
        train = _choose_train_inputs(sw["train_inputs"], options, fits, per_window_useful, features_planned,
                                     f"cache.max_bytes {human_bytes(sw['max_bytes'])}, free disk "
                                     f"{human_bytes(free)}", rc.train.num_workers)
    if train is None or not fits(train):
        refused = CachePlan(fixed | {"train_inputs": train or options["stream"]}, sw, cache_dir, free,
                            presence_known=keyed)
        raise CacheBudgetError(_refusal(refused, options, per_window_useful, rc.train.augmentation_factor,
                                        detector.is_probe))
    stores = {"eval_inputs": fixed.pop("eval_inputs"), "train_inputs": train, **fixed}
    return CachePlan(stores, sw, cache_dir, free, presence_known=keyed)


def _eval_inputs_plan(sw: dict, espec: StoreSpec, present: Callable[[StoreSpec], int],
                      complete: Callable[[StoreSpec], bool]) -> StorePlan:
    if sw["eval_inputs"]:
        here = present(espec)
        nbytes = espec.estimate_bytes()
        if espec.kind == REFERENCE_KIND:  # crops uint8 or float32: its upper bound until built, then its own size
            from benchmark.store_layouts import reference_upper_bound

            nbytes = here if complete(espec) and here else reference_upper_bound(espec)
        return StorePlan("eval_inputs", "cached", "cache.eval_inputs is true", espec, nbytes, here)
    return StorePlan("eval_inputs", "stream", "cache.eval_inputs is false: decoded and degraded again in every window",
                     espec)


def _feature_plans(cfg: ConfigLike, sw: dict, detector, espec: StoreSpec, tspec: StoreSpec, chunk: int, world: int,
                   features: bool, keyed: bool, present: Callable[[StoreSpec], int]) -> dict[str, StorePlan]:
    """A probe's feature stores (`eval_features`, `train_features`), or `probe_features` off and why; nothing
    for a tune detector."""
    if not features:
        why = "not asked for (--features)"
    elif not sw["probe_features"]:
        why = "cache.probe_features is false"
    else:
        specs = feature_specs(cfg, detector, espec, tspec, chunk, world, keyed)
        if isinstance(specs, tuple) and reference_training(cfg):  # copies change every window: eval features only
            reason = ("probe: eval features cached; aigenbench-baseline copies are streamed, so windows run the "
                      "frozen backbone on them")
            return {"eval_features": StorePlan("eval_features", "cached", reason, specs[0],
                                               specs[0].estimate_bytes(), present(specs[0]))}
        if isinstance(specs, tuple):
            reason = "probe: windows train the head on the frozen backbone's features"
            return {name: StorePlan(name, "cached", reason, spec, spec.estimate_bytes(), present(spec))
                    for name, spec in zip(("eval_features", "train_features"), specs, strict=True)}
        why = specs
    return {"probe_features": StorePlan("probe_features", "off", why)} if detector.is_probe else {}


def _train_options(tspec: StoreSpec, wspecs: list[StoreSpec],
                   present: Callable[[StoreSpec], int]) -> dict[str, StorePlan]:
    """The training copies under each policy: one store of the union (`cached`), one window's store at a time
    (`per_window`, sized by the largest window), none (`stream`)."""
    largest = max((s.estimate_bytes() for s in wspecs), default=0)
    return {"cached": StorePlan("train_inputs", "cached", "", tspec, tspec.estimate_bytes(), present(tspec)),
            "per_window": StorePlan("train_inputs", "per_window", "", tspec, largest, 0, wspecs),
            "stream": StorePlan("train_inputs", "stream", "", tspec)}


def _choose_train_inputs(asked: str, options: dict[str, StorePlan], fits: Callable[[StorePlan], bool],
                         per_window_useful: bool, features_planned: bool, limits: str,
                         workers: int) -> StorePlan | None:
    """The training copies' plan for `cache.train_inputs`, with its reason: an explicit policy as asked (it may
    still not fit), `auto` the first of cached / per_window / stream that fits (None when none does)."""
    streamed = f"streamed by {workers} DataLoader worker(s) (train.num_workers)"
    union, largest = options["cached"].bytes, options["per_window"].bytes
    if asked == "per_window" and features_planned:
        plan = options["stream"]  # windows train the head on features: one pass over the copies, into extraction
        plan.reason = ("per_window asked, but a probe's windows train on cached features: the copies are decoded "
                       "once and streamed into the feature extraction")
        return plan
    if asked != "auto":
        plan = options[asked]
        plan.reason = f"cache.train_inputs is {asked}" + (f"; {streamed}" if asked == "stream" else "")
        return plan
    order = ["cached", "per_window", "stream"] if per_window_useful else ["cached", "stream"]
    chosen = next((o for o in order if fits(options[o])), None)
    if chosen is None:
        return None
    plan = options[chosen]
    if chosen == "cached":
        plan.reason = f"auto: the copies' store ({human_bytes(union)}) fits ({limits})"
    elif chosen == "per_window":
        plan.reason = (f"auto: the copies of every window ({human_bytes(union)}) do not fit ({limits}); "
                       f"one window's at a time do (at most {human_bytes(largest)})")
    else:
        plan.reason = (f"auto: the copies ({human_bytes(union)}) do not fit ({limits})"
                       + (f", nor one window's ({human_bytes(largest)})" if per_window_useful else "")
                       + f"; {streamed}")
    return plan


def _refusal(plan: CachePlan, options: dict, per_window_useful: bool, factor: int, is_probe: bool) -> str:
    """One line: what the stores need, what the limits are, and the choices that would fit better."""
    s = plan.stores
    parts = [f"{LABELS[n]} {human_bytes(s[n].bytes)}" for n in LABELS if n in s and s[n].stored]
    budget = plan.settings["max_bytes"]
    over = []
    if budget is not None and plan.total > budget:
        over.append(f"cache.max_bytes is {human_bytes(budget)}")
    if plan.presence_known and plan.to_write > plan.free_bytes:
        over.append(f"{human_bytes(plan.to_write)} are still to be written and {plan.cache_dir} has "
                    f"{human_bytes(plan.free_bytes)} free")
    else:
        over.append(f"free disk {human_bytes(plan.free_bytes)}")
    t = s["train_inputs"]
    others = plan.total - (t.bytes if t.stored else 0)
    choices = []
    if t.policy != "stream":
        choices.append(f"--set cache.train_inputs=stream (copies decoded on the fly: {human_bytes(others)} in all)")
    if per_window_useful and t.policy != "per_window":
        choices.append(f"--set cache.train_inputs=per_window ({human_bytes(others + options['per_window'].bytes)})")
    if factor > 1 and t.stored:
        choices.append(f"fewer copies, --set train.augmentation_factor=1 "
                       f"({human_bytes(others + t.bytes // factor)})")
    if s["eval_inputs"].stored:
        choices.append(f"--set cache.eval_inputs=false ({human_bytes(plan.total - s['eval_inputs'].bytes)})")
    if is_probe and "train_features" in s:
        feats = s["eval_features"].bytes + s["train_features"].bytes
        choices.append(f"a probe's feature store only, --set cache.train_inputs=stream --set cache.eval_inputs=false "
                       f"({human_bytes(feats)})")
    choices.append("or raise cache.max_bytes / free disk space")
    return (f"the caches of this run need {' + '.join(parts)} = {human_bytes(plan.total)}, but "
            f"{' and '.join(over)}; nothing was built. Choices: {'; '.join(choices)}")
