"""The typed, frozen run configuration: one frozen dataclass per section, enums for the enum-valued keys.

`RunConfig.from_mapping` builds it once from a resolved config mapping that the schema table
(protocols/config_schema.py) has coerced and checked; the defaults are those of configs/base.yaml (the only place
they are written), the allowed values those of the table and of the enums (protocols/config_enums.py). The
validated mapping itself is kept (`RunConfig.to_dict()`): the config hash, run.json and `--print-config` are
computed from it, so they stay byte-identical to what a plain mapping gave.

Code reads `rc.train.batch_size`, `rc.degradation.profile.repairs_reference`, `rc.benchmark.type.kind` instead
of `cfg["train"]["batch_size"]`; `run_config(cfg)` accepts either form (a mapping built in Python is completed
with base.yaml's defaults and validated first).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from benchmark.formats import DegradationProfile, parse_profile
from benchmark.windows_plan import BenchmarkKind, BenchmarkType
from protocols.config import completed, resolve_config
from protocols.config_enums import (
    Accelerator,
    CacheTrainInputs,
    CacheVerify,
    DistributedStrategy,
    EvalInput,
    EvalPipeline,
    Logger,
    Normalization,
    Optimizer,
    Precision,
    RealSampling,
    Scheduler,
    Selection,
    SequenceAggregate,
    SequenceProfile,
    TestEvery,
    TrainAugmentation,
    WandbMode,
)
from protocols.config_schema import parse_bytes

# ---------------------------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class CacheConfig:
    """`cache`: what is computed once and reused by every window (operational: not in the config hash)."""

    eval_inputs: bool
    train_inputs: CacheTrainInputs  # the booleans of older configs: true = CACHED, false = STREAM
    probe_features: bool
    max_bytes: int | None  # parsed from e.g. 64GB; None = only free disk limits
    verify: CacheVerify
    chunk_mb: float

    @property
    def chunk_bytes(self) -> int:
        return int(float(self.chunk_mb) * (1 << 20))


@dataclass(frozen=True)
class DataConfig:
    check: bool
    skip_bad_images: bool
    min_side: int


@dataclass(frozen=True)
class BenchmarkConfig:
    type: BenchmarkType  # kind (BenchmarkKind) and replay fraction; str() gives the config's spelling
    generators_per_window: int
    real_sampling_seed: int
    real_sampling: RealSampling
    eval_balance_seed: int
    eval_shuffle_seed: int
    eval_pairing_seed: int
    replay_seed: int

    @property
    def kind(self) -> BenchmarkKind:
        return self.type.kind


@dataclass(frozen=True)
class ClStrategyConfig:
    """`cl_strategy`: the continual-learning strategy's registry name and its typed parameters."""

    name: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class DegradationConfig:
    profile: DegradationProfile  # the chain (`aigenbench-v1` or `fixed`)
    reencode_quality: int | None  # the `+reencode<Q>` suffix: every eval image re-encoded as JPEG at Q first
    base_seed: int  # eval image at position p is degraded with seed base_seed + p
    spec: str  # the profile as the config writes it (keys the caches), e.g. `aigenbench-v1+reencode95`


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    augmentation_factor: int
    augmentation: TrainAugmentation
    augmentation_base_seed: int
    batch_size: int
    accumulate_grad_batches: int
    drop_last: bool
    optimizer: Optimizer
    lr: float
    momentum: float
    weight_decay: float
    scheduler: Scheduler
    grad_clip: float | None
    precision: Precision
    channels_last: bool | str  # "auto" or a boolean
    num_workers: int
    checkpoint_every_n_steps: int
    selection: Selection
    validation: int | float
    validation_seed: int
    validate_every_n_steps: int
    patience: int
    min_delta: float
    average_last: int
    branch_epochs: Mapping[str, int] | None

    @property
    def reference_augmentation(self) -> bool:
        """AI-GenBench's own training augmentation: copies change every window (no cached training copies)."""
        return self.augmentation is TrainAugmentation.AIGENBENCH_BASELINE


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int
    pipeline: EvalPipeline
    input: EvalInput | None  # None = the pipeline's default (native: the detector's own; reference: resize)
    normalize: Normalization | None
    precision: Precision
    score_initial: bool
    threshold: str  # eer | fpr:<x> | youden | a number (leaderboard.metrics.parse_threshold_rule)


@dataclass(frozen=True)
class SequenceConfig:
    profile: SequenceProfile | None
    aggregate: SequenceAggregate | None
    segment_length: int | None
    frames_every: int | None
    frames_count: int


@dataclass(frozen=True)
class WandbConfig:
    mode: WandbMode
    project: str
    entity: str | None


@dataclass(frozen=True)
class RunConfig:
    """A whole resolved run configuration, typed and frozen (see the module docstring)."""

    experiment: str | None
    runs_dir: str
    cache_dir: str | None
    cache: CacheConfig
    dataset: str
    detector: str
    pretrained: str
    seed: int
    data: DataConfig
    benchmark: BenchmarkConfig
    cl_strategy: ClStrategyConfig
    degradation: DegradationConfig
    train: TrainConfig
    eval: EvalConfig
    sequence: SequenceConfig
    test_datasets: tuple[Mapping[str, Any], ...]
    test_every: TestEvery
    loggers: tuple[Logger, ...]
    wandb: WandbConfig
    accelerator: Accelerator
    devices: int
    num_nodes: int
    strategy: DistributedStrategy
    sync_batchnorm: bool
    threads: int | None
    _raw: str = field(default="", repr=False, compare=False)  # the validated mapping, as JSON (immutable)

    # -------------------------------------------------------------------------------------------- building
    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> RunConfig:
        """Build from a resolved config whose values the schema table has already coerced and checked."""
        raw = copy.deepcopy(dict(cfg))
        section = raw.get("cl_strategy") or {}
        fields = dict(raw)
        fields["cl_strategy"] = {"name": section.get("name"),
                                 "params": {k: v for k, v in section.items() if k != "name"}}
        fields["cache"] = dict(raw["cache"])
        train_inputs = fields["cache"]["train_inputs"]
        if isinstance(train_inputs, bool):
            fields["cache"]["train_inputs"] = "cached" if train_inputs else "stream"
        fields["cache"]["max_bytes"] = parse_bytes(fields["cache"]["max_bytes"], "cache.max_bytes")
        profile, quality = parse_profile(raw["degradation"]["profile"])
        fields["degradation"] = {"profile": profile, "reencode_quality": quality,
                                 "base_seed": raw["degradation"]["base_seed"], "spec": raw["degradation"]["profile"]}
        fields["benchmark"] = dict(raw["benchmark"], type=BenchmarkType.parse(raw["benchmark"]["type"]))
        out = _build(cls, fields, "")
        object.__setattr__(out, "_raw", json.dumps(raw))
        return out

    def to_dict(self) -> dict[str, Any]:
        """A fresh copy of the validated mapping (what the config hash, run.json and --print-config read)."""
        return json.loads(self._raw)

    def __reduce__(self) -> tuple:
        """Pickled as its validated mapping and rebuilt on the other side (its read-only mapping views do not
        pickle): a process started with spawn, or a dataset sent to a worker, gets the same typed config."""
        return (_from_raw, (self._raw,))

    def replace(self, **top_level: Any) -> RunConfig:
        """A copy with top-level keys replaced (e.g. `pretrained="none"`), validated and built again."""
        return run_config(self.to_dict() | top_level)

    # -------------------------------------------------------------------------------------------- derived
    @property
    def cache_path(self) -> Path:
        """Where caches live: cache_dir, else $GENSHIFT_CACHE or ~/.cache/genshift."""
        from benchmark.sources import resolve_cache_dir

        return resolve_cache_dir(self.cache_dir)

    @property
    def world_size(self) -> int:
        """Processes the config asks for: devices per node × nodes (1 = no DDP)."""
        return self.devices * self.num_nodes

    @property
    def builds_pixel_caches(self) -> bool:
        """Whether a run may build a pixel store (then the cache workers' fork server is started early)."""
        return self.cache.eval_inputs or self.cache.train_inputs is not CacheTrainInputs.STREAM


def _from_raw(raw: str) -> RunConfig:
    return RunConfig.from_mapping(json.loads(raw))


def _build(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")]
    missing = [n for n in names if n not in values]
    extra = [k for k in values if k not in names]
    if missing or extra:
        from protocols.config_schema import ConfigError

        raise ConfigError(f"config section {prefix.rstrip('.') or '(top level)'}: "
                          + (f"missing key(s) {', '.join(prefix + m for m in missing)}" if missing else "")
                          + ("; " if missing and extra else "")
                          + (f"unknown key(s) {', '.join(prefix + e for e in extra)}" if extra else ""))
    return cls(**{n: _convert(values[n], hints[n], prefix + n) for n in names})


def _convert(value: Any, hint: Any, key: str) -> Any:
    """`value` as the annotated type: enums from their strings, tuples and read-only mappings for containers."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        for option in options:
            if isinstance(option, type) and issubclass(option, StrEnum):
                return option(value)
            if dataclasses.is_dataclass(option) or typing.get_origin(option) is not None:
                return _convert(value, option, key)
        return value
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        return hint(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else _build(hint, value, key + ".")
    if origin is tuple:
        (item, *_) = typing.get_args(hint)
        return tuple(_convert(v, item, key) for v in value)
    if origin is Mapping or hint is Mapping:
        return _frozen(value)
    return value


def _frozen(value: Any) -> Any:
    """A read-only deep view: mappings become MappingProxyType, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def thawed(value: Any) -> Any:
    """A plain copy of a read-only part of the config (mappings become dicts, tuples lists): what code outside
    protocols (detectors, strategies' parameters, spec parsers) expects."""
    if isinstance(value, Mapping):
        return {k: thawed(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thawed(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------- access

ConfigLike = typing.Union[RunConfig, Mapping[str, Any]]  # noqa: UP007 (a runtime alias)

_CACHE: dict[str, RunConfig] = {}


def run_config(cfg: RunConfig | Mapping[str, Any]) -> RunConfig:
    """The typed config of `cfg`: itself, or a mapping completed with base.yaml's defaults, validated and built.

    A mapping is what the engine and Python callers still pass; its typed form is memoised by content, so
    asking again costs a JSON dump.
    """
    if isinstance(cfg, RunConfig):
        return cfg
    key = json.dumps(cfg, sort_keys=True, default=str)
    hit = _CACHE.get(key)
    if hit is None:
        hit = _CACHE[key] = RunConfig.from_mapping(completed(cfg))
        if len(_CACHE) > 64:
            _CACHE.pop(next(iter(_CACHE)))
    return hit


def resolve_run_config(
    preset: str = "default",
    detector: str | None = None,
    files: Iterable[Path] = (),
    overrides: Iterable[Mapping] = (),
) -> RunConfig:
    """`resolve_config`, then the typed, frozen config built from it and the detector name checked against the
    registry (closest names listed): everything a typo can break fails here, before any data is read."""
    rc = RunConfig.from_mapping(resolve_config(preset, detector, files, overrides))
    from detectors.registry import check_name  # imports no torch

    check_name(rc.detector)
    return rc


def cache_switches(cfg: Mapping[str, Any] | RunConfig) -> dict:
    """The `cache` section, typed (defaults from base.yaml; `train_inputs` true/false of older configs read as
    cached/stream, `max_bytes` parsed to bytes): the typed config's `cache`, as a mapping."""
    return dataclasses.asdict(run_config(cfg).cache)


def world_size(cfg: Mapping[str, Any] | RunConfig) -> int:
    """Processes the config asks for: devices per node × nodes (1 = no DDP)."""
    return run_config(cfg).world_size


def builds_pixel_caches(cfg: Mapping[str, Any] | RunConfig) -> bool:
    """Whether a run may build a pixel store, hence wants the cache workers' fork server started early."""
    return run_config(cfg).builds_pixel_caches


SECTIONS: dict[str, type] = {f.name: typing.get_type_hints(RunConfig)[f.name] for f in dataclasses.fields(RunConfig)
                             if dataclasses.is_dataclass(typing.get_type_hints(RunConfig)[f.name])}

__all__ = ["RunConfig", "CacheConfig", "DataConfig", "BenchmarkConfig", "ClStrategyConfig", "DegradationConfig",
           "TrainConfig", "EvalConfig", "SequenceConfig", "WandbConfig", "run_config", "thawed", "resolve_run_config", "cache_switches", "world_size", "builds_pixel_caches", "SECTIONS", "ConfigLike", "Accelerator",
           "CacheTrainInputs", "CacheVerify", "DistributedStrategy", "EvalInput", "EvalPipeline", "Logger",
           "Normalization", "Optimizer", "Precision", "RealSampling", "Scheduler", "Selection", "SequenceAggregate",
           "SequenceProfile", "TestEvery", "TrainAugmentation", "WandbMode", "BenchmarkKind", "DegradationProfile"]
